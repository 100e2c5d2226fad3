#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// `serve` + `submit` + the query commands, through the real binary on a temporary spool.
final class ServeEndToEndTests: XCTestCase {
    func testEachStrategyMatchesGenerateAndReportsMetrics() throws {
        // The jobs name the model by its folder: spooled jobs may, for folders under model_directories.
        let install = try Installation(extraConfig: "model_directories: [\(Paths.fixtures.path)]")
        try install.start()
        let cases: [(String, String, [String])] = [
            ("autoregressive", "strategy: autoregressive", []),
            ("early-exit", "strategy: {name: early-exit, exit_layer: 2}", ["--exit-layer", "2"]),
            // adaptive: false keeps d = 3 whatever the load (the load-aware choice may pick d = 0 in
            // a batch of 6 on a busy machine, and then nothing is drafted to report an acceptance of).
            ("self-speculative", "strategy: {name: self-speculative, exit_layer: 2, speculations: 3, adaptive: false}", []),
        ]
        let files = try cases.map { name, strategy, _ -> String in
            let url = install.root.appendingPathComponent("\(name).yaml")
            try """
                model: \(Paths.tinyModel.path)
                \(strategy)
                max_new_tokens: 12
                min_new_tokens: 12
                prompts:
                  - {id: fib, text: "def fibonacci(n):"}
                  - {id: hello, text: "Hello world"}
                """.write(to: url, atomically: true, encoding: .utf8)
            return url.path
        }
        let submitted = try install.cli(["submit", "--json"] + files)
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        let ids = ((submitted.json?["submitted"] as? [[String: Any]]) ?? []).compactMap { $0["job_id"] as? Int }
        XCTAssertEqual(submitted.json?["schema_version"] as? Int, 1)
        XCTAssertEqual(ids.count, 3, submitted.stdout)

        for (id, (name, _, generateFlags)) in zip(ids, cases) {
            let watch = try install.cli(["watch", String(id), "--timeout", "60"])
            XCTAssertEqual(watch.status, 0, "\(name): \(watch.stdout)\(watch.stderr)")
            let result = try install.cli(["result", String(id), "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(result.json?["schema_version"] as? Int, 1)
            XCTAssertEqual((result.json?["job"] as? [String: Any])?["state"] as? String, "succeeded")
            let outputs = try XCTUnwrap(result.json?["outputs"] as? [[String: Any]])
            XCTAssertEqual(outputs.map { $0["prompt_id"] as? String }, ["fib", "hello"])
            for output in outputs {
                let reference = try Installation.run(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "12",
                                                      "--min-new-tokens", "12", "--json"] + generateFlags + [output["prompt"] as! String])
                XCTAssertEqual(reference.status, 0, reference.stderr)
                XCTAssertEqual(output["tokens"] as? [Int], reference.json?["tokens"] as? [Int], "\(name) \(output["prompt_id"]!)")
                XCTAssertEqual(output["text"] as? String, reference.json?["text"] as? String)
                let metrics = try XCTUnwrap(output["metrics"] as? [String: Any])
                XCTAssertEqual(metrics["generated_tokens"] as? Int, 12)
                XCTAssertEqual(metrics["strategy"] as? String, name)
                XCTAssertEqual(metrics["finish_reason"] as? String, "length")
                XCTAssertNotNil(metrics["tokens_per_second"] as? Double)
                XCTAssertNotNil(metrics["prefill_ms"] as? Double)
            }
            let summary = try XCTUnwrap(try install.cli(["show", String(id), "--json"]).json?["summary"] as? [String: Any])
            XCTAssertEqual(summary["generated_tokens"] as? Int, 24)
            XCTAssertNotNil(summary["end_to_end_tokens_per_second"] as? Double)
            if name == "self-speculative" { XCTAssertNotNil(summary["acceptance_rate"] as? Double, "\(summary)") }
            let lines = try install.cli(["result", String(id), "--jsonl"]).jsonLines
            XCTAssertEqual(lines.map { $0["id"] as? String }, ["fib", "hello"])
        }
        let stats = try install.cli(["stats", "--json"])
        XCTAssertEqual(stats.status, 0, stats.stderr)
        let rows = try XCTUnwrap(stats.json?["stats"] as? [[String: Any]])
        XCTAssertEqual(Set(rows.compactMap { $0["strategy"] as? String }), ["autoregressive", "early-exit", "self-speculative"])
        XCTAssertEqual(rows.first { $0["strategy"] as? String == "early-exit" }?["average_exit_layer"] as? Double, 2)
        XCTAssertEqual((stats.json?["jobs_by_state"] as? [String: Int])?["succeeded"], 3)
        let table = try install.cli(["jobs"])
        XCTAssertTrue(table.stdout.hasPrefix("ID"), table.stdout)
        XCTAssertEqual(table.stdout.split(separator: "\n").count, 4)
        XCTAssertEqual(try install.cli(["show", "999"]).status, 3)
        XCTAssertEqual(try install.cli(["result", "999"]).status, 3)
        XCTAssertEqual(try install.cli(["jobs", "--state", "bogus"]).status, 2)
        XCTAssertEqual(install.stop(SIGTERM), 0, install.lastLog)
        // Every submitted file was moved out of incoming/ into accepted/, not deleted.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.incoming.path), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.accepted.path).count, 3)
    }

    /// The README's main job: every example in jobs/ runs in the foreground and succeeds.
    func testExampleJobsRunWithRun() throws {
        let install = try Installation()
        let examples = try FileManager.default.contentsOfDirectory(atPath: Paths.jobs.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(examples.count, 4)
        let run = try install.cli(["run"] + examples.map { Paths.jobs.appendingPathComponent($0).path })
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        XCTAssertTrue(run.stdout.hasPrefix("JOB"), run.stdout)
        for strategy in ["autoregressive", "early-exit", "self-speculative"] { XCTAssertTrue(run.stdout.contains(strategy), run.stdout) }
        let jobs = try install.jobs()
        XCTAssertEqual(jobs.count, examples.count)
        XCTAssertTrue(jobs.allSatisfy { $0["state"] as? String == "succeeded" })
        XCTAssertTrue(jobs.contains { ($0["prompt_count"] as? Int ?? 0) >= 4 }, "the batch job's prompts file")

        let bad = install.root.appendingPathComponent("bad.yaml")
        try "model: tiny\nstrategy: {name: self-speculative, exit_layer: 4}\nprompts: [x]\n".write(to: bad, atomically: true, encoding: .utf8)
        let failed = try install.cli(["run", bad.path])
        XCTAssertEqual(failed.status, 1)
        XCTAssertTrue(failed.stderr.contains("strategy.exit_layer"), failed.stderr)
        for command in ["serve", "run", "submit", "jobs", "show", "result", "cancel", "retry", "watch", "stats"] {
            let help = try Installation.run([command, "--help"])
            XCTAssertEqual(help.status, 0, "\(command) --help: \(help.stderr)")
            XCTAssertTrue(help.stdout.contains("--config"), "\(command) --help: \(help.stdout)")
        }
        // Without a daemon the file still lands in the spool, and submit says so.
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        let parked = try install.cli(["submit", "--wait", "0.3", Paths.jobs.appendingPathComponent("early-exit.yaml").path])
        XCTAssertEqual(parked.status, 0, parked.stderr)
        XCTAssertTrue(parked.stderr.contains("no daemon recorded it"), parked.stderr)
        let parkedName = parked.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(parkedName.hasSuffix("-early-exit.yaml"), parkedName)
        let parkedText = try String(contentsOf: install.incoming.appendingPathComponent(parkedName), encoding: .utf8)
        // What is spooled is the job as resolved by submit (JSON, which is YAML), not a path to the file.
        XCTAssertTrue(parkedText.hasPrefix("# submitted by layerskip submit from \(Paths.jobs.path)/early-exit.yaml\n"), parkedText)
        XCTAssertTrue(parkedText.contains(#""model" : "default""#), parkedText)
        let notSubmitted = try install.cli(["submit", bad.path])
        XCTAssertEqual(notSubmitted.status, 1)
        XCTAssertTrue(notSubmitted.stderr.contains("strategy.exit_layer"), notSubmitted.stderr)
    }
}
