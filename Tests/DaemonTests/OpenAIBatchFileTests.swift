import Daemon
import Decoding
import Foundation
import Logging
import XCTest

/// A line of an OpenAI batch file for the tiny model, written through JSONSerialization so the
/// test's own escaping cannot be what makes it valid.
func batchLine(_ customId: Any, body: [String: Any], method: Any = "POST", url: Any = "/v1/completions", extra: [String: Any] = [:]) -> String {
    var request: [String: Any] = ["custom_id": customId, "method": method, "url": url, "body": body]
    for (k, v) in extra { request[k] = v }
    let data = try! JSONSerialization.data(withJSONObject: request, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

/// Validation of OpenAI batch input files (`*.jsonl`): the mapping to one job, and every kind of
/// bad line reported with the file, the line number and the field path.
final class OpenAIBatchFileTests: XCTestCase {
    func context(origin: JobContext.Origin = .user) -> JobContext {
        JobContext(baseDirectory: Paths.jobs, models: ["tiny": Paths.tinyModel], registry: testRegistry, origin: origin)
    }

    func validate(_ text: String, file: String = "batch.jsonl") -> Result<ResolvedJob, ConfigurationError> {
        OpenAIBatchFile.validate(Data(text.utf8), file: file, context: context())
    }

    func problems(_ text: String) -> [String] {
        switch validate(text) {
        case .success: return []
        case let .failure(e): return e.problems.map(\.description)
        }
    }

    func testRequestsBecomeOnePromptEachWithTheirOwnSettings() throws {
        let text = [
            batchLine("first", body: ["model": "tiny", "prompt": "def fibonacci(n):", "max_tokens": 5, "temperature": 0]),
            "",
            "   ",
            batchLine("second", body: ["model": "tiny", "prompt": ["Hello world"], "max_tokens": 7, "temperature": 0.7,
                                       "top_p": 0.9, "seed": 42, "stop": ["\n\n", "END"]]),
            batchLine("third", body: ["model": "tiny", "prompt": "class Stack:", "stop": "\n"]),
        ].joined(separator: "\n") + "\n"
        let job = try validate(text).get()
        XCTAssertEqual(job.spec.prompts.map(\.id), ["first", "second", "third"])
        XCTAssertEqual(job.spec.prompts.map(\.customId), ["first", "second", "third"])
        XCTAssertEqual(job.spec.prompts.map(\.text), ["def fibonacci(n):", "Hello world", "class Stack:"])
        XCTAssertEqual(job.spec.prompts.map(\.maxNewTokens), [5, 7, 16], "OpenAI's default max_tokens is 16")
        XCTAssertEqual(job.spec.prompts[0].sampling, SamplingParameters(temperature: 0, topP: 1))
        XCTAssertTrue(job.spec.prompts[0].sampling?.isGreedy ?? false)
        XCTAssertEqual(job.spec.prompts[1].sampling, SamplingParameters(temperature: 0.7, topP: 0.9, seed: 42))
        XCTAssertEqual(job.spec.prompts[2].sampling, SamplingParameters(temperature: 1, topP: 1), "OpenAI's default temperature is 1")
        XCTAssertEqual(job.spec.prompts.map(\.stop), [[], ["\n\n", "END"], ["\n"]])
        XCTAssertEqual(job.spec.model, "tiny")
        XCTAssertEqual(job.modelDirectory.standardizedFileURL.path, Paths.tinyModel.path)
        // The strategy is what a YAML job that names none gets.
        let yaml = try JobFileValidator.validate(Data("model: tiny\nprompts: [x]\n".utf8), file: "j.yaml", context: context()).get()
        XCTAssertEqual(job.spec.strategy, yaml.spec.strategy)
        XCTAssertEqual(job.modelKey, yaml.modelKey)
    }

    /// Each kind of bad line names the file, its line and the field; the good lines around it
    /// are not reported, and every problem comes back at once.
    func testMalformedLinesNameTheLineAndTheField() {
        let ok = ["model": "tiny", "prompt": "x"] as [String: Any]
        let lines = [
            batchLine("fine", body: ok),                                                        // 1
            #"{"custom_id": "broken", "method": "POST", "url": "/v1/completions", "body": {"#,   // 2 bad JSON
            #"{"method": "POST", "url": "/v1/completions", "body": {"model": "tiny", "prompt": "x"}}"#,  // 3 no custom_id
            batchLine("fine", body: ok),                                                        // 4 duplicate of line 1
            batchLine("chat", body: ok, url: "/v1/chat/completions"),                          // 5 wrong url
            batchLine("get", body: ok, method: "GET"),                                         // 6 wrong method
            batchLine("extra", body: ok, extra: ["metadata": "x"]),                            // 7 unknown top-level field
            batchLine("echo", body: ["model": "tiny", "prompt": "x", "echo": true]),           // 8 unknown body field
            batchLine("ten", body: ["model": "tiny", "prompt": "x", "max_tokens": "ten"]),     // 9 max_tokens type
            batchLine("cold", body: ["model": "tiny", "prompt": "x", "temperature": -1]),      // 10 temperature range
            batchLine("hot", body: ["model": "tiny", "prompt": "x", "temperature": "hot"]),    // 11 temperature type
            batchLine(7, body: ok),                                                             // 12 custom_id type
            batchLine("ids", body: ["model": "tiny", "prompt": [1, 2, 3]]),                    // 13 token ids
            batchLine("two", body: ["model": "tiny", "prompt": ["a", "b"]]),                   // 14 several prompts
            #"{"custom_id": "twice", "custom_id": "again", "method": "POST", "url": "/v1/completions", "body": {}}"#,  // 15
            batchLine("p", body: ["model": "tiny", "prompt": "x", "top_p": 0]),                // 16 top_p range
            batchLine("s", body: ["model": "tiny", "prompt": "x", "seed": 1.5]),               // 17 seed type
            batchLine("st", body: ["model": "tiny", "prompt": "x", "stop": [1]]),              // 18 stop type
            batchLine("zero", body: ["model": "tiny", "prompt": "x", "max_tokens": 0]),        // 19 max_tokens range
            "[1, 2]",                                                                            // 20 not an object
            #"{"custom_id": "nobody", "method": "POST", "url": "/v1/completions"}"#,         // 21 no body
        ].joined(separator: "\n")
        let found = problems(lines)
        func expect(_ prefix: String, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
            let matching = found.filter { $0.hasPrefix(prefix + ": ") || $0.hasPrefix(prefix + ":") }
            XCTAssertFalse(matching.isEmpty, "no problem at \(prefix) in:\n\(found.joined(separator: "\n"))", file: file, line: line)
            for fragment in fragments {
                XCTAssertTrue(matching.contains { $0.contains(fragment) }, "\(prefix): no \"\(fragment)\" in \(matching)", file: file, line: line)
            }
        }
        XCTAssertFalse(found.contains { $0.hasPrefix("batch.jsonl: line 1:") }, found.joined(separator: "\n"))
        expect("batch.jsonl: line 2", "invalid JSON")
        expect("batch.jsonl: line 3: custom_id", "required", "found nothing")
        expect("batch.jsonl: line 4: custom_id", "unique", "\"fine\", which line 1 has too")
        expect("batch.jsonl: line 5: url", "\"/v1/completions\"", "found the string \"/v1/chat/completions\"")
        expect("batch.jsonl: line 6: method", "\"POST\"", "found the string \"GET\"")
        expect("batch.jsonl: line 7: metadata", "an unknown field")
        expect("batch.jsonl: line 8: body.echo", "an unknown field")
        expect("batch.jsonl: line 9: body.max_tokens", "expected an integer ≥ 1, found the string \"ten\"")
        expect("batch.jsonl: line 10: body.temperature", "≥ 0", "found -1")
        expect("batch.jsonl: line 11: body.temperature", "a number", "found the string \"hot\"")
        expect("batch.jsonl: line 12: custom_id", "a non-empty string", "the integer 7")
        expect("batch.jsonl: line 13: body.prompt", "token ids are not supported")
        expect("batch.jsonl: line 14: body.prompt", "exactly one string", "a list of 2 items")
        expect("batch.jsonl: line 15", "invalid JSON", "\"custom_id\" appears twice")
        expect("batch.jsonl: line 16: body.top_p", "(0, 1]")
        expect("batch.jsonl: line 17: body.seed", "an integer ≥ 0", "the number 1.5")
        expect("batch.jsonl: line 18: body.stop[0]", "a non-empty string", "the integer 1")
        expect("batch.jsonl: line 19: body.max_tokens", "an integer ≥ 1", "the integer 0")
        expect("batch.jsonl: line 20", "a JSON object", "a list")
        expect("batch.jsonl: line 21: body", "required")
    }

    /// An unknown model is refused by the rule a YAML job's `model:` follows, with its message.
    func testAnUnknownModelIsRefusedAsInAYAMLJob() throws {
        for origin in [JobContext.Origin.user, .spool(folder: -1)] {
            let yaml = JobFileValidator.validate(Data("model: nonesuch\nprompts: [x]\n".utf8), file: "j.yaml", context: context(origin: origin))
            let yamlProblem = try XCTUnwrap(yaml.failureProblems.first { $0.path == "model" })
            let batch = OpenAIBatchFile.validate(Data((batchLine("a", body: ["model": "nonesuch", "prompt": "x"]) + "\n").utf8),
                                                 file: "batch.jsonl", context: context(origin: origin))
            XCTAssertEqual(batch.failureProblems.map(\.path), ["batch.jsonl: line 1: body.model"])
            XCTAssertEqual(batch.failureProblems.first?.expected, yamlProblem.expected)
            XCTAssertEqual(batch.failureProblems.first?.found, yamlProblem.found)
        }
        // A spooled file may not name a model folder the config does not allow, as for YAML.
        let spooled = OpenAIBatchFile.validate(Data(batchLine("a", body: ["model": Paths.tinyModel.path, "prompt": "x"]).utf8),
                                               file: "batch.jsonl", context: context(origin: .spool(folder: -1)))
        XCTAssertTrue(spooled.failureProblems.first?.expected.contains("spooled jobs may name only these") ?? false, "\(spooled.failureProblems)")
        // One file runs on one model.
        let mixed = problems(batchLine("a", body: ["model": "tiny", "prompt": "x"]) + "\n" + batchLine("b", body: ["model": "other", "prompt": "x"]))
        XCTAssertEqual(mixed.count, 1)
        XCTAssertTrue(mixed[0].hasPrefix("batch.jsonl: line 2: body.model: expected \"tiny\", the model of line 1"), mixed[0])
    }

    func testEmptyFilesAndLimits() {
        XCTAssertEqual(problems(""), ["batch.jsonl: expected at least one request (one JSON object per line), found no requests"])
        XCTAssertEqual(problems("\n \n\t\n"), ["batch.jsonl: expected at least one request (one JSON object per line), found no requests"])
        // max_tokens within the model's positions, as max_new_tokens in YAML.
        let long = problems(batchLine("a", body: ["model": "tiny", "prompt": "x", "max_tokens": 1 << 40]))
        XCTAssertEqual(long.count, 1)
        XCTAssertTrue(long[0].hasPrefix("batch.jsonl: line 1: body.max_tokens: expected at most the model's"), long[0])
        // A file of thousands of bad lines is reported by its first 100 problems and a count.
        let many = problems(Array(repeating: "nope", count: 500).joined(separator: "\n"))
        XCTAssertEqual(many.count, 101)
        XCTAssertEqual(many.last, "batch.jsonl: expected a valid batch file, found 400 more problem(s) not listed")
        // Nesting beyond the strict scanner's limit is an error for that line, not a crash.
        let deep = problems(String(repeating: "[", count: 100_000))
        XCTAssertEqual(deep.count, 1)
        XCTAssertTrue(deep[0].hasPrefix("batch.jsonl: line 1: expected one JSON object per line"), deep[0])
        XCTAssertTrue(deep[0].contains("nested deeper"), deep[0])
    }

    /// `run` and `submit` tell the formats apart by the file's name.
    func testFilesNamedJsonlAreReadAsBatchFiles() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("requests.jsonl")
        try (batchLine("a", body: ["model": "tiny", "prompt": "x", "max_tokens": 2, "temperature": 0]) + "\n").write(to: url, atomically: true, encoding: .utf8)
        var config = DaemonConfig(stateDirectory: dir)
        config.models = ["tiny": Paths.tinyModel]
        let job = try JobFileValidator.validate(fileAt: url, config: config, registry: testRegistry).1.get()
        XCTAssertEqual(job.spec.prompts.map(\.customId), ["a"])
        try ("[" + batchLine("a", body: [:])).write(to: url, atomically: true, encoding: .utf8)
        let bad = JobFileValidator.validate(fileAt: url, config: config, registry: testRegistry).1
        XCTAssertEqual(bad.failureProblems.map(\.path), ["requests.jsonl: line 1"])
    }
}

extension Result where Failure == ConfigurationError {
    var failureProblems: [ConfigurationProblem] {
        if case let .failure(e) = self { return e.problems } else { return [] }
    }
}

/// Batch files in the spool's intake: the file's name decides the format, and the YAML job's
/// rules for what the intake opens apply unchanged.
final class OpenAIBatchSpoolTests: XCTestCase {
    var dir: URL!
    var store: JobStore!
    var layout: SpoolLayout!
    var intake: SpoolIntake!

    override func setUpWithError() throws {
        dir = try Paths.temporaryDirectory()
        store = try JobStore(url: dir.appendingPathComponent("jobs.sqlite"))
        layout = SpoolLayout(root: dir.appendingPathComponent("spool"))
        try layout.create()
        var config = DaemonConfig(stateDirectory: dir)
        config.models = ["tiny": Paths.tinyModel]
        intake = SpoolIntake(folders: try SpoolFolders(layout: layout, lock: false), store: store, config: config,
                             registry: testRegistry, log: Logger.daemon(level: .error))
    }

    override func tearDown() {
        store = nil
        try? FileManager.default.removeItem(at: dir)
    }

    func testABatchFileIsOneJobWithItsCustomIds() throws {
        let ids = ["one", "two", "three"]
        let text = ids.map { batchLine($0, body: ["model": "tiny", "prompt": "Hello \($0)", "max_tokens": 3]) }.joined(separator: "\n")
        try text.write(to: layout.incoming.appendingPathComponent("requests.jsonl"), atomically: true, encoding: .utf8)
        XCTAssertEqual(intake.scan(), 1)
        let job = try XCTUnwrap(try store.jobs().first)
        XCTAssertEqual(job.state, .queued, "\(job.problems ?? [])")
        XCTAssertEqual(job.strategy, JobSpec.defaultStrategy.name)
        let outputs = try store.outputs(job.id)
        XCTAssertEqual(outputs.map(\.customId), ids)
        XCTAssertEqual(outputs.map(\.prompt), ids.map { "Hello \($0)" })
        XCTAssertTrue(FileManager.default.fileExists(atPath: layout.accepted.appendingPathComponent("requests.jsonl").path))

        // The same lines under a YAML name are read as YAML, and rejected as such.
        try text.write(to: layout.incoming.appendingPathComponent("requests.yaml"), atomically: true, encoding: .utf8)
        XCTAssertEqual(intake.scan(), 1)
        XCTAssertEqual(try store.jobs().first?.state, .rejected)
    }

    /// A link named *.jsonl is refused without being followed, as a YAML job's would be.
    func testALinkedBatchFileIsNotFollowed() throws {
        let outside = dir.appendingPathComponent("outside.jsonl")
        try batchLine("secret", body: ["model": "tiny", "prompt": "the daemon must not read this"]).write(to: outside, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: layout.incoming.appendingPathComponent("link.jsonl").path, withDestinationPath: outside.path)
        XCTAssertEqual(intake.scan(), 1)
        let job = try XCTUnwrap(try store.jobs().first)
        XCTAssertEqual(job.state, .rejected)
        XCTAssertEqual(job.promptCount, 0)
        let error = try String(contentsOf: layout.rejected.appendingPathComponent("link.jsonl.error"), encoding: .utf8)
        XCTAssertTrue(error.contains("symbolic link"), error)
        XCTAssertFalse(error.contains("secret") || error.contains("must not read"), error)
    }
}
