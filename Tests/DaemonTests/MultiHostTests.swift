#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// Several `serve` processes (each with its own state directory and spool: its own "host") on
/// one PostgreSQL queue, with the real binary.
final class MultiHostTests: XCTestCase {
    func hosts(_ n: Int, url: String, lease: Double = 3, extra: String = "", name: String = #function) throws -> [Installation] {
        try (0..<n).map { i in
            try Installation(name: "\(name)-host\(i)", extraConfig: """
                store: {postgresql: "\(url)"}
                lease_seconds: \(lease)
                worker_name: host\(i)
                \(extra)
                """)
        }
    }

    func count(_ url: String, _ sql: String) throws -> Int { Int(try TestPostgres.psql(url, sql)) ?? -1 }

    /// Every job final exactly once, every prompt committed once, texts as a clean single-host run.
    func checkExactlyOnce(_ url: String, _ install: Installation, files: [(name: String, yaml: String)], prompts: Int,
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let jobs = try install.jobs()
        XCTAssertEqual(jobs.count, files.count, file: file, line: line)
        XCTAssertEqual(Set(jobs.compactMap { $0["source"] as? String }), Set(files.map(\.name)), "one job per file", file: file, line: line)
        XCTAssertTrue(jobs.allSatisfy { $0["state"] as? String == "succeeded" },
                      "\(jobs.map { ($0["id"]!, $0["state"]!, $0["error"] ?? "") })", file: file, line: line)
        XCTAssertEqual(try count(url, "SELECT COUNT(*) FROM outputs"), files.count * prompts, "every prompt finished", file: file, line: line)
        XCTAssertEqual(try count(url, "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM outputs GROUP BY job_id, run, idx) c"), 1,
                       "no prompt committed twice", file: file, line: line)
        XCTAssertEqual(try count(url, "SELECT COUNT(*) FROM (SELECT job_id FROM events WHERE to_state = 'succeeded' GROUP BY job_id HAVING COUNT(*) = 1) c"),
                       files.count, "each job succeeded exactly once", file: file, line: line)
        let clean = try soloTexts(files)
        for job in jobs {
            let source = job["source"] as! String
            XCTAssertEqual(try outputs(install, job["id"] as! Int), clean[source], source, file: file, line: line)
        }
    }

    /// 3 daemons, 30 jobs dropped into their three spools, 15 SIGKILLs at random moments across
    /// them (each restarted): nothing lost, nothing doubled, outputs as a clean run.
    func testRandomKillsAcrossThreeHostsLoseNothingAndRepeatNothing() throws {
        let url = try TestPostgres.freshDatabase()
        // Small batches and long outputs, so that most kills land in the middle of a job.
        let hosts = try self.hosts(3, url: url, extra: "max_batch: 2")
        var rng = SystemRandomNumberGenerator()
        let files = (0..<30).map { i in
            (name: String(format: "job-%02d.yaml", i),
             yaml: jobYAML(strategy: i % 3 == 0 ? "{name: early-exit, exit_layer: 2}" : "autoregressive",
                           prompts: 5, tokens: 250, extra: "max_attempts: 50", promptPrefix: "Job \(i) prompt"))
        }
        for h in hosts { try FileManager.default.createDirectory(at: h.incoming, withIntermediateDirectories: true) }
        var dropped = 0
        func dropSome(_ n: Int) throws {
            for _ in 0..<n where dropped < files.count {
                try hosts[dropped % 3].drop(files[dropped].name, files[dropped].yaml)
                dropped += 1
            }
        }
        try dropSome(9)
        for h in hosts { try h.start() }
        var kills = 0
        while kills < 15 {
            let i = Int.random(in: 0..<3, using: &rng)
            let h = hosts[i]
            // Mostly while it runs a job (up to 1.5 s of waiting for one), at a random moment.
            let deadline = Date().addingTimeInterval(1.5)
            while Date() < deadline, try count(url, "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND worker = 'host\(i)'") == 0 {
                Thread.sleep(forTimeInterval: 0.05)
            }
            // Short, so that a fast machine does not finish the job first (3 prompts and up to 0.3 s
            // let 6 of 15 kills land on a Zen 5).
            Thread.sleep(forTimeInterval: Double.random(in: 0...0.15, using: &rng))
            XCTAssertEqual(h.stop(SIGKILL), -SIGKILL)
            kills += 1
            try dropSome(2)
            try h.start(waitReady: kills % 4 != 3)  // sometimes killed again before it is ready
        }
        try dropSome(files.count)
        for h in hosts where h.daemon == nil { try h.start() }
        try waitFor("every job final", timeout: 240, interval: 0.25) {
            let jobs = try hosts[0].jobs()
            return jobs.count == files.count && jobs.allSatisfy { ["succeeded", "failed", "cancelled", "rejected"].contains($0["state"] as? String ?? "") }
        }
        for h in hosts {
            // The last one restarted may still be starting (it was not waited for).
            try h.waitUntilReady()
            XCTAssertEqual(h.stop(SIGTERM), 0, h.lastLog)
        }
        try checkExactlyOnce(url, hosts[1], files: files, prompts: 5)
        let ran = try TestPostgres.psql(url, "SELECT DISTINCT worker FROM events WHERE to_state = 'running' ORDER BY worker")
        XCTAssertEqual(ran.split(separator: "\n"), ["host0", "host1", "host2"], "every host ran jobs")
        let recovered = try count(url, "SELECT COUNT(*) FROM events WHERE note LIKE 'the daemon stopped during%' OR note LIKE 'the lease of%'")
        print("multi-host crash test: \(kills) kills, \(recovered) interrupted attempts put back")
        // Each kill waits for a running job on its host, but a short job may end first: at least half
        // of them must land inside one (seen: 9 to 15 of 15).
        XCTAssertGreaterThanOrEqual(recovered, kills / 2, "the kills interrupted running jobs")
    }

