import Engine
import Foundation
import Tokenization

/// A configured strategy, ready for one model: it makes the per-sequence state machine of each
/// prompt. Holds only configuration, so one serves any number of sequences at once.
public protocol ConfiguredStrategy: AnyObject {
    /// As written in job files and reported in metrics.
    var strategyName: String { get }
    /// KV-cache positions a request needs (prompt + new tokens + any speculative overshoot).
    func requiredPositions(for request: GenerationRequest) -> Int
    /// The state machine that decodes one sequence inside the decode loop.
    func makeStepper(for request: GenerationRequest) -> SequenceStepper
}

/// A strategy's per-sequence state machine (DESIGN §2b). The decode loop owns everything else —
/// admission, prefill, bans, sampling, commits, KV truncation, cancellation, metrics — and asks a
/// stepper only two things per pass: which rows this sequence needs, and what the logits of
/// those rows mean.
public protocol SequenceStepper: AnyObject {
    /// Layers the prompt runs through; the exit head after them gives the first token.
    var promptLayers: Range<Int> { get }
    /// The most rows one `plan` adds (the loop defers a sequence to the next pass when the pass
    /// has no room for it). At most `DecodeLoop.maxRowsPerSequence`.
    var rowsPerStep: Int { get }
    /// The most logits rows one `plan` asks for.
    var logitsRowsPerStep: Int { get }
    /// Adds this sequence's rows to the next pass. The sequence has a pending token (committed,
    /// not yet run) at `sequence.position`, and every layer's cache holds `sequence.position`
    /// positions unless the stepper itself left more there (drafts) at its previous step.
    func plan(_ sequence: DecodeSequence, into pass: SequencePass)
    /// Reads this sequence's logits of the pass just run and commits tokens (or none: a draft).
    func advance(_ sequence: DecodeSequence, logits: SequenceLogits)
    /// The strategy's own metrics fields.
    func report(into metrics: inout GenerationMetrics)
    /// Non-nil for a stepper whose draft length the loop may choose by load
    /// (`DecodeSequence.draftLimit`).
    var loadAwareSpeculation: LoadAwareSpeculation? { get }
}

extension SequenceStepper {
    public func report(into metrics: inout GenerationMetrics) {}
    public var loadAwareSpeculation: LoadAwareSpeculation? { nil }
}

/// A self-speculative stepper's state as the loop's load-aware choice of d needs it (DESIGN §2b).
public struct LoadAwareSpeculation: Sendable {
    public var exitLayer: Int
    /// The job's `speculations` (or its adaptive maximum): d never exceeds it.
    public var maxDrafts: Int
    /// Running estimate of the share of drafts accepted.
    public var acceptance: Double
    /// Inside a round (drafts made, not yet verified): the loop chooses d only between rounds.
    public var midRound: Bool
    /// What a draft row reads (draft precision, pruned head), for the predicted cost of a round.
    public var draftReads: DraftReads
    public init(exitLayer: Int, maxDrafts: Int, acceptance: Double, midRound: Bool, draftReads: DraftReads = .exact) {
        self.draftReads = draftReads
        self.exitLayer = exitLayer
        self.maxDrafts = maxDrafts
        self.acceptance = acceptance
        self.midRound = midRound
    }
}

/// What a strategy may use besides the model, from whoever loaded it (the daemon's model manager,
/// a CLI command, a test). Everything is optional: a strategy that needs what is missing falls back.
public struct StrategyContext: Sendable {
    /// The model folder's tokenizer.
    public var tokenizer: Tokenizer?
    /// Token ids, most frequent first, counted on a corpus: the order a pruned draft head
    /// (`draft_vocab`) keeps tokens in. nil: the tokenizer's merge order, else token-id order.
    public var tokenRanking: TokenRanking?

    public init(tokenizer: Tokenizer? = nil, tokenRanking: TokenRanking? = nil) {
        self.tokenizer = tokenizer
        self.tokenRanking = tokenRanking
    }

