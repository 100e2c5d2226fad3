import Engine
import Foundation

/// The Hugging Face reference fixtures copied into Tests/Fixtures (see its README), shared by the
/// engine and decoding test targets.
public enum Fixtures {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    public static let models = ["tiny-bytelevel-gqa-f32", "tiny-spm-mha-bf16-sharded"]

    public static func directory(_ name: String) -> URL { root.appendingPathComponent(name) }

    /// The embedded default model committed at models/default (a trained model, unlike the
    /// fixtures' random ones: its drafts and its copying behave as real ones do).
    public static let defaultModel = root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models/default")

    public static func expected(_ name: String) throws -> Expected {
        let data = try Data(contentsOf: directory(name).appendingPathComponent("expected.json"))
        return try JSONDecoder().decode(Expected.self, from: data)
    }

    /// Tolerance on logits: the fixtures were computed in f32 from the stored weights.
    public static func logitTolerance(_ name: String) -> Float { name.contains("bf16") ? 1e-3 : 1e-4 }
}

public struct Expected: Decodable {
    public struct Prompt: Decodable {
        public var text: String
        public var ids: [Int]
        public var logits_last: [String: [Float]]
        public var greedy: [String: GreedyValue]
    }
    public enum GreedyValue: Decodable {
        case tokens([Int]), number(Double)
        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let t = try? c.decode([Int].self) { self = .tokens(t) } else { self = .number(try c.decode(Double.self)) }
        }
        public var tokens: [Int]? { if case let .tokens(t) = self { return t }; return nil }
    }
    public struct TokenizerCase: Decodable {
        public var text: String
        public var ids: [Int]
        public var ids_with_special: [Int]
        public var decoded: String
    }
    public var num_layers: Int
    public var exit_layers: [Int]
    public var tokenizer_cases: [TokenizerCase]
    public var prompts: [Prompt]
}

extension Fixtures {
    /// The logits of every position of `ids`, one pass through all layers from an empty cache,
    /// every matrix and the head read at `precision`; rows concatenated.
    public static func logits(_ model: LlamaModel, _ ids: [Int], precision: WeightPrecision = .exact) -> [Float] {
        let n = ids.count
        let h = model.makeActivations(capacity: n)
        let cache = model.makeCache(capacity: n)
        model.embed(ids, into: h)
        model.forward(h, layers: 0..<model.layerCount, positions: 0..<n, cache: cache, precision: precision)
        let out = model.makeLogits(capacity: n)
        model.exitLogits(h, rows: 0..<n, into: out, head: precision)
        return (0..<n).flatMap { Array(out.row($0)) }
    }
}
