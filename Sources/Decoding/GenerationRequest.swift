import Foundation

/// What to generate for one prompt, whatever the strategy.
public struct GenerationRequest: Sendable {
    /// Prompt token ids, special tokens (BOS) included.
    public var prompt: [Int]
    public var maxNewTokens: Int
    /// End-of-sequence ids are banned until this many tokens have been generated.
    public var minNewTokens: Int
    public var sampling: SamplingParameters
    /// Generation ends when the text contains one of these; the stop string is cut from the output.
    public var stopStrings: [String]
    /// Token ids that end generation (the model's eos_token_id by default).
    public var eosTokenIds: Set<Int>

    public init(prompt: [Int], maxNewTokens: Int, minNewTokens: Int = 0, sampling: SamplingParameters = .greedy,
                stopStrings: [String] = [], eosTokenIds: Set<Int>) {
        self.prompt = prompt
        self.maxNewTokens = maxNewTokens
        self.minNewTokens = minNewTokens
        self.sampling = sampling
        self.stopStrings = stopStrings
        self.eosTokenIds = eosTokenIds
    }
}

public enum FinishReason: String, Codable, Sendable {
    case eos, stop, length, cancelled
}
