import Decoding
import Engine
import Foundation
import InputFiles

/// OpenAI Batch API input files (`*.jsonl`), one `/v1/completions` request per line:
/// `{"custom_id": …, "method": "POST", "url": "/v1/completions", "body": {"model": …, "prompt": …, …}}`.
/// A file is one job whose prompts are its lines, in order; each keeps its own `max_tokens`,
/// sampling and stop strings (`PromptSpec`'s own settings), and its `custom_id` is the prompt's id.
///
/// Read by the same hostile-input rules as a YAML job (the caller reads the file: size limit,
/// regular file, no links in the spool), every line with the strict JSON scanner (no key twice,
/// bounded nesting, exact integers), and every problem is reported at once with the file, the
/// line number and the field path: `batch.jsonl: line 3: body.max_tokens`.
public enum OpenAIBatchFile {
    /// Files named so are OpenAI batch files, in the spool and for `submit` and `run`.
    public static func isBatchFile(_ name: String) -> Bool { name.hasSuffix(".jsonl") }

    static let requestKeys = ["custom_id", "method", "url", "body"]
    static let bodyKeys = ["model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop"]
    /// What OpenAI's `/v1/completions` does with a setting a request leaves out, so that a file
    /// written for that API means the same here: 16 tokens, temperature 1, top_p 1.
    public static let defaultMaxTokens = 16
    public static let defaultSampling = SamplingParameters(temperature: 1, topP: 1)
    /// A file with thousands of bad lines is reported by its first problems, not all of them.
    static let maxProblems = 100

    public static func validate(_ data: Data, file: String, context: JobContext) -> Result<ResolvedJob, ConfigurationError> {
        var reader = Reader(file: file, context: context)
        var lineNumber = 0
        var start = data.startIndex
        while start < data.endIndex {
            lineNumber += 1
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n")) ?? data.endIndex
            reader.read(data[start..<end], line: lineNumber)
            start = end < data.endIndex ? data.index(after: end) : end
        }
        return reader.finish()
    }

    /// The state of one pass over a file: problems so far, the requests read, the model.
    private struct Reader {
        let file: String
        let context: JobContext
        var problems: [ConfigurationProblem] = []
        var dropped = 0
        var prompts: [PromptSpec] = []
        /// The line that first used each custom_id.
        var customIds: [String: Int] = [:]
        /// The model the first request names (one file runs on one model, as in OpenAI's API),
        /// and what it resolved to.
        var model: (name: String, line: Int)?
        var resolved: (URL, ModelConfig)?

        init(file: String, context: JobContext) {
            self.file = file
            self.context = context
        }

        mutating func add(_ line: Int, _ field: String?, _ expected: String, _ found: String) {
            guard problems.count < OpenAIBatchFile.maxProblems else { dropped += 1; return }
            problems.append(.init(path: "\(file): line \(line)" + (field.map { ": \($0)" } ?? ""), expected: expected, found: found))
        }

        mutating func read(_ bytes: Data, line: Int) {
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return }
            let value: ConfigValue
            do {
                value = try bytes.withUnsafeBytes { raw in
                    var scanner = JSONScanner(raw)
                    let value = try OpenAIBatchFile.value(&scanner, depth: 0)
                    scanner.skipWhitespace()
                    guard scanner.atEnd else { throw scanner.error("more after the JSON object (one request per line)") }
                    return value
                }
            } catch let error as JSONScanError {
                return add(line, nil, "one JSON object per line (an OpenAI batch request)",
                           "invalid JSON: \(error.message) at column \(error.offset + 1)")
            } catch {
                return add(line, nil, "one JSON object per line (an OpenAI batch request)", "invalid JSON: \(error)")
            }
            guard case let .object(request) = value else {
                return add(line, nil, "a JSON object (custom_id, method, url, body)", value.description)
            }
            for key in request.keys.sorted() where !OpenAIBatchFile.requestKeys.contains(key) {
                add(line, key, "one of \(OpenAIBatchFile.requestKeys.joined(separator: ", "))", "an unknown field")
            }
            let customId = self.customId(request["custom_id"], line: line)
            switch request["method"] {
            case .string("POST")?: break
            case nil: add(line, "method", "\"POST\" (required)", "nothing")
            case let v?: add(line, "method", "\"POST\"", v.description)
            }
            switch request["url"] {
            case .string("/v1/completions")?: break
            case nil: add(line, "url", "\"/v1/completions\" (required)", "nothing")
            case let v?: add(line, "url", "\"/v1/completions\" (the only endpoint served)", v.description)
            }
            guard let bodyValue = request["body"] else { return add(line, "body", "a JSON object (required): the completion request", "nothing") }
            guard case let .object(body) = bodyValue else {
                return add(line, "body", "a JSON object: the completion request", bodyValue.description)
            }
            let prompt = self.body(body, line: line)
            if let customId, let prompt {
                prompts.append(PromptSpec(id: customId, text: prompt.text, customId: customId, maxNewTokens: prompt.maxTokens,
                                          sampling: prompt.sampling, stop: prompt.stop))
            }
        }

