#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import XCTest

final class CrashSafetyTests: XCTestCase {
    /// SIGKILL the daemon at random moments while it works through 24 jobs, restarting it each
    /// time; then every file has exactly one job, every job is final, no prompt was finished twice,
    /// the database is intact and incoming/ is empty.
    func testRandomKillsLoseNothingAndRepeatNothing() throws {
        let install = try Installation()
        var rng = SystemRandomNumberGenerator()
        let total = 24
        var dropped = 0
        let files = (0..<total).map { i in
            (name: String(format: "job-%02d.yaml", i),
             yaml: jobYAML(strategy: i % 2 == 0 ? "autoregressive" : "{name: early-exit, exit_layer: 2}",
                           prompts: 4, tokens: 120, extra: "max_attempts: 50", promptPrefix: "Job \(i) prompt"))
        }
        func dropSome(_ n: Int) throws {
            for _ in 0..<n where dropped < total {
                try install.drop(files[dropped].name, files[dropped].yaml)
                dropped += 1
            }
        }
        try FileManager.default.createDirectory(at: install.incoming, withIntermediateDirectories: true)
        try dropSome(8)
        var kills = 0
        while kills < 12 {
            try install.start(waitReady: kills % 3 != 2)  // sometimes killed before it is even ready
            try dropSome(2)
            Thread.sleep(forTimeInterval: Double.random(in: 0.02...0.35, using: &rng))
            XCTAssertEqual(install.stop(SIGKILL), -SIGKILL)
            kills += 1
        }
        try dropSome(total)
        try install.start()
        try waitFor("every job final", timeout: 120, interval: 0.2) {
            let jobs = try install.jobs()
            return jobs.count == total && jobs.allSatisfy { ["succeeded", "failed", "cancelled", "rejected"].contains($0["state"] as? String ?? "") }
        }
        XCTAssertEqual(install.stop(SIGTERM), 0)

        let jobs = try install.jobs()
        XCTAssertEqual(jobs.count, total)
        let sources = jobs.compactMap { $0["source"] as? String }
        XCTAssertEqual(Set(sources).count, total, "each spool file has exactly one job")
        XCTAssertEqual(Set(sources), Set((0..<total).map { String(format: "job-%02d.yaml", $0) }))
        XCTAssertTrue(jobs.allSatisfy { $0["state"] as? String == "succeeded" }, "\(jobs.map { ($0["id"]!, $0["state"]!, $0["error"] ?? "") })")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.incoming.path), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.accepted.path).count, total)

        let db = try DatabaseQueue(path: install.database.path)
        try db.read { db in
            XCTAssertEqual(try String.fetchOne(db, sql: "PRAGMA integrity_check"), "ok")
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM outputs"), total * 4, "every prompt finished once")
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM outputs GROUP BY job_id, run, idx)"), 1)
            XCTAssertEqual(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE intake_pending = 1"), 0)
            // Each job reached `succeeded` exactly once.
            XCTAssertEqual(try Int.fetchAll(db, sql: "SELECT COUNT(*) FROM events WHERE to_state = 'succeeded' GROUP BY job_id"),
                           Array(repeating: 1, count: total))
        }
        // Batched, killed and resumed, every output is what a clean one-at-a-time run produces.
        let clean = try soloTexts(files)
        for job in jobs {
            let source = job["source"] as! String
            XCTAssertEqual(try outputs(install, job["id"] as! Int), clean[source], source)
        }
        let interrupted = try db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM events WHERE note LIKE 'the daemon stopped during%'") } ?? 0
        print("crash test: \(kills) kills, \(interrupted) interrupted runs recovered")
    }
}
