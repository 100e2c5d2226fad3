#if canImport(Glibc)
import Glibc
#endif
import Decoding
import Engine
import Foundation
import InputFiles

/// What validation needs besides the file: where relative paths start, the configured model
/// names, and the strategies this executable offers.
public struct JobContext: Sendable {
    /// Who is reading the file, which decides what it may name (DESIGN §3, trust boundary).
    public enum Origin: Sendable, Equatable {
        /// `run` and `submit`: the user's own rights, so any path the user can read.
        case user
        /// The daemon's spool intake, with more rights than whoever dropped the file: a
        /// `prompts_file` is a plain file name in the job's own folder (opened relative to this
        /// descriptor of it, never following a link), and `model:` is a configured name or a
        /// model folder under `model_directories`.
        case spool(folder: Int32)
    }

    public var baseDirectory: URL
    public var models: [String: URL]
    public var modelDirectories: [URL]
    public var registry: StrategyRegistry
    public var maxPromptsFileBytes: Int
    public var origin: Origin
    /// The weights each model folder runs with (`DaemonConfig.modelWeights`), for the job's model key.
    public var modelWeights: [String: WeightFormat]

    public init(baseDirectory: URL, models: [String: URL], modelDirectories: [URL] = [], registry: StrategyRegistry,
                maxPromptsFileBytes: Int = 64 << 20, origin: Origin = .user, modelWeights: [String: WeightFormat] = [:]) {
        self.modelWeights = modelWeights
        self.baseDirectory = baseDirectory
        self.models = models
        self.modelDirectories = modelDirectories
        self.registry = registry
        self.maxPromptsFileBytes = maxPromptsFileBytes
        self.origin = origin
    }
}

/// Turns a job file into a `ResolvedJob`, or reports every problem in it at once.
public enum JobFileValidator {
    public static func validate(_ data: Data, file: String, context: JobContext) -> Result<ResolvedJob, ConfigurationError> {
        switch YAMLDocument.parse(data, file: file) {
        case let .failure(error): return .failure(error)
        case let .success(value): return validate(value, context: context)
        }
    }

