#if canImport(Glibc)
import Glibc
#endif
import Daemon
import Decoding
import Foundation
import XCTest

/// Batch files through the real daemon: `submit FILE.jsonl`, `serve`, `result --format openai`.
final class OpenAIBatchEndToEndTests: XCTestCase {
    func testThreeRequestsRoundTripToThreeOutputLines() throws {
        let install = try Installation()
        try install.start()
        // The reference for each request: the same prompt and settings through `generate`.
        func generate(_ prompt: String, _ tokens: Int, _ extra: [String] = []) throws -> [String: Any] {
            let r = try Installation.run(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "\(tokens)", "--json"] + extra + [prompt])
            XCTAssertEqual(r.status, 0, r.stderr)
            return try XCTUnwrap(r.json, r.stdout)
        }
        // A stop string that the third prompt's greedy output contains past its start (a character
        // that first occurs after the first one; the tiny model's bytes decode partly to U+FFFD,
        // which is not one), so that request must end early with reason "stop" and the text before it.
        let unstopped = try XCTUnwrap(try generate("class Stack:", 12)["text"] as? String)
        let characters = Array(unstopped)
        let stop = try XCTUnwrap(characters.indices.dropFirst().first { i in
            characters[i] != "\u{FFFD}" && characters.firstIndex(of: characters[i]) == i
        }.map { String(characters[$0]) }, unstopped)
        let stopped = try generate("class Stack:", 12, ["--stop", stop])
        let stoppedText = try XCTUnwrap(stopped["text"] as? String)
        XCTAssertFalse(stoppedText.isEmpty)
        XCTAssertTrue(unstopped.hasPrefix(stoppedText + stop), "\(unstopped) / \(stoppedText) / \(stop)")

        // A custom_id that needs escaping both ways.
        let tricky = "q\"uote \\ back\nslash é \u{1}"
        let requests: [(id: String, prompt: String, tokens: Int, stop: String?)] = [
            ("first", "def fibonacci(n):", 12, nil), (tricky, "Hello world", 5, nil), ("third", "class Stack:", 12, stop),
        ]
        let file = install.root.appendingPathComponent("batch.jsonl")
        var body = ""
        for r in requests {
            var b: [String: Any] = ["model": "tiny", "prompt": r.prompt, "max_tokens": r.tokens, "temperature": 0]
            if let s = r.stop { b["stop"] = s }
            body += batchLine(r.id, body: b) + "\n\n"
        }
        try body.write(to: file, atomically: true, encoding: .utf8)
        let submitted = try install.cli(["submit", "--json", file.path])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        let id = try XCTUnwrap(((submitted.json?["submitted"] as? [[String: Any]])?.first)?["job_id"] as? Int, submitted.stdout)
        let spoolName = try XCTUnwrap(((submitted.json?["submitted"] as? [[String: Any]])?.first)?["spool_name"] as? String)
        XCTAssertTrue(spoolName.hasSuffix("-batch.jsonl"), spoolName)
        let watch = try install.cli(["watch", String(id), "--timeout", "60"])
        XCTAssertEqual(watch.status, 0, watch.stdout + watch.stderr + install.lastLog)
        // The file went into accepted/ exactly as written.
        XCTAssertEqual(try Data(contentsOf: install.accepted.appendingPathComponent(spoolName)), Data(body.utf8))