    /// A daemon stopped (SIGSTOP) mid-job past its lease: another daemon takes the job over and
    /// finishes it; when the first resumes, its late writes are refused and the job stays
    /// finished once.
    func testAPausedDaemonsLateWritesAreRefused() throws {
        let url = try TestPostgres.freshDatabase()
        let hosts = try self.hosts(2, url: url, lease: 2, extra: "max_batch: 1")
        let (a, b) = (hosts[0], hosts[1])
        let prompts = 40
        let files = [(name: "long.yaml", yaml: jobYAML(prompts: prompts, tokens: 200, extra: "max_attempts: 5"))]
        try FileManager.default.createDirectory(at: a.incoming, withIntermediateDirectories: true)
        try a.drop(files[0].name, files[0].yaml)
        let paused = try a.start()
        try waitFor("the first outputs on host0", timeout: 60) { try self.count(url, "SELECT COUNT(*) FROM outputs") >= 2 }
        kill(paused.processIdentifier, SIGSTOP)
        let before = try count(url, "SELECT COUNT(*) FROM outputs")
        XCTAssertLessThan(before, prompts, "host0 was paused mid-job")
        try b.start()
        _ = try b.waitForJob(1, toBe: ["succeeded"], timeout: 120)
        kill(paused.processIdentifier, SIGCONT)
        try waitFor("host0 to notice it lost the job", timeout: 30) {
            a.lastLog.contains("lost its lease") || a.lastLog.contains("was taken from this worker")
        }
        Thread.sleep(forTimeInterval: 1)
        let job = try b.job(1)
        XCTAssertEqual(job["state"] as? String, "succeeded")
        XCTAssertEqual(job["worker"] as? String, "host1")
        XCTAssertEqual(job["attempts"] as? Int, 2)
        XCTAssertEqual(a.stop(SIGTERM), 0, a.lastLog)
        XCTAssertEqual(b.stop(SIGTERM), 0, b.lastLog)
        try checkExactlyOnce(url, b, files: files, prompts: prompts)
        XCTAssertEqual(try count(url, "SELECT COUNT(DISTINCT attempt) FROM outputs"), 2, "outputs of both attempts, each prompt once")
    }

