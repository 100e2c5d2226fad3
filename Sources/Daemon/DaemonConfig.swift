import Decoding
import Engine
import Foundation
import InputFiles
import Logging

/// The daemon's configuration file (`etc/layerskip.yaml` documents every key). Relative paths are
/// relative to the config file's folder.
public struct DaemonConfig: Sendable {
    /// The database and the instance lock live here.
    public var stateDirectory: URL
    /// Holds incoming/, accepted/ and rejected/.
    public var spoolDirectory: URL
    public var models: [String: URL]
    /// The weights each configured model folder runs with (a `models:` entry's `weights:`), keyed
    /// by the folder's resolved path; folders not listed run their stored weights. A job naming the
    /// folder by path gets the same.
    public var modelWeights: [String: WeightFormat] = [:]
    /// Folders whose model folders spooled jobs may name (by a path under one of them, or by the
    /// model folder's name). Nothing else outside `models:` is reachable from the spool.
    public var modelDirectories: [URL]
    /// Loaded model weights beyond this are unloaded, least recently used first.
    public var modelMemoryBudget: Int
    /// KV caches handed out at once stay within this.
    public var cacheMemoryBudget: Int
    /// A full rescan of incoming/ at least this often, whatever inotify says.
    public var scanInterval: Double
    public var maxAttempts: Int
    /// A job whose run hit a store failure (disk full, I/O error) waits this many seconds times
    /// its attempt number before it runs again.
    public var retryBackoff: Double = 30
    public var maxJobFileBytes: Int
    public var logLevel: Logger.Level
    /// Compute threads (0: every online CPU).
    public var threads: Int
    /// Sequences (prompts of any claimed jobs for one model) decoded together at most; nil (`auto`,
    /// the default): chosen per model from its measured pass-cost curve (`DecodeLoop.suggestedBatch`).
    public var maxBatch: Int?
    /// What bf16-weight products round activations to (`ActivationPrecision`); nil: the kernels'
    /// own default (f32, or bf16 where the environment has CK_BF16_ACTIVATIONS=1).
    public var activations: ActivationPrecision?
    /// Where the queue lives: SQLite under `state_directory` (one host), or one PostgreSQL shared
    /// by the daemons of many hosts.
    public var store: StoreLocation = .sqlite
    /// A claimed job's lease lasts this long unless its daemon's heartbeat renews it.
    public var leaseSeconds: Double = 60
    /// This daemon's name on the queue; default: the host name and the state directory.
    public var workerName: String?
    /// A Prometheus text-format file rewritten every few seconds (node_exporter's textfile collector).
    public var metricsTextfile: URL?

    public static let keys = ["state_directory", "spool_directory", "models", "model_directories", "model_memory_budget", "cache_memory_budget",
                              "scan_interval_seconds", "max_attempts", "retry_backoff_seconds", "max_job_file_bytes", "log_level", "threads", "max_batch", "activations",
                              "store", "lease_seconds", "worker_name", "metrics_textfile"]

    public init(stateDirectory: URL, spoolDirectory: URL? = nil, models: [String: URL] = [:], modelDirectories: [URL] = [],
                modelMemoryBudget: Int = 16 << 30, cacheMemoryBudget: Int = 4 << 30, scanInterval: Double = 5,
                maxAttempts: Int = 3, maxJobFileBytes: Int = 8 << 20, logLevel: Logger.Level = .info, threads: Int = 0) {
        self.stateDirectory = stateDirectory
        self.spoolDirectory = spoolDirectory ?? stateDirectory.appendingPathComponent("spool")
        self.models = models
        self.modelDirectories = modelDirectories
        self.modelMemoryBudget = modelMemoryBudget
        self.cacheMemoryBudget = cacheMemoryBudget
        self.scanInterval = scanInterval
        self.maxAttempts = maxAttempts
        self.maxJobFileBytes = maxJobFileBytes
        self.logLevel = logLevel
        self.threads = threads
    }

    /// The key of `modelWeights` (and of the model manager's entries): the resolved folder path.
    public static func modelKey(_ directory: URL) -> String { directory.standardizedFileURL.resolvingSymlinksInPath().path }

    public var databaseURL: URL { stateDirectory.appendingPathComponent("jobs.sqlite") }
    /// The store, for messages: the SQLite file, or the PostgreSQL URL.
    public var storeDescription: String {
        switch store {
        case .sqlite: return databaseURL.path
        case let .postgresql(location): return location.url
        }
    }
    public var lockURL: URL { stateDirectory.appendingPathComponent("serve.lock") }