    /// The ranking a pruned draft head of `model` keeps tokens by: the given one, else the
    /// tokenizer's merge order (ids past the model's vocabulary dropped), else token-id order.
    public func ranking(for model: ModelConfig) -> TokenRanking {
        if let tokenRanking {
            precondition(tokenRanking.vocabularySize == model.vocabSize,
                         "a ranking of a \(tokenRanking.vocabularySize)-token vocabulary for a model of \(model.vocabSize)")
            return tokenRanking
        }
        guard let tokenizer else { return .tokenIdOrder(vocabularySize: model.vocabSize) }
        // Distinct and in range once the ids the model has no row for are dropped.
        return try! TokenRanking(tokenizer.mergeRanking.filter { $0 < model.vocabSize }, vocabularySize: model.vocabSize)
    }
}

/// A decoding-strategy plugin. Each owns its typed configuration and validates it against the
/// model's configuration (no weights needed, so job files can be checked before anything loads).
public protocol DecodingStrategy: ConfiguredStrategy, SendableMetatype {
    associatedtype Configuration: StrategyConfiguration
    /// As written in job files (`strategy: NAME`).
    static var name: String { get }
    static var summary: String { get }
    static func problems(_ configuration: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem]
    init(configuration: Configuration, model: LlamaModel)
    /// The strategy with what its caller knows besides the model (by default: nothing is used).
    init(configuration: Configuration, model: LlamaModel, context: StrategyContext)
}

extension DecodingStrategy {
    public var strategyName: String { Self.name }
    public init(configuration: Configuration, model: LlamaModel, context: StrategyContext) {
        self.init(configuration: configuration, model: model)
    }
}

/// A type-erased plugin entry for the registry.
public struct StrategyPlugin: Sendable {
    public let name: String
    public let summary: String
    public let keys: [String]
    private let check: @Sendable ([String: ConfigValue], ModelConfig, String) -> [ConfigurationProblem]
    private let build: @Sendable ([String: ConfigValue], LlamaModel, StrategyContext, String) throws -> ConfiguredStrategy

    public init<S: DecodingStrategy>(_ type: S.Type) {
        name = S.name
        summary = S.summary
        keys = S.Configuration.keys
        check = { options, model, path in
            switch OptionsDecoder.decode(S.Configuration.self, from: options, path: path) {
            case let .failure(error): return error.problems
            case let .success(configuration): return S.problems(configuration, model: model, path: path)
            }
        }
        build = { options, model, context, path in
            switch OptionsDecoder.decode(S.Configuration.self, from: options, path: path) {
            case let .failure(error): throw error
            case let .success(configuration):
                let problems = S.problems(configuration, model: model.config, path: path)
                if !problems.isEmpty { throw ConfigurationError(problems) }
                return S(configuration: configuration, model: model, context: context)
            }
        }
    }

    public func problems(_ options: [String: ConfigValue], model: ModelConfig, path: String = "strategy") -> [ConfigurationProblem] {
        check(options, model, path)
    }

    public func make(_ options: [String: ConfigValue], model: LlamaModel, context: StrategyContext = StrategyContext(),
                     path: String = "strategy") throws -> ConfiguredStrategy {
        try build(options, model, context, path)
    }
}

/// The strategies an executable offers. The executable builds it from one explicit list; the
/// daemon and the CLI only see this registry, never a plugin module.
public struct StrategyRegistry: Sendable {
    public let plugins: [StrategyPlugin]

    public init(_ plugins: [StrategyPlugin]) {
        var seen = Set<String>()
        for p in plugins { precondition(seen.insert(p.name).inserted, "strategy \(p.name) registered twice") }
        self.plugins = plugins
    }

    public var names: [String] { plugins.map(\.name) }

    public func plugin(named name: String) -> StrategyPlugin? { plugins.first { $0.name == name } }

    /// Every problem with a strategy spec for this model (unknown name, unknown keys, types, ranges).
    public func problems(_ spec: StrategySpec, model: ModelConfig, path: String = "strategy") -> [ConfigurationProblem] {
        guard let plugin = plugin(named: spec.name) else {
            return [ConfigurationProblem(path: "\(path).name", expected: "one of \(names.joined(separator: ", "))",
                                         found: "\"\(spec.name)\"")]
        }
        return plugin.problems(spec.options, model: model, path: path)
    }

    public func make(_ spec: StrategySpec, model: LlamaModel, context: StrategyContext = StrategyContext(),
                     path: String = "strategy") throws -> ConfiguredStrategy {
        guard let plugin = plugin(named: spec.name) else {
            throw ConfigurationError(problems(spec, model: model.config, path: path))
        }
        return try plugin.make(spec.options, model: model, context: context, path: path)
    }
}