        let stored = try install.cli(["result", String(id), "--json"])
        let outputs = try XCTUnwrap(stored.json?["outputs"] as? [[String: Any]], stored.stdout)
        let result = try install.cli(["result", String(id), "--format", "openai"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let rawLines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        XCTAssertEqual(rawLines.count, 3, result.stdout)
        let lines = try rawLines.map { line -> [String: Any] in
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
        }
        XCTAssertEqual(lines.map { $0["custom_id"] as? String }, requests.map(\.id))
        XCTAssertEqual(Set(lines.compactMap { $0["id"] as? String }).count, 3, "each line its own id")
        let references = [try generate("def fibonacci(n):", 12), try generate("Hello world", 5), stopped]
        for (i, line) in lines.enumerated() {
            XCTAssertTrue(line["error"] is NSNull, "\(line)")
            let response = try XCTUnwrap(line["response"] as? [String: Any])
            XCTAssertEqual(response["status_code"] as? Int, 200)
            XCTAssertNotNil(response["request_id"] as? String)
            let completion = try XCTUnwrap(response["body"] as? [String: Any])
            XCTAssertEqual(completion["object"] as? String, "text_completion")
            XCTAssertEqual(completion["model"] as? String, "tiny")
            XCTAssertNotNil(completion["id"] as? String)
            let created = try XCTUnwrap(completion["created"] as? Int)
            XCTAssertLessThanOrEqual(abs(Double(created) - Date().timeIntervalSince1970), 600)
            let choices = try XCTUnwrap(completion["choices"] as? [[String: Any]])
            XCTAssertEqual(choices.count, 1)
            XCTAssertEqual(choices[0]["index"] as? Int, 0)
            XCTAssertTrue(choices[0]["logprobs"] is NSNull)
            let text = try XCTUnwrap(choices[0]["text"] as? String)
            XCTAssertEqual(text, outputs[i]["text"] as? String, "the stored output of prompt \(i)")
            XCTAssertEqual(text, references[i]["text"] as? String, "what generate gives for request \(i)")
            // OpenAI's reasons: "length" at max_tokens, "stop" for a stop string or end of sequence.
            let reference = try XCTUnwrap(references[i]["finish_reason"] as? String)
            XCTAssertEqual(choices[0]["finish_reason"] as? String, reference == "length" ? "length" : "stop")
            if requests[i].stop != nil { XCTAssertEqual(reference, "stop") }
            let usage = try XCTUnwrap(completion["usage"] as? [String: Any])
            let tokens = try XCTUnwrap(outputs[i]["tokens"] as? [Int])
            let promptTokens = try XCTUnwrap((outputs[i]["metrics"] as? [String: Any])?["prompt_tokens"] as? Int)
            XCTAssertEqual(usage["completion_tokens"] as? Int, tokens.count)
            XCTAssertEqual(usage["prompt_tokens"] as? Int, promptTokens)
            XCTAssertEqual(usage["total_tokens"] as? Int, tokens.count + promptTokens)
            XCTAssertEqual(tokens, references[i]["tokens"] as? [Int])
        }

        // A bad batch file dropped into the spool is rejected with its lines named in the .error file.
        try install.drop("bad.jsonl", batchLine("a", body: ["model": "tiny", "prompt": "x"]) + "\n" + batchLine("a", body: ["model": "tiny", "prompt": "x", "max_tokens": "ten"]) + "\n")
        try waitFor("the bad file rejected", timeout: 30) { FileManager.default.fileExists(atPath: install.rejected.appendingPathComponent("bad.jsonl.error").path) }
        let error = try String(contentsOf: install.rejected.appendingPathComponent("bad.jsonl.error"), encoding: .utf8)
        XCTAssertTrue(error.contains("bad.jsonl: line 2: custom_id: expected a custom_id unique within the file, found \"a\", which line 1 has too"), error)
        XCTAssertTrue(error.contains("bad.jsonl: line 2: body.max_tokens: expected an integer ≥ 1, found the string \"ten\""), error)
        // submit refuses it before anything is spooled, with the same message.
        let badFile = install.root.appendingPathComponent("bad.jsonl")
        try (batchLine("a", body: ["model": "tiny", "prompt": "x", "max_tokens": "ten"]) + "\n").write(to: badFile, atomically: true, encoding: .utf8)
        let refused = try install.cli(["submit", badFile.path])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("bad.jsonl: line 1: body.max_tokens: expected an integer ≥ 1"), refused.stderr)
        XCTAssertEqual(install.stop(SIGTERM), 0, install.lastLog)
    }

