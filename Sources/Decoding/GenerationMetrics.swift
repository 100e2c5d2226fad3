import Foundation

/// Per-prompt metrics (DESIGN §6). Strategy-specific fields are nil where they do not apply.
public struct GenerationMetrics: Codable, Equatable, Sendable {
    public var strategy: String
    public var promptTokens: Int
    public var generatedTokens: Int
    public var finishReason: FinishReason
    public var prefillMs: Double
    public var decodeMs: Double
    /// Generated tokens ÷ decode time.
    public var tokensPerSecond: Double
    /// Generated tokens ÷ (prefill + decode time).
    public var endToEndTokensPerSecond: Double
    /// Layer applications to one position, per generated token (all strategies; prefill excluded).
    public var layerEvaluationsPerToken: Double
    /// Self-speculative: tokens drafted, drafts accepted, accepted ÷ drafted, rounds, tokens per round.
    public var drafted: Int?
    public var accepted: Int?
    public var acceptanceRate: Double?
    public var rounds: Int?
    public var tokensPerRound: Double?
    /// Self-speculative: decode time spent drafting (layers 0..<E and the exit head per draft) and
    /// verifying (the multi-position pass, its exit head and the acceptance test) — what limits a round.
    public var draftMs: Double?
    public var verifyMs: Double?
    /// Self-speculative: the d actually drafted per round (the load-aware choice), and the rounds
    /// the decode loop held to d = 0 (batch full, or waiting for the batch's rounds to align).
    public var draftsPerRound: Double?
    public var plainRounds: Int?
    /// Self-speculative with prompt lookup: the drafts (of `drafted`) that the lookup proposed,
    /// and those of them accepted.
    public var lookupDrafted: Int?
    public var lookupAccepted: Int?
    /// Early exit: the mean layer count a generated token left after.
    public var averageExitLayer: Double?
    /// Decode loop: mean sequences per pass while this one decoded, mean pass time, and the time
    /// from submission to the first prefill pass (waiting for a slot or a cache).
    public var batchSize: Double?
    public var stepMs: Double?
    public var queueMs: Double?
    /// The sampler's seed (reported so that a sampled run can be repeated).
    public var seed: UInt64?
    /// The weights the model ran (`stored`, `int8`): the output is exactly that of decoding them.
    public var weights: String?
    /// The daemon: the strategy options the prompt ran with (`key=value, …`, after the model's
    /// tune result filled what the job left out) and where they came from.
    public var strategySettings: String?
    public var settingsSource: String?

    public init(strategy: String, promptTokens: Int, generatedTokens: Int, finishReason: FinishReason,
                prefillSeconds: Double, decodeSeconds: Double, layerEvaluations: Int) {
        self.strategy = strategy
        self.promptTokens = promptTokens
        self.generatedTokens = generatedTokens
        self.finishReason = finishReason
        prefillMs = prefillSeconds * 1000
        decodeMs = decodeSeconds * 1000
        tokensPerSecond = decodeSeconds > 0 ? Double(generatedTokens) / decodeSeconds : 0
        endToEndTokensPerSecond = prefillSeconds + decodeSeconds > 0 ? Double(generatedTokens) / (prefillSeconds + decodeSeconds) : 0
        layerEvaluationsPerToken = generatedTokens > 0 ? Double(layerEvaluations) / Double(generatedTokens) : 0
    }

    enum CodingKeys: String, CodingKey {
        case strategy, promptTokens = "prompt_tokens", generatedTokens = "generated_tokens", finishReason = "finish_reason"
        case prefillMs = "prefill_ms", decodeMs = "decode_ms", tokensPerSecond = "tokens_per_second"
        case endToEndTokensPerSecond = "end_to_end_tokens_per_second", layerEvaluationsPerToken = "layer_evaluations_per_token"
        case drafted, accepted, acceptanceRate = "acceptance_rate", rounds, tokensPerRound = "tokens_per_round"
        case draftMs = "draft_ms", verifyMs = "verify_ms", draftsPerRound = "drafts_per_round", plainRounds = "plain_rounds"
        case lookupDrafted = "lookup_drafted", lookupAccepted = "lookup_accepted"
        case averageExitLayer = "average_exit_layer", seed, weights
        case strategySettings = "strategy_settings", settingsSource = "settings_source"
        case batchSize = "batch_size", stepMs = "step_ms", queueMs = "queue_ms"
    }
}

/// Wall-clock split into prefill and decode.
public struct PhaseClock {
    private let clock = ContinuousClock()
    private var start: ContinuousClock.Instant
    private var prefillEnd: ContinuousClock.Instant?
    public init() { start = clock.now }
    public mutating func prefillDone() { prefillEnd = clock.now }
    public var prefillSeconds: Double { ((prefillEnd ?? clock.now) - start).seconds }
    public var decodeSeconds: Double { prefillEnd.map { (clock.now - $0).seconds } ?? 0 }
}
