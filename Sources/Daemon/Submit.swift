import Decoding
import Foundation
import InputFiles

extension SpoolLayout {
    /// Drops a job, validated with the submitting user's rights, into incoming/ the way the spool
    /// expects: a hidden temporary file, fsync, then a rename under a fresh name (time, random,
    /// original name), so the daemon never sees a partial file and the content-hash rule never
    /// mistakes it for an earlier submission.
    ///
    /// What is dropped is the job as resolved here, not the file: the prompts inline (a
    /// `prompts_file` is read now, by the user, never by the daemon) and a model folder as an
    /// absolute path, written as JSON (which is YAML). It is checked against the daemon's own
    /// rules for spooled jobs before it is dropped, so a model folder outside `model_directories`
    /// is refused here with the daemon's message.
    public func submit(_ job: ResolvedJob, from url: URL, config: DaemonConfig, registry: StrategyRegistry) throws
        -> Result<(name: String, contentHash: String), ConfigurationError> {
        let content = try Self.spooledDocument(job, from: url, models: config.models)
        let context = JobContext(baseDirectory: incoming, models: config.models, modelDirectories: config.modelDirectories,
                                 registry: registry, origin: .spool(folder: -1), modelWeights: config.modelWeights)
        switch JobFileValidator.validate(content, file: url.path, context: context) {
        case let .failure(error): return .failure(error)
        case let .success(again):
            // The document must say exactly what was validated; anything else is a bug here.
            guard try Self.canonical(again.spec) == Self.canonical(Self.spooledSpec(job, models: config.models)) else {
                throw DaemonError.io("\(url.path): the job could not be written faithfully for the spool (please report this)")
            }
        }
        return .success(try drop(content, from: url))
    }

    /// Drops an OpenAI batch file (`*.jsonl`) as it is: it names no path to resolve, and its
    /// lines are what the daemon reads. It is checked first against the daemon's rules for
    /// spooled files, so a model the daemon would refuse is refused here with its message.
    public func submitBatchFile(_ data: Data, from url: URL, config: DaemonConfig, registry: StrategyRegistry) throws
        -> Result<(name: String, contentHash: String), ConfigurationError> {
        let context = JobContext(baseDirectory: incoming, models: config.models, modelDirectories: config.modelDirectories,
                                 registry: registry, origin: .spool(folder: -1), modelWeights: config.modelWeights)
        if case let .failure(error) = OpenAIBatchFile.validate(data, file: url.lastPathComponent, context: context) { return .failure(error) }
        return .success(try drop(data, from: url))
    }

    /// Writes `content` into incoming/ under a fresh name (time, random, the file's own name).
    private func drop(_ content: Data, from url: URL) throws -> (name: String, contentHash: String) {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss"
        while true {
            var name = SpoolIntake.storableName(
                "\(formatter.string(from: Date()))-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))-\(url.lastPathComponent)")
            // The spool tells a batch file by its name, which shortening must not take away.
            if OpenAIBatchFile.isBatchFile(url.lastPathComponent) && !OpenAIBatchFile.isBatchFile(name) { name += ".jsonl" }
            if try FileOps.writeAtomically(content, to: incoming.appendingPathComponent(name)) {
                return (name, JobFileValidator.contentHash(content))
            }
        }
    }

    static func spooledSpec(_ job: ResolvedJob, models: [String: URL]) -> JobSpec {
        var spec = job.spec
        spec.promptsFile = nil
        if models[spec.model] == nil { spec.model = job.modelDirectory.standardizedFileURL.path }
        return spec
    }

    static func spooledDocument(_ job: ResolvedJob, from url: URL, models: [String: URL]) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        let body = try encoder.encode(spooledSpec(job, models: models))
        // A comment line keeps the origin visible in accepted/ (the path is escaped onto one line).
        let origin = url.path.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : String($0) }.joined()
        return Data("# submitted by layerskip submit from \(origin)\n".utf8) + body + Data("\n".utf8)
    }

    static func canonical(_ spec: JobSpec) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(spec)
    }
}

extension JobFileValidator {
    /// Validates a job file where it lies (relative paths from its folder), as `submit` and `run`
    /// do: YAML, or an OpenAI batch file when it is named `*.jsonl`.
    public static func validate(fileAt url: URL, config: DaemonConfig, registry: StrategyRegistry) -> (Data, Result<ResolvedJob, ConfigurationError>) {
        let data: Data
        do { data = try RegularFile.read(url.path, limit: config.maxJobFileBytes) } catch {
            return (Data(), .failure(ConfigurationError([.init(path: url.path, expected: "a readable job file of at most \(config.maxJobFileBytes) bytes",
                                                               found: "a file that \(error.reason)")])))
        }
        let context = JobContext(baseDirectory: url.deletingLastPathComponent(), models: config.models,
                                 modelDirectories: config.modelDirectories, registry: registry, modelWeights: config.modelWeights)
        if OpenAIBatchFile.isBatchFile(url.lastPathComponent) {
            return (data, OpenAIBatchFile.validate(data, file: url.lastPathComponent, context: context))
        }
        return (data, validate(data, file: url.path, context: context))
    }

    public static func contentHash(_ data: Data) -> String { ContentHash.hex(data) }
}
