import Foundation

/// How the next token is chosen from the logits. Temperature 0 is greedy (argmax).
public struct SamplingParameters: Codable, Equatable, Sendable {
    public var temperature: Double = 0
    /// Keep only the k most likely tokens (0: all).
    public var topK: Int = 0
    /// Keep the smallest set of most likely tokens whose probabilities add up to at least p (1: all).
    public var topP: Double = 1
    /// Makes sampling reproducible; without one a random seed is drawn and reported in the metrics.
    public var seed: UInt64?

    public static let greedy = SamplingParameters()

    public init(temperature: Double = 0, topK: Int = 0, topP: Double = 1, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    public var isGreedy: Bool { temperature == 0 }

    enum CodingKeys: String, CodingKey { case temperature, topK = "top_k", topP = "top_p", seed }
    public static let keys = ["temperature", "top_k", "top_p", "seed"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature) ?? 0
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? 0
        topP = try c.decodeIfPresent(Double.self, forKey: .topP) ?? 1
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
    }

    /// Every out-of-range value, with its path (e.g. `sampling.temperature`).
    public func problems(path: String = "sampling") -> [ConfigurationProblem] {
        var problems: [ConfigurationProblem] = []
        if !(temperature >= 0) || !temperature.isFinite {
            problems.append(.init(path: "\(path).temperature", expected: "a number ≥ 0 (0 = greedy)", found: "\(temperature)"))
        }
        if topK < 0 {
            problems.append(.init(path: "\(path).top_k", expected: "an integer ≥ 0 (0 = no limit)", found: "\(topK)"))
        }
        if !(topP > 0 && topP <= 1) {
            problems.append(.init(path: "\(path).top_p", expected: "a number in (0, 1]", found: "\(topP)"))
        }
        return problems
    }
}