    public static func validate(_ value: ConfigValue, context: JobContext) -> Result<ResolvedJob, ConfigurationError> {
        guard let map = value.objectValue else {
            return .failure(ConfigurationError([.init(path: "(top level)", expected: "a mapping of job fields (model:, strategy:, prompts:, …)",
                                                      found: value.description)]))
        }
        var p = Problems()
        for key in map.keys.sorted() where !JobSpec.keys.contains(key) {
            p.add(key, "one of \(JobSpec.keys.joined(separator: ", "))", "an unknown key")
        }
        let name = p.string(map, "name", required: false)
        let model = p.string(map, "model", required: false) ?? "default"
        let maxNew = p.int(map, "max_new_tokens", min: 1) ?? JobSpec.defaultMaxNewTokens
        let minNew = p.int(map, "min_new_tokens", min: 0) ?? 0
        let priority = p.int(map, "priority", min: Int.min) ?? 0
        let maxAttempts = p.int(map, "max_attempts", min: 1)
        if minNew > maxNew { p.add("min_new_tokens", "at most max_new_tokens (\(maxNew))", "\(minNew)") }
        let stop = p.stopStrings(map["stop"])
        let sampling = p.sampling(map["sampling"])
        var strategy: StrategySpec?
        switch map["strategy"] {
        case nil: strategy = JobSpec.defaultStrategy
        case let .string(s)?: strategy = StrategySpec(name: s)
        case let .object(o)?:
            var options = o
            if case let .string(n)? = options.removeValue(forKey: "name") {
                strategy = StrategySpec(name: n, options: options)
            } else {
                p.add("strategy.name", "a strategy name (\(context.registry.names.joined(separator: ", ")))", o["name"]?.description ?? "nothing")
            }
        case let v?: p.add("strategy", "a strategy name or a mapping with name:", v.description)
        }

        var prompts: [PromptSpec] = []
        let promptsFile = p.string(map, "prompts_file", required: false)
        switch (map["prompts"], promptsFile) {
        case (nil, nil):
            p.add("prompts", "a list of prompts ({id:, text:}) or prompts_file:", "neither")
        case (_?, _?):
            p.add("prompts_file", "either prompts: or prompts_file:, not both", "both")
        case let (inline?, nil):
            prompts = p.prompts(inline)
        case let (nil, file?):
            prompts = p.promptsFile(file, context: context)
        }

        // The model: a configured name, else a folder (relative to the job file).
        var resolved: (URL, ModelConfig)?
        if map["model"] == nil || model.isEmpty == false {
            switch resolveModel(model, context: context) {
            case let .success(r): resolved = r
            case let .failure(problem): p.problems.append(problem)
            }
        }
        if let (_, config) = resolved {
            if let strategy { p.problems += context.registry.problems(strategy, model: config, path: "strategy") }
            if maxNew > config.maxPositionEmbeddings {
                p.add("max_new_tokens", "at most the model's \(config.maxPositionEmbeddings) positions", "\(maxNew)")
            }
        } else if let strategy, context.registry.plugin(named: strategy.name) == nil {
            p.add("strategy.name", "one of \(context.registry.names.joined(separator: ", "))", "\"\(strategy.name)\"")
        }
        guard p.problems.isEmpty, let strategy, let (directory, config) = resolved else {
            return .failure(ConfigurationError(p.problems))
        }
        let spec = JobSpec(name: name, model: model, strategy: strategy, maxNewTokens: maxNew, minNewTokens: minNew,
                           sampling: sampling ?? .greedy, stop: stop, priority: priority, maxAttempts: maxAttempts,
                           prompts: prompts, promptsFile: promptsFile, strategyIsDefault: map["strategy"] == nil ? true : nil)
        let key = DaemonConfig.modelKey(model: model, directory: directory, models: context.models, weights: context.modelWeights)
        return .success(ResolvedJob(spec: spec, modelDirectory: directory, modelLayers: config.layerCount, modelKey: key))
    }

