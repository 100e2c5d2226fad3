#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import XCTest

/// The runner's batches through the real binary: several jobs in one decode loop, priorities,
/// cancelling one job mid-batch, SIGTERM with a full batch in flight.
final class BatchingDaemonTests: XCTestCase {
    func events(_ install: Installation) throws -> [(source: String, to: String)] {
        try DatabaseQueue(path: install.database.path).read { db in
            try Row.fetchAll(db, sql: "SELECT j.source, e.to_state FROM events e JOIN jobs j ON j.id = e.job_id ORDER BY e.id")
                .map { ($0["source"], $0["to_state"]) }
        }
    }

    /// A high-priority job claimed first fills the batch; the low one joins as slots free, while the
    /// high one's last prompts still run; both produce exactly their solo outputs.
    func testTwoPrioritiesInterleave() throws {
        let files = [(name: "low.yaml", yaml: jobYAML(prompts: 6, tokens: 60, priority: 0, promptPrefix: "Low")),
                     (name: "high.yaml", yaml: jobYAML(prompts: 6, tokens: 60, priority: 5, promptPrefix: "High"))]
        let solo = try soloTexts(files)
        let install = try Installation(extraConfig: "max_batch: 4")
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        for file in files { try install.drop(file.name, file.yaml) }
        try install.start()
        try waitFor("both jobs done", timeout: 60) {
            let jobs = try install.jobs()
            return jobs.count == 2 && jobs.allSatisfy { $0["state"] as? String == "succeeded" }
        }
        XCTAssertEqual(install.stop(SIGTERM), 0)
        let log = try events(install).filter { $0.to != "queued" }.map { "\($0.source) \($0.to)" }
        XCTAssertEqual(log, ["high.yaml running", "low.yaml running", "high.yaml succeeded", "low.yaml succeeded"],
                       "high first; low joins before high is done")
        let ids = try Dictionary(uniqueKeysWithValues: install.jobs().map { ($0["source"] as! String, $0["id"] as! Int) })
        for file in files { XCTAssertEqual(try outputs(install, ids[file.name]!), solo[file.name], file.name) }
        // The metrics say the prompts shared passes.
        let result = try install.cli(["result", "\(ids["high.yaml"]!)", "--json"])
        let batches = (result.json?["outputs"] as? [[String: Any]] ?? []).compactMap { ($0["metrics"] as? [String: Any])?["batch_size"] as? Double }
        XCTAssertEqual(batches.count, 6)
        XCTAssertTrue(batches.allSatisfy { $0 > 1 }, "\(batches)")
    }

    /// `models: tiny: {path: …, weights: int8}`: the runner loads the int8 model, so a job's text is
    /// that of `generate --weights int8`, and self-speculation there equals int8 decoding.
    func testAModelEntryWithInt8WeightsRunsInt8() throws {
        // The bf16 fixture: its greedy texts are printable (the f32 one's first is NULs, which job
        // outputs and generate render differently).
        let model = Paths.tinyModel.deletingLastPathComponent().appendingPathComponent("tiny-spm-mha-bf16-sharded")
        let install = try Installation(extraConfig: "max_batch: 4", tinyEntry: "{path: \(model.path), weights: int8}")
        let dir = install.root.appendingPathComponent("jobs")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var paths: [String] = []
        for (name, strategy) in [("ar.yaml", "autoregressive"), ("spec.yaml", "{name: self-speculative, exit_layer: 2, speculations: 3}")] {
            let url = dir.appendingPathComponent(name)
            try jobYAML(strategy: strategy, prompts: 3, tokens: 12).write(to: url, atomically: true, encoding: .utf8)
            paths.append(url.path)
        }
        let run = try install.cli(["run"] + paths)
        XCTAssertEqual(run.status, 0, run.stderr)
        let ar = try outputs(install, 1), spec = try outputs(install, 2)
        XCTAssertEqual(spec, ar)
        for id in [1, 2] {
            let result = try install.cli(["result", "\(id)", "--json"])
            let weights = (result.json?["outputs"] as? [[String: Any]] ?? []).map { ($0["metrics"] as? [String: Any])?["weights"] as? String }
            XCTAssertEqual(weights, ["int8", "int8", "int8"], result.stdout)
        }
        for (i, text) in ar.enumerated() {
            let g = try Installation.run(["generate", "--model", model.path, "--weights", "int8", "--max-new-tokens", "12",
                                          "--min-new-tokens", "12", "--json", "Hello \(i)"])
            XCTAssertEqual(g.json?["text"] as? String, text, g.stdout + g.stderr)
        }
    }

    /// Cancelling one job stops its sequences; the job it shared the batch with is unaffected.
    func testCancelOneJobMidBatch() throws {
        let files = [(name: "keep.yaml", yaml: jobYAML(prompts: 2, tokens: 480, priority: 5, promptPrefix: "Keep")),
                     (name: "drop.yaml", yaml: jobYAML(prompts: 8, tokens: 480, priority: 0, promptPrefix: "Drop"))]
        let solo = try soloTexts(files)
        let install = try Installation(extraConfig: "max_batch: 4")
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        for file in files { try install.drop(file.name, file.yaml) }
        try install.start()
        try waitFor("both running", timeout: 30) { try install.jobs().filter { $0["state"] as? String == "running" }.count == 2 }
        let ids = try Dictionary(uniqueKeysWithValues: install.jobs().map { ($0["source"] as! String, $0["id"] as! Int) })
        XCTAssertEqual(try install.cli(["cancel", "\(ids["drop.yaml"]!)"]).status, 0)
        let dropped = try install.waitForJob(ids["drop.yaml"]!, toBe: ["cancelled", "succeeded"])
        XCTAssertEqual(dropped["state"] as? String, "cancelled")
        XCTAssertLessThan(dropped["finished_prompts"] as? Int ?? 99, 8)
        _ = try install.waitForJob(ids["keep.yaml"]!, toBe: ["succeeded"])
        XCTAssertEqual(try outputs(install, ids["keep.yaml"]!), solo["keep.yaml"])
        // Whatever the cancelled job finished before it stopped is its solo output too.
        for (i, text) in try outputs(install, ids["drop.yaml"]!).enumerated() where text != "<none>" {
            XCTAssertEqual(text, solo["drop.yaml"]![i], "drop.yaml prompt \(i)")
        }
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// SIGTERM with a full batch of 8 sequences in flight: the job goes back to the queue without
    /// using up an attempt, the daemon exits 0, and the next run finishes it with the solo outputs.
    func testSIGTERMWithEightSequencesInFlight() throws {
        let files = [(name: "eight.yaml", yaml: jobYAML(prompts: 8, tokens: 480, extra: "max_attempts: 5", promptPrefix: "Eight"))]
        let solo = try soloTexts(files)
        let install = try Installation(extraConfig: "max_batch: 8")
        try install.start()
        try install.drop("eight.yaml", files[0].yaml)
        try waitFor("the job running", timeout: 30) { try install.jobs().first?["state"] as? String == "running" }
        XCTAssertEqual(install.stop(SIGTERM), 0, install.lastLog)
        let stopped = try install.job(1)
        XCTAssertEqual(stopped["state"] as? String, "queued", "\(stopped)")
        XCTAssertEqual(stopped["attempts"] as? Int, 0)
        XCTAssertLessThan(stopped["finished_prompts"] as? Int ?? 99, 8)
        try install.start()
        _ = try install.waitForJob(1, toBe: ["succeeded"])
        XCTAssertEqual(install.stop(SIGTERM), 0)
        XCTAssertEqual(try outputs(install, 1), solo["eight.yaml"])
    }
}