    /// Without a config file: $LAYERSKIP_STATE_DIRECTORY, else $XDG_STATE_HOME/layerskip, else ~/.local/state/layerskip.
    public static func defaults(environment: [String: String] = ProcessInfo.processInfo.environment) -> DaemonConfig {
        if let dir = environment["LAYERSKIP_STATE_DIRECTORY"], !dir.isEmpty {
            return DaemonConfig(stateDirectory: URL(fileURLWithPath: dir, isDirectory: true))
        }
        let base = environment["XDG_STATE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".local/state")
        return DaemonConfig(stateDirectory: base.appendingPathComponent("layerskip", isDirectory: true))
    }

    public static func load(from url: URL) throws -> DaemonConfig {
        let data: Data
        do { data = try RegularFile.read(url.path, limit: 1 << 20) } catch {
            throw DaemonError.config(url.path, ConfigurationError([.init(path: url.path, expected: "a readable config file of at most 1 MiB", found: "a file that \(error.reason)")]))
        }
        switch parse(data, file: url.path, directory: url.deletingLastPathComponent()) {
        case let .success(config): return config
        case let .failure(error): throw DaemonError.config(url.path, error)
        }
    }

    static func parse(_ data: Data, file: String, directory: URL) -> Result<DaemonConfig, ConfigurationError> {
        let value: ConfigValue
        switch YAMLDocument.parse(data, file: file) {
        case let .failure(e): return .failure(e)
        case let .success(v): value = v
        }
        guard let map = value.objectValue else {
            return .failure(ConfigurationError([.init(path: "(top level)", expected: "a mapping", found: value.description)]))
        }
        var p = Problems()
        for key in map.keys.sorted() where !keys.contains(key) {
            p.add(key, "one of \(keys.joined(separator: ", "))", "an unknown key")
        }
        func path(_ s: String) -> URL {
            s.hasPrefix("/") ? URL(fileURLWithPath: s, isDirectory: true)
                : directory.appendingPathComponent(s, isDirectory: true).standardizedFileURL
        }
        var state = p.string(map, "state_directory", required: true)
        if state?.isEmpty == true {
            p.add("state_directory", "a folder path", "an empty string")
            state = nil
        }
        var config = DaemonConfig(stateDirectory: state.map(path) ?? directory)
        if let spool = p.string(map, "spool_directory", required: false) {
            if spool.isEmpty { p.add("spool_directory", "a folder path", "an empty string") } else { config.spoolDirectory = path(spool) }
        }
        switch map["models"] {
        case nil, .null?: break
        case let .object(models)?:
            for (name, v) in models.sorted(by: { $0.key < $1.key }) {
                if let s = v.stringValue, !s.isEmpty {
                    config.models[name] = path(s)
                } else if case let .object(entry) = v {
                    for key in entry.keys.sorted() where key != "path" && key != "weights" {
                        p.add("models.\(name).\(key)", "path or weights", "an unknown key")
                    }
                    guard let s = entry["path"]?.stringValue, !s.isEmpty else {
                        p.add("models.\(name).path", "a model folder path", entry["path"]?.description ?? "nothing")
                        continue
                    }
                    config.models[name] = path(s)
                    switch entry["weights"] {
                    case nil, .null?: break
                    case let w? where w.stringValue.flatMap(WeightFormat.init(rawValue:)) != nil:
                        let format = WeightFormat(rawValue: w.stringValue!)!
                        let key = Self.modelKey(path(s))
                        if let other = config.modelWeights[key], other != format {
                            p.add("models.\(name).weights", "the same weights as the other entries for \(key) (\(other.rawValue))", format.rawValue)
                        }
                        config.modelWeights[key] = format
                    case let w?: p.add("models.\(name).weights", "stored, int8 or q4", w.description)
                    }
                } else {
                    p.add("models.\(name)", "a model folder path, or a mapping with path: and weights:", v.description)
                }
            }
            // A folder listed once with weights and once without means two formats for one folder.
            for (name, url) in config.models where config.modelWeights[Self.modelKey(url)] != nil {
                if case .string? = models[name] {
                    p.add("models.\(name)", "the weights of the other entries for this folder (\(config.modelWeights[Self.modelKey(url)]!.rawValue)): give it as a mapping with weights:", "a plain path")
                }
            }
        case let v?: p.add("models", "a mapping of model names to folders", v.description)
        }
        switch map["model_directories"] {
        case nil, .null?: break
        case let .string(s)? where !s.isEmpty: config.modelDirectories = [path(s)]
        case let .array(items)?:
            for (i, item) in items.enumerated() {
                if let s = item.stringValue, !s.isEmpty { config.modelDirectories.append(path(s)) } else {
                    p.add("model_directories[\(i)]", "a folder path", item.description)
                }
            }
        case let v?: p.add("model_directories", "a list of folders holding model folders", v.description)
        }
        let memory = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        if let b = p.bytes(map, "model_memory_budget", max: memory, maxName: "the machine's memory") { config.modelMemoryBudget = b }
        if let b = p.bytes(map, "cache_memory_budget", max: memory, maxName: "the machine's memory") { config.cacheMemoryBudget = b }
        if let b = p.bytes(map, "max_job_file_bytes", max: 1 << 30, maxName: "1 GiB") { config.maxJobFileBytes = b }
        if let v = map["scan_interval_seconds"] {
            if let d = v.doubleValue, d > 0 { config.scanInterval = d } else { p.add("scan_interval_seconds", "a number > 0", v.description) }
        }
        if let n = p.int(map, "max_attempts", min: 1) { config.maxAttempts = n }
        if let v = map["retry_backoff_seconds"] {
            if let d = v.doubleValue, d >= 0, d <= 86400 { config.retryBackoff = d } else {
                p.add("retry_backoff_seconds", "a number of seconds from 0 to 86400", v.description)
            }
        }
        if let n = p.int(map, "threads", min: 0) { config.threads = n }
        if let v = map["max_batch"] {
            if case .string("auto") = v {
                config.maxBatch = nil
            } else if let n = v.intValue, (1...256).contains(n) {
                config.maxBatch = n
            } else {
                p.add("max_batch", "auto or an integer in 1...256", v.description)
            }
        }
        if let v = map["activations"] {
            if let precision = v.stringValue.flatMap(ActivationPrecision.init(rawValue:)) {
                if ActivationPrecision.isAvailable(precision) {
                    config.activations = precision
                } else {
                    p.add("activations", "f32 (\(ActivationPrecision.bf16Requirement))", v.description)
                }
            } else {
                p.add("activations", "f32 or bf16", v.description)
            }
        }
        switch map["store"] {
        case nil, .null?, .string("sqlite")?: break
        case let .object(entry)?:
            for key in entry.keys.sorted() where key != "postgresql" && key != "password_file" {
                p.add("store.\(key)", "postgresql or password_file", "an unknown key")
            }
            guard let url = entry["postgresql"]?.stringValue else {
                p.add("store.postgresql", "a postgresql:// URL", entry["postgresql"]?.description ?? "nothing")
                break
            }
            if let problem = PostgresLocation.problem(url) {
                p.add("store.postgresql", problem, "\"\(url)\"")
                break
            }
            var passwordFile: URL?
            if let v = entry["password_file"] {
                if let f = v.stringValue, !f.isEmpty {
                    passwordFile = f.hasPrefix("/") ? URL(fileURLWithPath: f) : directory.appendingPathComponent(f).standardizedFileURL
                } else {
                    p.add("store.password_file", "a file path", v.description)
                }
            }
            config.store = .postgresql(PostgresLocation(url: url, passwordFile: passwordFile))
        case let v?: p.add("store", "sqlite, or a mapping with postgresql: URL (and password_file:)", v.description)
        }
        if let v = map["lease_seconds"] {
            if let d = v.doubleValue, d >= 2, d <= 86400 { config.leaseSeconds = d } else {
                p.add("lease_seconds", "a number of seconds from 2 to 86400", v.description)
            }
        }
        if let s = p.string(map, "worker_name", required: false) {
            if s.isEmpty || s.count > 200 || s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                p.add("worker_name", "a name of 1 to 200 printable characters", "\"\(s)\"")
            } else {
                config.workerName = s
            }
        }
        if let s = p.string(map, "metrics_textfile", required: false) {
            if s.isEmpty { p.add("metrics_textfile", "a file path", "an empty string") } else {
                config.metricsTextfile = s.hasPrefix("/") ? URL(fileURLWithPath: s) : directory.appendingPathComponent(s).standardizedFileURL
            }
        }
        if let s = p.string(map, "log_level", required: false) {
            if let level = Logger.Level(rawValue: s.lowercased()) { config.logLevel = level } else {
                p.add("log_level", "one of \(Logger.levelNames.joined(separator: ", "))", "\"\(s)\"")
            }
        }
        return p.problems.isEmpty ? .success(config) : .failure(ConfigurationError(p.problems))
    }
}