        mutating func customId(_ value: ConfigValue?, line: Int) -> String? {
            switch value {
            case nil:
                add(line, "custom_id", "a string (required), unique within the file", "nothing")
            case let .string(id)? where !id.isEmpty:
                if let first = customIds[id] {
                    add(line, "custom_id", "a custom_id unique within the file", "\"\(id)\", which line \(first) has too")
                    return nil
                }
                customIds[id] = line
                return id
            case let v?:
                add(line, "custom_id", "a non-empty string", v.description)
            }
            return nil
        }

        /// The request body as one prompt with its settings, or nil when a field is wrong.
        mutating func body(_ body: [String: ConfigValue], line: Int) -> (text: String, maxTokens: Int, sampling: SamplingParameters, stop: [String])? {
            let before = problems.count + dropped
            for key in body.keys.sorted() where !OpenAIBatchFile.bodyKeys.contains(key) {
                add(line, "body.\(key)", "one of \(OpenAIBatchFile.bodyKeys.joined(separator: ", ")) (other parameters are not supported)",
                    "an unknown field")
            }
            model(body["model"], line: line)

            var text: String?
            switch body["prompt"] {
            case let .string(s)?: text = s
            case let .array(items)? where items.count == 1 && items[0].stringValue != nil: text = items[0].stringValue
            case let .array(items)? where items.allSatisfy({ $0.intValue != nil }) && !items.isEmpty:
                add(line, "body.prompt", "a string (prompts of token ids are not supported)", "a list of \(items.count) token id(s)")
            case let .array(items)?:
                add(line, "body.prompt", "a string, or a list of exactly one string (one prompt per request)",
                    items.isEmpty ? "an empty list" : "a list of \(items.count) items")
            case nil: add(line, "body.prompt", "a string (required)", "nothing")
            case let v?: add(line, "body.prompt", "a string", v.description)
            }

            var maxTokens = OpenAIBatchFile.defaultMaxTokens
            switch body["max_tokens"] {
            case nil, .null?: break
            case let .int(n)? where n >= 1:
                if let (_, config) = resolved, n > config.maxPositionEmbeddings {
                    add(line, "body.max_tokens", "at most the model's \(config.maxPositionEmbeddings) positions", "\(n)")
                }
                maxTokens = n
            case let v?: add(line, "body.max_tokens", "an integer ≥ 1", v.description)
            }

            var sampling = OpenAIBatchFile.defaultSampling
            switch body["temperature"] {
            case nil, .null?: break
            case let v?:
                if let d = v.doubleValue { sampling.temperature = d } else { add(line, "body.temperature", "a number ≥ 0 (0 = greedy)", v.description) }
            }
            switch body["top_p"] {
            case nil, .null?: break
            case let v?:
                if let d = v.doubleValue { sampling.topP = d } else { add(line, "body.top_p", "a number in (0, 1]", v.description) }
            }
            switch body["seed"] {
            case nil, .null?: break
            case let .int(i)? where i >= 0: sampling.seed = UInt64(i)
            case let v?: add(line, "body.seed", "an integer ≥ 0", v.description)
            }
            // The ranges are the YAML job's (`SamplingParameters.problems`), under this line's path.
            for problem in sampling.problems(path: "body") { add(line, problem.path, problem.expected, problem.found) }

            var stop: [String] = []
            switch body["stop"] {
            case nil, .null?: break
            case let .string(s)? where !s.isEmpty: stop = [s]
            case let .array(items)?:
                for (i, item) in items.enumerated() {
                    if let s = item.stringValue, !s.isEmpty { stop.append(s) } else { add(line, "body.stop[\(i)]", "a non-empty string", item.description) }
                }
            case let v?: add(line, "body.stop", "a non-empty string or a list of them", v.description)
            }
            guard problems.count + dropped == before, let text else { return nil }
            return (text, maxTokens, sampling, stop)
        }