    /// A YAML job's lines carry its prompt ids as custom_id; a job not finished yet prints only
    /// what is finished and exits 1.
    func testYAMLJobsAndUnfinishedJobs() throws {
        let install = try Installation()
        let yaml = install.root.appendingPathComponent("job.yaml")
        try "model: tiny\nmax_new_tokens: 3\nprompts:\n  - {id: fib, text: \"def f():\"}\n  - \"no id\"\n".write(to: yaml, atomically: true, encoding: .utf8)
        let run = try install.cli(["run", yaml.path])
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        let result = try install.cli(["result", "1", "--format", "openai"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.jsonLines.map { $0["custom_id"] as? String }, ["fib", "2"])
        let stored = try XCTUnwrap(try install.cli(["result", "1", "--json"]).json?["outputs"] as? [[String: Any]])
        let texts = result.jsonLines.map { (($0["response"] as? [String: Any])?["body"] as? [String: Any]).flatMap { ($0["choices"] as? [[String: Any]])?.first?["text"] as? String } }
        XCTAssertEqual(texts, stored.map { $0["text"] as? String })
        XCTAssertEqual(try install.cli(["result", "1", "--format", "openai", "--json"]).status, 2)

        // A job recorded but not run yet: nothing to print, and the command says so.
        let store = try JobStore(url: install.database)
        let text = batchLine("only", body: ["model": "tiny", "prompt": "x"])
        let context = JobContext(baseDirectory: install.root, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        let queued = try store.insert(Submission(source: "q.jsonl", contentHash: JobFileValidator.contentHash(Data(text.utf8)),
                                                 outcome: OpenAIBatchFile.validate(Data(text.utf8), file: "q.jsonl", context: context)),
                                      defaultMaxAttempts: 3, intakePending: false, storedAs: nil)
        let pending = try install.cli(["result", "\(queued)", "--format", "openai"])
        XCTAssertEqual(pending.status, 1)
        XCTAssertEqual(pending.stdout, "")
        XCTAssertTrue(pending.stderr.contains("job \(queued) is queued: 1 of 1 prompt(s) not finished yet"), pending.stderr)
        // Cancelled before it ran: a line per request, with an error and no response.
        XCTAssertEqual(try store.cancel(queued), .cancelled)
        let cancelled = try install.cli(["result", "\(queued)", "--format", "openai"])
        XCTAssertEqual(cancelled.status, 0, cancelled.stderr)
        XCTAssertEqual(cancelled.jsonLines.count, 1)
        XCTAssertEqual(cancelled.jsonLines.first?["custom_id"] as? String, "only")
        XCTAssertTrue(cancelled.jsonLines.first?["response"] is NSNull)
        XCTAssertEqual((cancelled.jsonLines.first?["error"] as? [String: Any])?["code"] as? String, "batch_cancelled")
        // A job that failed after its first request: that one's output, then an error for the other.
        let two = [batchLine("done", body: ["model": "tiny", "prompt": "x"]), batchLine("never", body: ["model": "tiny", "prompt": "y"])]
            .joined(separator: "\n")
        let failedId = try store.insert(Submission(source: "f.jsonl", contentHash: JobFileValidator.contentHash(Data(two.utf8)),
                                                   outcome: OpenAIBatchFile.validate(Data(two.utf8), file: "f.jsonl", context: context)),
                                        defaultMaxAttempts: 3, intakePending: false, storedAs: nil)
        let claimed = try XCTUnwrap(try store.claimNext(among: [failedId]))
        let metrics = GenerationMetrics(strategy: "autoregressive", promptTokens: 3, generatedTokens: 2, finishReason: .eos,
                                        prefillSeconds: 0.001, decodeSeconds: 0.001, layerEvaluations: 8)
        try store.commitOutput(claimed, index: 0, text: "a \"quoted\"\u{0} text", tokens: [5, 6], metrics: metrics)
        try store.finish(claimed, as: .failed, error: "the model broke")
        let failed = try install.cli(["result", "\(failedId)", "--format", "openai"])
        XCTAssertEqual(failed.status, 0, failed.stderr)
        XCTAssertEqual(failed.jsonLines.map { $0["custom_id"] as? String }, ["done", "never"])
        let body = try XCTUnwrap((failed.jsonLines[0]["response"] as? [String: Any])?["body"] as? [String: Any])
        XCTAssertEqual((body["choices"] as? [[String: Any]])?.first?["text"] as? String, "a \"quoted\"\u{0} text")
        XCTAssertEqual((body["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "stop", "end of sequence is OpenAI's stop")
        XCTAssertEqual(body["usage"] as? [String: Int], ["prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5])
        XCTAssertTrue(failed.jsonLines[1]["response"] is NSNull)
        let error = try XCTUnwrap(failed.jsonLines[1]["error"] as? [String: Any])
        XCTAssertEqual(error["code"] as? String, "batch_failed")
        XCTAssertTrue((error["message"] as? String)?.contains("the model broke") ?? false, "\(error)")

        let help = try Installation.run(["result", "--help"])
        XCTAssertTrue(help.stdout.contains("--format") && help.stdout.contains("openai"), help.stdout)
    }
}