    /// PostgreSQL restarts mid-run (every connection is cut): the daemons reconnect and finish,
    /// nothing lost or doubled.
    func testDaemonsRideOutAServerRestart() throws {
        let url = try TestPostgres.freshDatabase()
        guard TestPostgres.clusterDirectory != nil else { throw XCTSkip("LAYERSKIP_TEST_POSTGRES_DIR is not set") }
        let hosts = try self.hosts(2, url: url, lease: 10, extra: "max_batch: 2\nretry_backoff_seconds: 0.5")
        let files = (0..<10).map { i in (name: "job-\(i).yaml", yaml: jobYAML(prompts: 3, tokens: 150, extra: "max_attempts: 20", promptPrefix: "R\(i)")) }
        for (i, f) in files.enumerated() {
            try FileManager.default.createDirectory(at: hosts[i % 2].incoming, withIntermediateDirectories: true)
            try hosts[i % 2].drop(f.name, f.yaml)
        }
        for h in hosts { try h.start() }
        try waitFor("the first outputs", timeout: 60) { try self.count(url, "SELECT COUNT(*) FROM outputs") >= 2 }
        try TestPostgres.restartServer()
        var jobs: [[String: Any]] = []
        do {
            try waitFor("every job final", timeout: 180, interval: 0.25) {
                jobs = (try? hosts[0].jobs()) ?? jobs
                return jobs.count == files.count && jobs.allSatisfy { ["succeeded", "failed", "cancelled"].contains($0["state"] as? String ?? "") }
            }
        } catch {
            let states = jobs.map { "\($0["id"] ?? "?") \($0["state"] ?? "?") \($0["worker"] ?? "-") \($0["error"] ?? "")" }
            XCTFail("\(error); jobs: \(states)\n" + hosts.map { "\($0.root.lastPathComponent)'s log:\n\($0.lastLog.suffix(6000))" }.joined(separator: "\n"))
            throw error
        }
        for h in hosts { XCTAssertEqual(h.stop(SIGTERM), 0, h.lastLog) }
        try checkExactlyOnce(url, hosts[0], files: files, prompts: 3)
    }

