#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import XCTest

/// Stopping, crashing, cancelling, retrying, ordering and concurrent reading, through the real binary.
final class ServeControlTests: XCTestCase {
    /// A job long enough (~1–2 s here) to be interrupted half-way. The daemons of these tests
    /// decode two prompts at a time, so that the prompts finish in turn.
    let twoAtATime = "max_batch: 2"
    let longJob = jobYAML(prompts: 16, tokens: 300, extra: "max_attempts: 5", promptPrefix: "Long")
    /// Four times `longJob`: on a fast CPU the last 15 prompts of `longJob` took less time than a
    /// cancel takes to arrive (CLI start + the runner's 0.2 s poll), and the job succeeded.
    let cancelledJob = jobYAML(prompts: 64, tokens: 300, promptPrefix: "Long")

    func finished(_ install: Installation, _ id: Int) -> Int { ((try? install.job(id))?["finished_prompts"] as? Int) ?? 0 }

    func testSIGTERMMidJobRequeuesKeepsFinishedPromptsAndCompletesAfterRestart() throws {
        let install = try Installation(extraConfig: twoAtATime)
        try install.start()
        try install.drop("long.yaml", longJob)
        try waitFor("two prompts finished", timeout: 30) { self.finished(install, 1) >= 2 }
        let started = Date()
        XCTAssertEqual(install.stop(SIGTERM), 0, install.lastLog)
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertTrue(install.lastLog.contains("<5>stopped"), install.lastLog)
        let stopped = try install.job(1)
        XCTAssertEqual(stopped["state"] as? String, "queued")
        XCTAssertEqual(stopped["attempts"] as? Int, 0, "a clean stop does not use up an attempt")
        let kept = stopped["finished_prompts"] as? Int ?? 0
        XCTAssertGreaterThanOrEqual(kept, 2)
        XCTAssertLessThan(kept, 16)

        try install.start()
        XCTAssertEqual(try install.waitForJob(1, toBe: ["succeeded"])["finished_prompts"] as? Int, 16)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    func testResumeAfterCrashDoesNotRedoFinishedPrompts() throws {
        let install = try Installation(extraConfig: twoAtATime)
        try install.start()
        try install.drop("long.yaml", longJob)
        try waitFor("three prompts finished", timeout: 30) { self.finished(install, 1) >= 3 }
        XCTAssertEqual(install.stop(SIGKILL), -SIGKILL)
        let before = try install.cli(["result", "1", "--json"]).json?["outputs"] as? [[String: Any]] ?? []
        let done = before.filter { $0["text"] != nil && !($0["text"] is NSNull) }
        XCTAssertGreaterThanOrEqual(done.count, 3)

        try install.start()
        let job = try install.waitForJob(1, toBe: ["succeeded"])
        XCTAssertEqual(job["attempts"] as? Int, 2)
        let after = try XCTUnwrap(try install.cli(["result", "1", "--json"]).json?["outputs"] as? [[String: Any]])
        for old in done {
            let index = old["index"] as! Int
            XCTAssertEqual(after[index]["attempt"] as? Int, 1, "prompt \(index) kept from the first attempt")
            XCTAssertEqual(after[index]["text"] as? String, old["text"] as? String)
            XCTAssertEqual(after[index]["finished_at"] as? String, old["finished_at"] as? String)
        }
        XCTAssertEqual(after.last?["attempt"] as? Int, 2)
        XCTAssertTrue(install.lastLog.contains("recovered 1 job(s)"), install.lastLog)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// A job during which the daemon dies every time ends `failed` with that reason, not in a loop.
    func testJobThatKeepsKillingTheDaemonEndsFailed() throws {
        let install = try Installation()
        try install.start()
        try install.drop("doomed.yaml", longJob.replacingOccurrences(of: "max_attempts: 5", with: "max_attempts: 2"))
        for attempt in 1...2 {
            try waitFor("attempt \(attempt) running", timeout: 30) { (try? install.job(1))?["attempts"] as? Int == attempt }
            XCTAssertEqual(install.stop(SIGKILL), -SIGKILL)
            try install.start()
        }
        let job = try install.waitForJob(1, toBe: ["failed"], timeout: 30)
        XCTAssertTrue((job["error"] as? String ?? "").contains("max_attempts 2"), "\(job)")
        XCTAssertEqual(try install.cli(["watch", "1"]).status, 1)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    func testCancelRunningJobThenRetry() throws {
        let install = try Installation(extraConfig: twoAtATime)
        try install.start()
        try install.drop("long.yaml", cancelledJob)
        try waitFor("running", timeout: 30) { self.finished(install, 1) >= 1 }
        let cancel = try install.cli(["cancel", "1"])
        XCTAssertEqual(cancel.status, 0, cancel.stderr)
        XCTAssertTrue(cancel.stdout.contains("stops at the next token"), cancel.stdout)
        let watch = try install.cli(["watch", "1", "--timeout", "30"])
        XCTAssertEqual(watch.status, 4, watch.stdout + watch.stderr)
        let job = try install.job(1)
        XCTAssertEqual(job["state"] as? String, "cancelled")
        XCTAssertLessThan(job["finished_prompts"] as? Int ?? 99, 64)
        XCTAssertEqual(try install.cli(["cancel", "1"]).status, 1, "already final")
        XCTAssertEqual(try install.cli(["cancel", "42"]).status, 3)

        // A queued job is cancelled at once.
        try install.drop("second.yaml", longJob)
        try install.drop("third.yaml", jobYAML())
        try waitFor("third recorded", timeout: 20) { try install.jobs().count == 3 }
        XCTAssertEqual(try install.cli(["cancel", "3"]).stdout, "job 3 cancelled\n")

        let retry = try install.cli(["retry", "1"])
        XCTAssertEqual(retry.status, 0, retry.stderr)
        XCTAssertEqual(try install.cli(["retry", "1"]).status, 1, "not final")
        XCTAssertEqual(try install.cli(["watch", "1", "--timeout", "120"]).status, 0)
        let retried = try install.job(1)
        XCTAssertEqual(retried["run"] as? Int, 2)
        XCTAssertEqual(retried["finished_prompts"] as? Int, 64)
        let events = try XCTUnwrap(try install.cli(["show", "1", "--json"]).json?["events"] as? [[String: Any]])
        XCTAssertEqual(events.compactMap { $0["to"] as? String }, ["queued", "running", "cancelled", "queued", "running", "succeeded"])
        XCTAssertEqual(try install.cli(["retry", "3"]).status, 0)
        XCTAssertEqual(try install.cli(["watch", "3", "--timeout", "60"]).status, 0)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    func testPriorityThenAge() throws {
        let install = try Installation()
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        // Recorded in name order at the first scan: a, b, c, d.
        try install.drop("a.yaml", jobYAML(priority: 0))
        try install.drop("b.yaml", jobYAML(priority: 5))
        try install.drop("c.yaml", jobYAML(priority: 0))
        try install.drop("d.yaml", jobYAML(priority: 9))
        try install.start()
        try waitFor("all done", timeout: 30) { try install.jobs().allSatisfy { $0["state"] as? String == "succeeded" } }
        XCTAssertEqual(install.stop(SIGINT), 0, "SIGINT stops as gracefully as SIGTERM")
        let limited = try install.cli(["jobs", "--limit", "2", "--json"])
        XCTAssertEqual((limited.json?["jobs"] as? [[String: Any]])?.compactMap { $0["id"] as? Int }, [4, 3])
        XCTAssertEqual(try install.cli(["jobs", "--state", "succeeded"]).stdout.split(separator: "\n").count, 5)
        let order = try DatabaseQueue(path: install.database.path).read { db in
            try String.fetchAll(db, sql: "SELECT j.source FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.to_state = 'running' ORDER BY e.id")
        }
        XCTAssertEqual(order, ["d.yaml", "b.yaml", "a.yaml", "c.yaml"])
    }

    func testSecondDaemonRefusesAndReadersNeverSeeLocked() throws {
        let install = try Installation()
        try install.start()
        let second = try install.cli(["serve"])
        XCTAssertEqual(second.status, 1)
        XCTAssertTrue(second.stderr.contains("already uses the state directory"), second.stderr)
        let run = try install.cli(["run", Paths.jobs.appendingPathComponent("autoregressive.yaml").path])
        XCTAssertEqual(run.status, 1)
        XCTAssertTrue(run.stderr.contains("layerskip submit"), run.stderr)

        for i in 0..<12 { try install.drop("job-\(i).yaml", jobYAML(prompts: 4, tokens: 40, promptPrefix: "Reader \(i)")) }
        // `@unchecked Sendable`: every field is read and written under `lock`.
        final class Failures: @unchecked Sendable {
            let lock = NSLock()
            var list: [String] = []
            var reads = 0
            func add(_ s: String?) { lock.lock(); if let s { list.append(s) }; reads += 1; lock.unlock() }
        }
        let failures = Failures()
        let deadline = Date().addingTimeInterval(4)
        let configPath = install.config.path
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            while Date() < deadline {
                for args in [["jobs", "--json"], ["stats", "--json"], ["show", "1", "--json"], ["cancel", "999"]] {
                    guard let r = try? Installation.run(args + ["--config", configPath]) else { failures.add("spawn failed"); continue }
                    let ok = args[0] == "cancel" ? r.status == 3 : r.status == 0
                    failures.add(ok && !r.stderr.contains("locked") ? nil : "\(args): \(r.status) \(r.stderr)")
                }
            }
        }
        XCTAssertEqual(failures.list, [])
        XCTAssertGreaterThan(failures.reads, 20)
        try waitFor("all jobs done", timeout: 60) { try install.jobs().allSatisfy { $0["state"] as? String == "succeeded" } }
        XCTAssertFalse(install.lastLog.contains("locked"), install.lastLog)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }
}
