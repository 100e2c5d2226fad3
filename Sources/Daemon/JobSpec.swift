import Decoding
import Foundation

/// One prompt of a job: an id (unique within the job, used in results) and the text, and, for a
/// prompt from an OpenAI batch file (where every request carries its own settings), what it sets
/// for itself. A setting left nil is the job's.
public struct PromptSpec: Codable, Equatable, Sendable {
    public var id: String
    public var text: String
    /// The request's `custom_id` in an OpenAI batch file (also its `id`); nil for YAML prompts.
    public var customId: String?
    public var maxNewTokens: Int?
    public var sampling: SamplingParameters?
    public var stop: [String]?

    public init(id: String, text: String, customId: String? = nil, maxNewTokens: Int? = nil,
                sampling: SamplingParameters? = nil, stop: [String]? = nil) {
        self.id = id
        self.text = text
        self.customId = customId
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.stop = stop
    }

    // The optional keys are left out when nil, so a YAML job's stored spec is what it was before.
    enum CodingKeys: String, CodingKey {
        case id, text, customId = "custom_id", maxNewTokens = "max_new_tokens", sampling, stop
    }
}

/// A job file after validation (DESIGN §3). Stored as JSON with the job, so a job runs later
/// exactly as it was accepted even if the file or the daemon's config changes.
public struct JobSpec: Codable, Equatable, Sendable {
    /// An optional label for tables.
    public var name: String?
    /// As written: a name from the daemon config's `models:` or a folder path.
    public var model: String
    public var strategy: StrategySpec
    public var maxNewTokens: Int
    public var minNewTokens: Int
    public var sampling: SamplingParameters
    public var stop: [String]
    public var priority: Int
    /// Runs the daemon may start before the job ends `failed` (crashes count, clean stops do not).
    public var maxAttempts: Int?
    /// Inline prompts, or those read from `prompts_file` at intake.
    public var prompts: [PromptSpec]
    public var promptsFile: String?
    /// The job named no strategy (a YAML job without `strategy:`, an OpenAI batch file): it runs
    /// the model's tuned self-speculation where `layerskip tune` found one faster than
    /// autoregressive decoding, else `defaultStrategy`. nil in jobs stored before this existed.
    public var strategyIsDefault: Bool? = nil

    public static let keys = ["name", "model", "strategy", "max_new_tokens", "min_new_tokens", "sampling", "stop",
                              "priority", "max_attempts", "prompts", "prompts_file"]
    public static let defaultMaxNewTokens = 128
    /// What a job that names no strategy runs with (a YAML job without `strategy:`, every OpenAI batch file).
    public static let defaultStrategy = StrategySpec(name: "autoregressive")

    enum CodingKeys: String, CodingKey {
        case name, model, strategy, maxNewTokens = "max_new_tokens", minNewTokens = "min_new_tokens", sampling, stop
        case priority, maxAttempts = "max_attempts", prompts, promptsFile = "prompts_file"
    }

    // A job that named no strategy is written without one (in the job store and in the file
    // `submit` spools, which the daemon validates again as a job file): reading it back gives the
    // default strategy and `strategyIsDefault` again.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encode(model, forKey: .model)
        if strategyIsDefault != true { try c.encode(strategy, forKey: .strategy) }
        try c.encode(maxNewTokens, forKey: .maxNewTokens)
        try c.encode(minNewTokens, forKey: .minNewTokens)
        try c.encode(sampling, forKey: .sampling)
        try c.encode(stop, forKey: .stop)
        try c.encode(priority, forKey: .priority)
        try c.encodeIfPresent(maxAttempts, forKey: .maxAttempts)
        try c.encode(prompts, forKey: .prompts)
        try c.encodeIfPresent(promptsFile, forKey: .promptsFile)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        model = try c.decode(String.self, forKey: .model)
        if let named = try c.decodeIfPresent(StrategySpec.self, forKey: .strategy) {
            strategy = named
        } else {
            strategy = JobSpec.defaultStrategy
            strategyIsDefault = true
        }
        maxNewTokens = try c.decode(Int.self, forKey: .maxNewTokens)
        minNewTokens = try c.decode(Int.self, forKey: .minNewTokens)
        sampling = try c.decode(SamplingParameters.self, forKey: .sampling)
        stop = try c.decode([String].self, forKey: .stop)
        priority = try c.decode(Int.self, forKey: .priority)
        maxAttempts = try c.decodeIfPresent(Int.self, forKey: .maxAttempts)
        prompts = try c.decode([PromptSpec].self, forKey: .prompts)
        promptsFile = try c.decodeIfPresent(String.self, forKey: .promptsFile)
    }

    public init(name: String?, model: String, strategy: StrategySpec, maxNewTokens: Int, minNewTokens: Int, sampling: SamplingParameters,
                stop: [String], priority: Int, maxAttempts: Int?, prompts: [PromptSpec], promptsFile: String?, strategyIsDefault: Bool? = nil) {
        self.name = name
        self.model = model
        self.strategy = strategy
        self.maxNewTokens = maxNewTokens
        self.minNewTokens = minNewTokens
        self.sampling = sampling
        self.stop = stop
        self.priority = priority
        self.maxAttempts = maxAttempts
        self.prompts = prompts
        self.promptsFile = promptsFile
        self.strategyIsDefault = strategyIsDefault
    }
}

/// A job file resolved against the daemon's configuration: the model folder is known and its
/// config.json has been read, and the strategy's options have been checked against it.
public struct ResolvedJob: Sendable {
    public var spec: JobSpec
    public var modelDirectory: URL
    /// The number of layers etc. of the model, read from config.json only.
    public var modelLayers: Int
    /// What the model is called wherever the job may run (`DaemonConfig.modelKey`): on a shared
    /// store only daemons that know this key claim the job.
    public var modelKey: String
}