        /// Every request must name the model of the first; that one must be a model this daemon
        /// serves, by the rule a YAML job's `model:` follows (a configured name, or for a spooled
        /// file a folder under `model_directories`).
        mutating func model(_ value: ConfigValue?, line: Int) {
            guard let value else { return add(line, "body.model", "a model name (required)", "nothing") }
            guard let name = value.stringValue, !name.isEmpty else { return add(line, "body.model", "a model name", value.description) }
            if let model {
                if name != model.name {
                    add(line, "body.model", "\"\(model.name)\", the model of line \(model.line) (one batch file runs on one model)", "\"\(name)\"")
                }
                return
            }
            model = (name, line)
            switch JobFileValidator.resolveModel(name, context: context) {
            case let .success(r): resolved = r
            case let .failure(problem): add(line, "body.model", problem.expected, problem.found)
            }
        }

        func finish() -> Result<ResolvedJob, ConfigurationError> {
            var problems = problems
            if problems.isEmpty && prompts.isEmpty && model == nil {
                problems.append(.init(path: file, expected: "at least one request (one JSON object per line)", found: "no requests"))
            }
            if dropped > 0 {
                problems.append(.init(path: file, expected: "a valid batch file", found: "\(dropped) more problem(s) not listed"))
            }
            let strategy = JobSpec.defaultStrategy
            if let (_, config) = resolved {
                problems += context.registry.problems(strategy, model: config, path: "\(file): strategy (the default, \(strategy.name))")
            }
            guard problems.isEmpty, let model, let (directory, config) = resolved else { return .failure(ConfigurationError(problems)) }
            let spec = JobSpec(name: nil, model: model.name, strategy: strategy, maxNewTokens: OpenAIBatchFile.defaultMaxTokens,
                               minNewTokens: 0, sampling: OpenAIBatchFile.defaultSampling, stop: [], priority: 0, maxAttempts: nil,
                               prompts: prompts, promptsFile: nil, strategyIsDefault: true)
            let key = DaemonConfig.modelKey(model: model.name, directory: directory, models: context.models, weights: context.modelWeights)
            return .success(ResolvedJob(spec: spec, modelDirectory: directory, modelLayers: config.layerCount, modelKey: key))
        }
    }

    /// One JSON value as a `ConfigValue`, read with the strict scanner. Integers written without
    /// a fraction or exponent that fit in `Int` stay integers; other numbers must be finite.
    static func value(_ s: inout JSONScanner, depth: Int) throws -> ConfigValue {
        switch s.peek() {
        case UInt8(ascii: "{")?:
            var map: [String: ConfigValue] = [:]
            try s.readObject(depth: depth) { s, key in map[key] = try value(&s, depth: depth + 1) }
            return .object(map)
        case UInt8(ascii: "[")?:
            var items: [ConfigValue] = []
            try s.readArray(depth: depth) { s, _ in items.append(try value(&s, depth: depth + 1)) }
            return .array(items)
        case UInt8(ascii: "\"")?:
            return .string(try s.readString())
        case UInt8(ascii: "t")?:
            try s.skipValue(depth: depth)
            return .bool(true)
        case UInt8(ascii: "f")?:
            try s.skipValue(depth: depth)
            return .bool(false)
        case UInt8(ascii: "n")?:
            try s.skipValue(depth: depth)
            return .null
        default:
            guard let text = try s.readNumberText() else {
                try s.skipValue(depth: depth)
                throw s.error("expected a value")
            }
            if !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }), let i = Int(text) { return .int(i) }
            guard let d = Double(text), d.isFinite else { throw s.error("the number \(text.prefix(40)) is out of range") }
            return .double(d)
        }
    }
}