    /// One daemon in a network namespace of its own (its own "host"), cut off from the database
    /// by taking its link down: it stops claiming; its jobs' leases expire and the other daemon
    /// finishes them; when the link is back it drops the work it lost, and rejoins (runs new jobs).
    func testACutOffDaemonIsReplacedAndRejoins() throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip") else {
            throw XCTSkip("needs root and iproute2 (ip netns) for a network namespace")
        }
        let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"
        let url = try TestPostgres.freshDatabase()
        guard let port = TestPostgres.port else { throw XCTSkip("LAYERSKIP_TEST_POSTGRES_DIR is not set") }
        let tag = String(UInt32.random(in: 0..<0xFFFF), radix: 16)
        let (ns, outside, inside) = ("lsk\(tag)", "lskh\(tag)", "lskn\(tag)")
        let subnet = Int.random(in: 1...250)
        let (hostAddress, nsAddress) = ("10.231.\(subnet).1", "10.231.\(subnet).2")
        func run(_ args: [String]) throws { XCTAssertEqual(try TestPostgres.spawnAndWait(ip, args), 0, "ip \(args.joined(separator: " "))") }
        try run(["netns", "add", ns])
        defer {
            _ = try? TestPostgres.spawnAndWait(ip, ["link", "del", outside])
            _ = try? TestPostgres.spawnAndWait(ip, ["netns", "del", ns])
            try? TestPostgres.restartServer()
        }
        try run(["link", "add", outside, "type", "veth", "peer", "name", inside])
        try run(["link", "set", inside, "netns", ns])
        try run(["addr", "add", "\(hostAddress)/30", "dev", outside])
        try run(["link", "set", outside, "up"])
        try run(["netns", "exec", ns, ip, "addr", "add", "\(nsAddress)/30", "dev", inside])
        try run(["netns", "exec", ns, ip, "link", "set", inside, "up"])
        try run(["netns", "exec", ns, ip, "link", "set", "lo", "up"])
        try TestPostgres.allow("10.231.0.0/16")
        try TestPostgres.restartServer(listen: "127.0.0.1,\(hostAddress)")

        let database = String(url[url.index(after: url.lastIndex(of: "/")!)...])
        let cutURL = "postgresql://layerskip@\(hostAddress):\(port)/\(database)"
        let a = try Installation(name: "cutoff-host0", extraConfig: "store: {postgresql: \"\(cutURL)\"}\nlease_seconds: 3\nworker_name: host0\nmax_batch: 2")
        let b = try hosts(2, url: url, lease: 3, extra: "max_batch: 2")[1]
        let files = (0..<8).map { i in (name: "job-\(i).yaml", yaml: jobYAML(prompts: 4, tokens: 250, extra: "max_attempts: 20", promptPrefix: "C\(i)")) }
        try FileManager.default.createDirectory(at: a.incoming, withIntermediateDirectories: true)
        for f in files.prefix(6) { try a.drop(f.name, f.yaml) }
        try a.start(launcher: [ip, "netns", "exec", ns])
        try waitFor("host0 to run jobs", timeout: 60) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND worker = 'host0'") >= 1
        }
        try b.start()
        try run(["link", "set", outside, "down"])
        let cutAt = Date()
        let heldByA = try TestPostgres.psql(url, "SELECT id FROM jobs WHERE state = 'running' AND worker = 'host0' ORDER BY id").split(separator: "\n")
        _ = try waitFor("host1 to finish every job", timeout: 120, interval: 0.25) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'") == 6
        }
        XCTAssertGreaterThan(Date().timeIntervalSince(cutAt), 2.5, "host0's jobs waited for their leases to expire")
        for id in heldByA {
            XCTAssertEqual(try TestPostgres.psql(url, "SELECT worker FROM jobs WHERE id = \(id)"), "host1", "job \(id) was finished by host1")
        }
        try run(["link", "set", outside, "up"])
        do {
            try waitFor("host0 to notice it lost its jobs", timeout: 60) {
                a.lastLog.contains("lost its lease") || a.lastLog.contains("was taken from this worker")
            }
        } catch {
            XCTFail("\(error); host0's log:\n\(a.lastLog.suffix(4000))")
            throw error
        }
        // Rejoined: with host1 stopped, host0 alone runs the next jobs.
        XCTAssertEqual(b.stop(SIGTERM), 0, b.lastLog)
        for f in files.suffix(2) { try a.drop(f.name, f.yaml) }
        try waitFor("host0 to run the new jobs", timeout: 120, interval: 0.25) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'") == 8
        }
        XCTAssertEqual(try TestPostgres.psql(url, "SELECT DISTINCT worker FROM jobs WHERE source IN ('job-6.yaml', 'job-7.yaml')"), "host0")
        XCTAssertEqual(a.stop(SIGTERM), 0, a.lastLog)
        try checkExactlyOnce(url, b, files: files, prompts: 4)
    }

    /// Two daemons on one spool folder (as on a network filesystem): every file dropped becomes
    /// exactly one job, taken in by one of them, and ends in accepted/.
    func testTwoDaemonsOnOneSpoolMakeOneJobPerFile() throws {
        let url = try TestPostgres.freshDatabase()
        let a = try Installation(name: "sharedspool-host0", extraConfig: "store: {postgresql: \"\(url)\"}\nworker_name: host0")
        let b = try Installation(name: "sharedspool-host1", extraConfig: "store: {postgresql: \"\(url)\"}\nworker_name: host1",
                                 spoolDirectory: a.spool)
        try a.start()
        try b.start()
        let files = (0..<40).map { i in (name: "shared-\(i).yaml", yaml: jobYAML(tokens: 4, promptPrefix: "S\(i)")) }
        for f in files { try a.drop(f.name, f.yaml) }
        try waitFor("every file taken in and run", timeout: 120, interval: 0.25) {
            let jobs = try a.jobs()
            return jobs.count >= files.count && jobs.allSatisfy { $0["state"] as? String == "succeeded" }
        }
        Thread.sleep(forTimeInterval: 1)  // a second job for some file would show up by now
        XCTAssertEqual(a.stop(SIGTERM), 0, a.lastLog)
        XCTAssertEqual(b.stop(SIGTERM), 0, b.lastLog)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: a.incoming.path), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: a.accepted.path).sorted(), files.map(\.name).sorted())
        let claimed = a.spool.appendingPathComponent("claimed")
        for folder in try FileManager.default.contentsOfDirectory(atPath: claimed.path) {
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: claimed.appendingPathComponent(folder).path), [], folder)
        }
        XCTAssertEqual(try count(url, "SELECT COUNT(DISTINCT intake_key) FROM jobs"), files.count)
        print("shared spool: intake by \(try TestPostgres.psql(url, "SELECT intake_worker, COUNT(*) FROM jobs GROUP BY intake_worker ORDER BY 1").replacingOccurrences(of: "\n", with: "; "))")
        try checkExactlyOnce(url, a, files: files, prompts: 1)
    }

    /// The operator's view: `workers` lists the live daemon (JSON for scripts) and then the
    /// stopped one; the metrics textfile is well-formed Prometheus text with the job counts.
    func testWorkersCommandAndMetricsTextfile() throws {
        let url = try TestPostgres.freshDatabase()
        let host = try Installation(name: "metrics-host0", extraConfig: """
            store: {postgresql: "\(url)"}
            worker_name: host0
            lease_seconds: 3
            metrics_textfile: metrics/layerskip.prom
            """)
        try FileManager.default.createDirectory(at: host.root.appendingPathComponent("metrics"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: host.incoming, withIntermediateDirectories: true)
        try host.drop("m.yaml", jobYAML(prompts: 2, tokens: 16))
        try host.start()
        _ = try host.waitForJob(1, toBe: ["succeeded"])
        let metrics = host.root.appendingPathComponent("metrics/layerskip.prom")
        var text = ""
        try waitFor("the metrics file to count the job", timeout: 20, interval: 0.2) {
            text = (try? String(contentsOf: metrics, encoding: .utf8)) ?? ""
            return text.contains("layerskip_jobs{state=\"succeeded\"} 1")
        }
        for name in ["jobs", "queue_depth", "in_flight_jobs", "sequences", "tokens_per_second", "generated_tokens_total",
                     "acceptance_ratio", "average_batch_size", "lease_renewals_total", "lease_expiries_total"] {
            XCTAssertTrue(text.contains("# TYPE layerskip_\(name) "), name)
        }
        XCTAssertTrue(text.contains("layerskip_generated_tokens_total{worker=\"host0\"} 32"), text)
        // Every sample line is NAME{LABELS} NUMBER.
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            XCTAssertNotNil(line.range(of: #"^layerskip_[a-z_]+(\{[a-z_]+="[^"]*"\})? [-+0-9.eEInfNa]+$"#, options: .regularExpression), String(line))
        }
        let live = try host.cli(["workers", "--json"])
        XCTAssertEqual(live.status, 0, live.stderr)
        let workers = try XCTUnwrap(live.json?["workers"] as? [[String: Any]])
        XCTAssertEqual(workers.map { $0["name"] as? String }, ["host0"])
        XCTAssertEqual(workers.first?["status"] as? String, "live")
        XCTAssertLessThan(workers.first?["heartbeat_age"] as? Double ?? 99, 10)
        let table = try host.cli(["workers"])
        XCTAssertTrue(table.stdout.contains("host0") && table.stdout.contains("live"), table.stdout)
        XCTAssertEqual(host.stop(SIGTERM), 0, host.lastLog)
        XCTAssertEqual(try host.cli(["workers", "--json"]).json?["workers"] as? [[String: Any]] as? NSArray, [], "a stopped daemon is not live")
        let all = try XCTUnwrap(try host.cli(["workers", "--all", "--json"]).json?["workers"] as? [[String: Any]])
        XCTAssertEqual(all.first?["status"] as? String, "stopped")
        let shown = try host.cli(["show", "1"])
        XCTAssertTrue(shown.stdout.contains("worker") && shown.stdout.contains("on host0"), shown.stdout)
    }

    /// `run` against a shared store: a daemon elsewhere may take some of its jobs; `run` waits
    /// until every one of them is final and reports them all.
    func testRunOnASharedStoreWaitsForJobsOthersTake() throws {
        let url = try TestPostgres.freshDatabase()
        let hosts = try self.hosts(2, url: url, extra: "max_batch: 1")
        try hosts[1].start()
        let dir = hosts[0].root.appendingPathComponent("jobs")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var paths: [String] = []
        for i in 0..<24 {
            let file = dir.appendingPathComponent("r\(i).yaml")
            try jobYAML(prompts: 4, tokens: 250, promptPrefix: "Run \(i)").write(to: file, atomically: true, encoding: .utf8)
            paths.append(file.path)
        }
        let run = try hosts[0].cli(["run", "--json"] + paths)
        XCTAssertEqual(run.status, 0, run.stderr)
        let jobs = try XCTUnwrap(run.json?["jobs"] as? [[String: Any]], run.stdout)
        XCTAssertEqual(jobs.count, 24)
        XCTAssertTrue(jobs.allSatisfy { $0["state"] as? String == "succeeded" }, run.stdout)
        XCTAssertEqual(hosts[1].stop(SIGTERM), 0, hosts[1].lastLog)
        XCTAssertGreaterThanOrEqual(try count(url, "SELECT COUNT(*) FROM jobs WHERE worker = 'host1'"), 1, "the other daemon took some")
        print("run on a shared store: jobs by worker: \(try TestPostgres.psql(url, "SELECT worker, COUNT(*) FROM jobs GROUP BY worker ORDER BY 1").replacingOccurrences(of: "\n", with: "; "))")
    }

    /// Models per host: a job is claimed only by a daemon whose config has its model in the same
    /// weights, whatever spool it came in through; and the content-hash rule holds across hosts.
    func testJobsGoOnlyToHostsWithTheirModelAndTheHashRuleHoldsAcrossHosts() throws {
        let url = try TestPostgres.freshDatabase()
        // host0 runs one sequence at a time, so its jobs sit queued while host1 is idle: host1
        // would take them if it could.
        let stored = try Installation(name: "models-host0", extraConfig: "store: {postgresql: \"\(url)\"}\nworker_name: host0\nmax_batch: 1")
        let int8 = try Installation(name: "models-host1", extraConfig: "store: {postgresql: \"\(url)\"}\nworker_name: host1",
                                    tinyEntry: "{path: \(Paths.tinyModel.path), weights: int8}")
        for h in [stored, int8] { try FileManager.default.createDirectory(at: h.incoming, withIntermediateDirectories: true) }
        for i in 0..<4 {
            try stored.drop("s\(i).yaml", jobYAML(prompts: 3, tokens: 250, promptPrefix: "S\(i)"))
            try int8.drop("q\(i).yaml", jobYAML(tokens: 6, promptPrefix: "Q\(i)"))
        }
        try int8.start()
        try waitFor("host1's own jobs", timeout: 60, interval: 0.2) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE source LIKE 'q%' AND state = 'succeeded'") == 4
        }
        try stored.start()
        try waitFor("host0's jobs", timeout: 120, interval: 0.2) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'") == 8
        }
        XCTAssertEqual(try TestPostgres.psql(url, "SELECT DISTINCT worker FROM jobs WHERE source LIKE 's%'"), "host0")
        XCTAssertEqual(try TestPostgres.psql(url, "SELECT DISTINCT worker FROM jobs WHERE source LIKE 'q%'"), "host1")
        XCTAssertEqual(try TestPostgres.psql(url, "SELECT DISTINCT model_key FROM jobs WHERE source LIKE 'q%'"), "tiny@int8")
        // The same name and content again, on the other host: not run a second time.
        try int8.drop("s0.yaml", jobYAML(prompts: 3, tokens: 250, promptPrefix: "S0"))
        try waitFor("the resubmission to be recorded", timeout: 30, interval: 0.2) {
            try self.count(url, "SELECT COUNT(*) FROM jobs WHERE source = 's0.yaml'") == 2
        }
        XCTAssertEqual(try TestPostgres.psql(url, "SELECT state FROM jobs WHERE source = 's0.yaml' ORDER BY id"), "succeeded\nrejected")
        XCTAssertTrue(FileManager.default.fileExists(atPath: int8.rejected.appendingPathComponent("s0.yaml.error").path))
        for h in [stored, int8] { XCTAssertEqual(h.stop(SIGTERM), 0, h.lastLog) }
    }
}