/// Where the job store is (`store:` in the config).
public enum StoreLocation: Sendable, Equatable {
    case sqlite
    case postgresql(PostgresLocation)
}

extension DaemonConfig {
    /// This daemon as a worker on the queue.
    public var worker: Worker {
        let host = ProcessInfo.processInfo.hostName
        let name = workerName ?? "\(host):\(stateDirectory.standardizedFileURL.path)"
        if case .sqlite = store { return Worker(name: name, host: host, leaseSeconds: leaseSeconds) }
        return Worker(name: name, host: host, leaseSeconds: leaseSeconds, models: runnableModels())
    }

    /// The key a job's model is known by wherever it may run (`ResolvedJob.modelKey`): its
    /// configured name, else its folder's resolved path; and the weights it runs with here.
    public func modelKey(model: String, directory: URL) -> String {
        Self.modelKey(model: model, directory: directory, models: models, weights: modelWeights)
    }

    public static func modelKey(model: String, directory: URL, models: [String: URL], weights: [String: WeightFormat]) -> String {
        let format = weights[modelKey(directory)] ?? .stored
        return (models[model] != nil ? model : modelKey(directory)) + "@" + format.rawValue
    }

    /// The models this host can run, by model key, with their folders: every configured name, and
    /// every model folder (one with a config.json) configured or under `model_directories`.
    public func runnableModels() -> [String: URL] {
        var runnable: [String: URL] = [:]
        for (name, directory) in models {
            runnable[modelKey(model: name, directory: directory)] = directory
            runnable[modelKey(model: directory.path, directory: directory)] = directory
        }
        for root in modelDirectories {
            let children = (try? FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)) ?? []
            for child in children where FileManager.default.fileExists(atPath: child.appendingPathComponent("config.json").path) {
                runnable[modelKey(model: child.path, directory: child)] = child
            }
        }
        return runnable
    }
}

