import Decoding
import Foundation

/// One prompt of a job: an id (unique within the job, used in results) and the text.
public struct PromptSpec: Codable, Equatable, Sendable {
    public var id: String
    public var text: String
    public init(id: String, text: String) {
        self.id = id
        self.text = text
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

    public static let keys = ["name", "model", "strategy", "max_new_tokens", "min_new_tokens", "sampling", "stop",
                              "priority", "max_attempts", "prompts", "prompts_file"]
    public static let defaultMaxNewTokens = 128

    enum CodingKeys: String, CodingKey {
        case name, model, strategy, maxNewTokens = "max_new_tokens", minNewTokens = "min_new_tokens", sampling, stop
        case priority, maxAttempts = "max_attempts", prompts, promptsFile = "prompts_file"
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