    static func resolveModel(_ model: String, context: JobContext) -> Result<(URL, ModelConfig), ConfigurationProblem> {
        let names = context.models.keys.sorted()
        let directory: URL
        if let named = context.models[model] {
            directory = named
        } else if case .spool = context.origin {
            switch spooledModelFolder(model, context: context) {
            case let .success(url): directory = url
            case let .failure(problem): return .failure(problem)
            }
        } else if model.contains("/") || model.hasPrefix(".") {
            directory = model.hasPrefix("/") ? URL(fileURLWithPath: model)
                : context.baseDirectory.appendingPathComponent(model).standardizedFileURL
        } else {
            let known = names.isEmpty ? "no models are configured" : "configured: \(names.joined(separator: ", "))"
            return .failure(.init(path: "model", expected: "a model name from the daemon config (\(known)) or a folder path",
                                  found: "\"\(model)\""))
        }
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            return .failure(.init(path: "model", expected: "a Hugging Face model folder with config.json",
                                  found: "\"\(model)\" (no \(configURL.path))"))
        }
        do {
            return .success((directory, try ModelConfig.load(from: configURL)))
        } catch {
            return .failure(.init(path: "model", expected: "a readable Llama config.json", found: "\(error)"))
        }
    }

    /// A model folder a spooled job may use: by an absolute path that lies under one of
    /// `model_directories` (also once symbolic links are resolved), or by the name of a folder in
    /// one of them. The answer for anything else is the same whether or not it exists, so the
    /// spool cannot be used to probe the daemon's filesystem.
    static func spooledModelFolder(_ model: String, context: JobContext) -> Result<URL, ConfigurationProblem> {
        let roots = context.modelDirectories.map { $0.standardizedFileURL.path }
        let names = context.models.keys.sorted()
        let refused = ConfigurationProblem(
            path: "model",
            expected: "a model name from the daemon config (\(names.isEmpty ? "none configured" : names.joined(separator: ", ")))"
                + (roots.isEmpty ? "; spooled jobs may name only these (the config's model_directories allows model folders)"
                                 : " or a model folder under model_directories (\(roots.joined(separator: ", ")))"),
            found: "\"\(model)\"")
        func inside(_ path: String, _ root: String) -> Bool { path.hasPrefix(root.hasSuffix("/") ? root : root + "/") }
        func resolved(_ path: String) -> String? {
            guard let r = realpath(path, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        if model.hasPrefix("/") {
            let lexical = URL(fileURLWithPath: model).standardizedFileURL.path
            guard let root = roots.first(where: { inside(lexical, $0) }),
                  let real = resolved(lexical), let realRoot = resolved(root), inside(real, realRoot) else { return .failure(refused) }
            return .success(URL(fileURLWithPath: real, isDirectory: true))
        }
        guard !model.isEmpty, !model.contains("/"), model != ".", model != "..", !model.contains("\0") else { return .failure(refused) }
        for root in roots {
            let candidate = root + "/" + model
            if let real = resolved(candidate), let realRoot = resolved(root), inside(real, realRoot),
               FileManager.default.fileExists(atPath: real + "/config.json") {
                return .success(URL(fileURLWithPath: real, isDirectory: true))
            }
        }
        return .failure(refused)
    }
}

/// Collects problems while reading fields, so that one pass reports all of them.
struct Problems {
    var problems: [ConfigurationProblem] = []

    mutating func add(_ path: String, _ expected: String, _ found: String) {
        problems.append(.init(path: path, expected: expected, found: found))
    }

    mutating func string(_ map: [String: ConfigValue], _ key: String, required: Bool) -> String? {
        guard let v = map[key] else {
            if required { add(key, "a string (required)", "nothing") }
            return nil
        }
        guard let s = v.stringValue else { add(key, "a string", v.description); return nil }
        return s
    }

    mutating func int(_ map: [String: ConfigValue], _ key: String, min: Int) -> Int? {
        guard let v = map[key] else { return nil }
        guard let i = v.intValue else { add(key, "an integer", v.description); return nil }
        if i < min { add(key, "an integer ≥ \(min)", "\(i)"); return nil }
        return i
    }

    mutating func stopStrings(_ value: ConfigValue?) -> [String] {
        switch value {
        case nil, .null?: return []
        case let .string(s)?: return [s]
        case let .array(items)?:
            var out: [String] = []
            for (i, item) in items.enumerated() {
                if let s = item.stringValue, !s.isEmpty { out.append(s) } else { add("stop[\(i)]", "a non-empty string", item.description) }
            }
            return out
        case let v?:
            add("stop", "a string or a list of strings", v.description)
            return []
        }
    }

    mutating func sampling(_ value: ConfigValue?) -> SamplingParameters? {
        guard let value else { return nil }
        guard let map = value.objectValue else {
            add("sampling", "a mapping (temperature, top_k, top_p, seed)", value.description)
            return nil
        }
        var s = SamplingParameters()
        for key in map.keys.sorted() where !SamplingParameters.keys.contains(key) {
            add("sampling.\(key)", "one of \(SamplingParameters.keys.joined(separator: ", "))", "an unknown key")
        }
        if let v = map["temperature"] {
            if let d = v.doubleValue { s.temperature = d } else { add("sampling.temperature", "a number", v.description) }
        }
        if let v = map["top_k"] {
            if let i = v.intValue { s.topK = i } else { add("sampling.top_k", "an integer", v.description) }
        }
        if let v = map["top_p"] {
            if let d = v.doubleValue { s.topP = d } else { add("sampling.top_p", "a number", v.description) }
        }
        if let v = map["seed"], v != .null {
            if let i = v.intValue, i >= 0 { s.seed = UInt64(i) } else { add("sampling.seed", "an integer ≥ 0", v.description) }
        }
        problems += s.problems(path: "sampling")
        return s
    }

    mutating func prompts(_ value: ConfigValue) -> [PromptSpec] {
        guard case let .array(items) = value else {
            add("prompts", "a list of prompts ({id:, text:} or plain strings)", value.description)
            return []
        }
        if items.isEmpty { add("prompts", "at least one prompt", "an empty list") }
        var out: [PromptSpec] = []
        for (i, item) in items.enumerated() {
            if let prompt = prompt(item, index: i, path: "prompts[\(i)]") { out.append(prompt) }
        }
        checkUniqueIds(out, path: "prompts")
        return out
    }

    mutating func prompt(_ item: ConfigValue, index: Int, path: String) -> PromptSpec? {
        switch item {
        case let .string(text):
            return PromptSpec(id: "\(index + 1)", text: text)
        case let .object(map):
            for key in map.keys.sorted() where key != "id" && key != "text" {
                add("\(path).\(key)", "id or text", "an unknown key")
            }
            var id = "\(index + 1)"
            switch map["id"] {
            case nil: break
            case let .string(s)? where !s.isEmpty: id = s
            case let .int(i)?: id = "\(i)"
            case let v?: add("\(path).id", "a non-empty string", v.description)
            }
            guard let text = map["text"]?.stringValue else {
                add("\(path).text", "a string (required)", map["text"]?.description ?? "nothing")
                return nil
            }
            return PromptSpec(id: id, text: text)
        default:
            add(path, "a prompt ({id:, text:} or a string)", item.description)
            return nil
        }
    }

    mutating func checkUniqueIds(_ prompts: [PromptSpec], path: String) {
        var seen = Set<String>()
        for p in prompts where !seen.insert(p.id).inserted {
            add(path, "unique prompt ids", "\"\(p.id)\" more than once")
        }
    }

    mutating func promptsFile(_ file: String, context: JobContext) -> [PromptSpec] {
        let data: Data
        do {
            switch context.origin {
            case .user:
                let url = file.hasPrefix("/") ? URL(fileURLWithPath: file)
                    : context.baseDirectory.appendingPathComponent(file).standardizedFileURL
                data = try RegularFile.read(url.path, limit: context.maxPromptsFileBytes)
            case let .spool(folder):
                // Decided on the text alone before anything is opened, so that the answer says
                // nothing about files outside the spool.
                guard !file.isEmpty, !file.contains("/"), file != ".", file != "..", !file.contains("\0") else {
                    add("prompts_file", "a file name in the job's own spool folder (layerskip submit puts the prompts into the job instead)",
                        "\"\(file)\"")
                    return []
                }
                data = try RegularFile.read(file, limit: context.maxPromptsFileBytes, relativeTo: folder, followSymlinks: false, singleLink: true)
            }
        } catch {
            add("prompts_file", "a regular JSONL file of at most \(context.maxPromptsFileBytes) bytes"
                + (context.origin == .user ? " (relative to the job file)" : " in the job's own spool folder"),
                "\"\(file)\", which \(error.reason)")
            return []
        }
        guard let text = String(data: data, encoding: .utf8) else {
            add("prompts_file", "a UTF-8 JSONL file", "\"\(file)\", which is not UTF-8")
            return []
        }
        var out: [PromptSpec] = []
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            let path = "\(file):\(lineNumber)"
            guard let value = try? JSONDecoder().decode(ConfigValue.self, from: Data(trimmed.utf8)) else {
                add(path, "one JSON object per line ({\"id\": …, \"text\": …})", "invalid JSON")
                continue
            }
            if let prompt = prompt(value, index: out.count, path: path) { out.append(prompt) }
        }
        if out.isEmpty && problems.isEmpty { add("prompts_file", "at least one prompt", "no prompts in \"\(file)\"") }
        checkUniqueIds(out, path: "prompts_file")
        return out
    }
}