extension Problems {
    /// A byte count of at most `max`: an integer, or a string such as "512MiB", "8GiB", "2GB".
    mutating func bytes(_ map: [String: ConfigValue], _ key: String, max: Int, maxName: String) -> Int? {
        guard let v = map[key] else { return nil }
        let n: Int?
        if let i = v.intValue { n = i } else if let s = v.stringValue { n = parseBytes(s) } else { n = nil }
        guard let n, n > 0 else {
            add(key, "a positive byte count (e.g. 1073741824, \"512MiB\", \"8GiB\")", v.description)
            return nil
        }
        guard n <= max else {
            add(key, "at most \(maxName) (\(max) bytes)", v.description)
            return nil
        }
        return n
    }

    /// Nil for text that is not a number with an optional unit, and for counts beyond `Int`.
    func parseBytes(_ s: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
                                      ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1)]
        let t = s.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            let number = t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
            let bytes = value * Double(factor)
            // Int(exactly:) of a Double at or beyond 2^63 would trap; compare first.
            return bytes < 9.2e18 ? Int(bytes) : nil
        }
        return Int(t)
    }
}

/// Errors that end a daemon or CLI command, each with what to do about it.
public enum DaemonError: Error, CustomStringConvertible {
    case config(String, ConfigurationError)
    case databaseTooNew(path: String, unknown: [String])
    case alreadyRunning(stateDirectory: String, pid: String)
    case io(String)
    case notFound(String)
    case invalidTransition(String)

    public var description: String {
        switch self {
        case let .config(file, error):
            return "invalid config \(file):\n" + error.problems.map { "  \($0)" }.joined(separator: "\n")
        case let .databaseTooNew(path, unknown):
            return "the job database \(path) was written by a newer layerskip (unknown migrations: \(unknown.joined(separator: ", "))); upgrade layerskip or use another state directory"
        case let .alreadyRunning(dir, pid):
            return "another layerskip serve or run (pid \(pid)) already uses the state directory \(dir)"
        case let .io(message), let .notFound(message), let .invalidTransition(message):
            return message
        }
    }
}
