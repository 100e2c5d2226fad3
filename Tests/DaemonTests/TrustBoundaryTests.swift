#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GRDB
import XCTest

/// Issue defects 6–9 and 11: what a member of the spool group can make the daemon read, write
/// or print, and the state directory's own edges. All through the real binary.
final class TrustBoundaryTests: XCTestCase {
    /// Defect 8: a spooled job names nothing outside its own spool folder. The answer is the same
    /// whether the named file exists or not, and never quotes it.
    func testSpooledJobsReadNothingOutsideTheirFolder() throws {
        let install = try Installation()
        try install.start()
        let outside = install.root.appendingPathComponent("outside.jsonl")
        try #"{"id": "secret", "text": "the daemon must not read this"}"#.write(to: outside, atomically: true, encoding: .utf8)
        let paths = ["/etc/shadow", "/etc/passwd", "../../../../etc/passwd", "/proc/self/status", outside.path,
                     "../outside.jsonl", "/nonexistent/x.jsonl", "sub/../x.jsonl"]
        for (i, path) in paths.enumerated() {
            try install.drop("pf\(i).yaml", "model: tiny\nprompts_file: \(path)\n")
        }
        // Models outside the configured names: an existing folder and a missing one read the same.
        try install.drop("model-path.yaml", jobYAML().replacingOccurrences(of: "model: tiny", with: "model: \(Paths.tinyModel.path)"))
        try install.drop("model-missing.yaml", jobYAML().replacingOccurrences(of: "model: tiny", with: "model: /nonexistent/model"))
        try install.drop("model-relative.yaml", jobYAML().replacingOccurrences(of: "model: tiny", with: "model: ../../\(Paths.tinyModel.lastPathComponent)"))
        // A prompts file in the job's own folder, under an ignored name, is fine.
        try #"{"id": "mine", "text": "Hello"}"#.write(to: install.incoming.appendingPathComponent(".mine.jsonl"), atomically: true, encoding: .utf8)
        try install.drop("own.yaml", "model: tiny\nmax_new_tokens: 4\nprompts_file: .mine.jsonl\n")
        // …but not through a symbolic link to somewhere else.
        try FileManager.default.createSymbolicLink(atPath: install.incoming.appendingPathComponent(".link.jsonl").path, withDestinationPath: outside.path)
        try install.drop("link.yaml", "model: tiny\nprompts_file: .link.jsonl\n")

        let total = paths.count + 5
        try waitFor("every job taken in", timeout: 30) { try install.jobs().count == total }
        let jobs = try install.jobs()
        func job(_ source: String) -> [String: Any] { jobs.first { $0["source"] as? String == source } ?? [:] }
        var messages: [String] = []
        for i in paths.indices {
            XCTAssertEqual(job("pf\(i).yaml")["state"] as? String, "rejected", paths[i])
            let error = try String(contentsOf: install.rejected.appendingPathComponent("pf\(i).yaml.error"), encoding: .utf8)
            XCTAssertFalse(error.contains("root:"), error)
            XCTAssertFalse(error.contains("secret") || error.contains("must not read"), error)
            XCTAssertTrue(error.contains("prompts_file: expected a file name in the job's own spool folder"), error)
            messages.append(error.replacingOccurrences(of: paths[i], with: "PATH").replacingOccurrences(of: "pf\(i).yaml", with: "NAME")
                .replacingOccurrences(of: "job \(job("pf\(i).yaml")["id"] as? Int ?? 0)", with: "job N"))
        }
        XCTAssertEqual(Set(messages).count, 1, "the answer differs between paths: \(Set(messages))")
        let modelErrors = try ["model-path.yaml", "model-missing.yaml", "model-relative.yaml"].map { name -> String in
            XCTAssertEqual(job(name)["state"] as? String, "rejected", name)
            return try String(contentsOf: install.rejected.appendingPathComponent(name + ".error"), encoding: .utf8)
        }
        for e in modelErrors { XCTAssertTrue(e.contains("spooled jobs may name only these"), e) }
        XCTAssertEqual(job("link.yaml")["state"] as? String, "rejected")
        let linkError = try String(contentsOf: install.rejected.appendingPathComponent("link.yaml.error"), encoding: .utf8)
        XCTAssertTrue(linkError.contains("is a symbolic link"), linkError)
        XCTAssertFalse(linkError.contains("secret"), linkError)

        let own = try XCTUnwrap(job("own.yaml")["id"] as? Int)
        XCTAssertEqual(try install.waitForJob(own, toBe: ["succeeded"])["state"] as? String, "succeeded")
        let result = try install.cli(["result", String(own), "--jsonl"])
        XCTAssertEqual(result.jsonLines.first?["id"] as? String, "mine")
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// `submit` reads a prompts file with the user's rights and spools its prompts, and refuses a
    /// model folder the daemon would refuse, with the daemon's message.
    func testSubmitInlinesPromptsFileAndChecksTheModel() throws {
        let install = try Installation()
        try install.start()
        let dir = install.root.appendingPathComponent("mine")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try "{\"id\": \"a\", \"text\": \"Hello\"}\n{\"id\": \"b\", \"text\": \"World\"}\n".write(to: dir.appendingPathComponent("p.jsonl"), atomically: true, encoding: .utf8)
        try "model: tiny\nmax_new_tokens: 3\nprompts_file: p.jsonl\n".write(to: dir.appendingPathComponent("job.yaml"), atomically: true, encoding: .utf8)
        let submitted = try install.cli(["submit", "--json", dir.appendingPathComponent("job.yaml").path])
        XCTAssertEqual(submitted.status, 0, submitted.stderr)
        let id = try XCTUnwrap(((submitted.json?["submitted"] as? [[String: Any]])?.first?["job_id"]) as? Int, submitted.stdout)
        XCTAssertEqual(try install.waitForJob(id, toBe: ["succeeded"])["state"] as? String, "succeeded")
        XCTAssertEqual(try install.cli(["result", String(id), "--jsonl"]).jsonLines.compactMap { $0["id"] as? String }, ["a", "b"])
        let stored = try FileManager.default.contentsOfDirectory(atPath: install.accepted.path)
        let text = try String(contentsOf: install.accepted.appendingPathComponent(try XCTUnwrap(stored.first)), encoding: .utf8)
        XCTAssertFalse(text.contains("prompts_file"), text)
        XCTAssertTrue(text.contains("World"), text)

        try "model: \(Paths.tinyModel.path)\nprompts: [x]\n".write(to: dir.appendingPathComponent("path.yaml"), atomically: true, encoding: .utf8)
        let refused = try install.cli(["submit", dir.appendingPathComponent("path.yaml").path])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("the daemon would refuse it"), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("model_directories"), refused.stderr)
        // `run` has the user's rights: the same file runs (once the daemon has let go of the state directory).
        XCTAssertEqual(install.stop(SIGTERM), 0)
        let run = try install.cli(["run", dir.appendingPathComponent("path.yaml").path])
        XCTAssertEqual(run.status, 0, run.stderr)
    }

    /// Found by this issue's own second attack: a name near NAME_MAX wedged the intake (the
    /// `.error` beside it could not be created, so the file stayed in incoming/ and was retried
    /// forever), and a hard link made the daemon read a file the submitter may not be able to read.
    func testLongNamesAndHardLinks() throws {
        let install = try Installation()
        try install.start()
        let private_ = install.root.appendingPathComponent("private.txt")
        try "secret_key: hunter2\n".write(to: private_, atomically: true, encoding: .utf8)
        XCTAssertEqual(link(private_.path, install.incoming.appendingPathComponent("hard.yaml").path), 0)
        try install.drop(String(repeating: "B", count: 252), "not: [yaml")
        try install.drop(String(repeating: "L", count: 250) + ".yaml", jobYAML(tokens: 2))
        try waitFor("all three taken in", timeout: 30) { try install.jobs().count == 3 }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.incoming.path), [])
        let hard = try String(contentsOf: install.rejected.appendingPathComponent("hard.yaml.error"), encoding: .utf8)
        XCTAssertTrue(hard.contains("has 2 hard links"), hard)
        XCTAssertFalse(hard.contains("secret_key"), hard)
        let long = try XCTUnwrap(try install.jobs().first { ($0["source"] as? String)?.hasPrefix("LLL") == true })
        XCTAssertEqual(try install.waitForJob(long["id"] as! Int, toBe: ["succeeded"])["state"] as? String, "succeeded")
        for name in try FileManager.default.contentsOfDirectory(atPath: install.rejected.path) + FileManager.default.contentsOfDirectory(atPath: install.accepted.path) {
            XCTAssertLessThanOrEqual(name.utf8.count, 255)
        }
        XCTAssertFalse(install.lastLog.contains("<3>"), install.lastLog)
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// Defect 6: a second daemon on the same spool (with its own state directory) is refused.
    func testSecondDaemonOnTheSameSpoolIsRefused() throws {
        let install = try Installation()
        try install.start()
        let other = install.root.appendingPathComponent("other.yaml")
        try """
            state_directory: state2
            spool_directory: spool
            models:
              tiny: \(Paths.tinyModel.path)
            """.write(to: other, atomically: true, encoding: .utf8)
        let second = try runBounded(["serve", "--config", other.path], timeout: 30)
        XCTAssertFalse(second.timedOut, second.summary)
        XCTAssertEqual(second.status, 1, second.summary)
        XCTAssertTrue(second.stderr.contains("already uses the spool"), second.stderr)
        // The first one still takes files in, once each.
        for i in 0..<5 { try install.drop("j\(i).yaml", jobYAML(tokens: 2)) }
        try waitFor("five jobs", timeout: 30) { try install.jobs().count == 5 }
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// Defect 7: symbolic links in the state directory and the spool are refused, never followed.
    func testSymlinksAreRefused() throws {
        let install = try Installation()
        let victim = install.root.appendingPathComponent("victim.txt")
        try "precious\n".write(to: victim, atomically: true, encoding: .utf8)
        let state = install.root.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: state.appendingPathComponent("serve.lock").path, withDestinationPath: victim.path)
        let locked = try runBounded(["serve", "--config", install.config.path], timeout: 30)
        XCTAssertEqual(locked.status, 1, locked.summary)
        XCTAssertTrue(locked.stderr.contains("symbolic link"), locked.stderr)
        XCTAssertEqual(try String(contentsOf: victim, encoding: .utf8), "precious\n")
        try FileManager.default.removeItem(at: state.appendingPathComponent("serve.lock"))

        // A spool folder that is a link at start: refused with a clear message.
        let elsewhere = install.root.appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: install.spool, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: install.accepted.path, withDestinationPath: elsewhere.path)
        let linked = try runBounded(["serve", "--config", install.config.path], timeout: 30)
        XCTAssertEqual(linked.status, 1, linked.summary)
        XCTAssertTrue(linked.stderr.contains("spool/accepted is a symbolic link"), linked.stderr)
        try FileManager.default.removeItem(at: install.accepted)

        // Replaced while serving: intake pauses with a log line and writes nothing through the link.
        try install.start()
        try install.drop("before.yaml", jobYAML(tokens: 2))
        try waitFor("before.yaml accepted", timeout: 20) { FileManager.default.fileExists(atPath: install.accepted.appendingPathComponent("before.yaml").path) }
        try FileManager.default.moveItem(at: install.rejected, to: install.spool.appendingPathComponent("rejected.old"))
        try FileManager.default.createSymbolicLink(atPath: install.rejected.path, withDestinationPath: elsewhere.path)
        try install.drop("bad.yaml", "not: [a job")
        try waitFor("the log line", timeout: 20) { install.lastLog.contains("spool/rejected was replaced by a symbolic link") }
        Thread.sleep(forTimeInterval: 1.5)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: elsewhere.path), [])
        XCTAssertTrue(FileManager.default.fileExists(atPath: install.incoming.appendingPathComponent("bad.yaml").path), "bad.yaml waits in incoming/")
        // Put back: intake resumes, and the file is rejected into the real folder.
        try FileManager.default.removeItem(at: install.rejected)
        try FileManager.default.moveItem(at: install.spool.appendingPathComponent("rejected.old"), to: install.rejected)
        try waitFor("bad.yaml rejected", timeout: 20) { FileManager.default.fileExists(atPath: install.rejected.appendingPathComponent("bad.yaml.error").path) }
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// Defect 9: control characters chosen by a submitter never reach the terminal raw; `--json` stays exact.
    func testTerminalEscapesAreShownEscaped() throws {
        let install = try Installation()
        try install.start()
        let evilName = "evil\u{1B}[31mred.yaml"
        let evilId = "x\u{1B}[2J\u{1B}]0;PWN\u{07}"
        try install.drop(evilName, "model: tiny\nmax_new_tokens: 2\nprompts:\n  - {id: \"x\\e[2J\\e]0;PWN\\a\", text: \"Hello\"}\n")
        try waitFor("the job", timeout: 20) { try install.jobs().count == 1 }
        let id = try XCTUnwrap(try install.jobs().first?["id"] as? Int)
        _ = try install.waitForJob(id, toBe: ["succeeded"])
        for args in [["jobs"], ["show", String(id)], ["result", String(id)]] {
            let r = try install.cli(args)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertFalse(r.stdout.contains("\u{1B}") || r.stdout.contains("\u{07}"), "\(args): \(r.stdout.debugDescription)")
        }
        XCTAssertTrue(try install.cli(["jobs"]).stdout.contains("evil\\x1B[31mred.yaml"))
        XCTAssertTrue(try install.cli(["result", String(id)]).stdout.contains("x\\x1B[2J\\x1B]0;PWN\\x07"))
        XCTAssertEqual(try install.cli(["jobs", "--json"]).json.flatMap { ($0["jobs"] as? [[String: Any]])?.first?["source"] as? String }, evilName)
        XCTAssertEqual(try install.cli(["result", String(id), "--jsonl"]).jsonLines.first?["id"] as? String, evilId)
        XCTAssertFalse(install.lastLog.contains("\u{1B}"), "the daemon log carries a raw escape")
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// Defect 11: the state directory's edges.
    func testStateDirectoryEdges() throws {
        let install = try Installation()
        // A read-only command on a missing state directory creates nothing.
        let jobs = try runBounded(["jobs", "--json", "--config", install.config.path])
        XCTAssertNotEqual(jobs.status, 0)
        XCTAssertTrue(jobs.stderr.contains("does not exist"), jobs.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: install.root.appendingPathComponent("state").path))

        // state_directory: "" is an error, not the config's folder.
        let empty = install.root.appendingPathComponent("empty.yaml")
        try "state_directory: \"\"\n".write(to: empty, atomically: true, encoding: .utf8)
        let e = try runBounded(["jobs", "--config", empty.path])
        XCTAssertEqual(e.status, 2, e.summary)
        XCTAssertTrue(e.stderr.contains("state_directory: expected a folder path, found an empty string"), e.stderr)

        // A budget far beyond any machine: an error naming the field, not a trap.
        let huge = install.root.appendingPathComponent("huge.yaml")
        try "state_directory: s\ncache_memory_budget: 9000000000000GiB\nmodel_memory_budget: 99999999TiB\n".write(to: huge, atomically: true, encoding: .utf8)
        let h = try runBounded(["serve", "--config", huge.path])
        XCTAssertNil(h.signal, h.summary)
        XCTAssertEqual(h.status, 2, h.summary)
        XCTAssertTrue(h.stderr.contains("cache_memory_budget: expected"), h.stderr)
        XCTAssertTrue(h.stderr.contains("model_memory_budget: expected"), h.stderr)

        // A state directory that is a file.
        let file = install.root.appendingPathComponent("state-file")
        try "x".write(to: file, atomically: true, encoding: .utf8)
        let fileConfig = install.root.appendingPathComponent("file.yaml")
        try "state_directory: state-file\n".write(to: fileConfig, atomically: true, encoding: .utf8)
        for command in [["serve"], ["jobs"]] {
            let r = try runBounded(command + ["--config", fileConfig.path])
            XCTAssertEqual(r.status, 1, r.summary)
            XCTAssertTrue(r.stderr.contains("state-file is a regular file, expected a directory"), r.stderr)
            XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain"), r.stderr)
        }

        // Created 0750 / 0640 whatever the umask.
        let old = umask(0)
        defer { umask(old) }
        try install.start()
        var st = stat()
        XCTAssertEqual(stat(install.root.appendingPathComponent("state").path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o750)
        XCTAssertEqual(stat(install.database.path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o640)
        XCTAssertEqual(install.stop(SIGTERM), 0)
        umask(old)

        // A damaged database is refused at start with quick_check's words: every page but the
        // schema's overwritten (after a checkpoint, so that the pages are in the file).
        try install.drop("one.yaml", jobYAML(tokens: 2))
        try install.start()
        try waitFor("a job", timeout: 30) { try install.jobs().first?["state"] as? String == "succeeded" }
        XCTAssertEqual(install.stop(SIGTERM), 0)
        try DatabaseQueue(path: install.database.path).writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
        let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: install.database.path)[.size] as? Int)
        XCTAssertGreaterThan(size, 4 * 4096)
        let handle = try FileHandle(forUpdating: install.database)
        for page in stride(from: 4096, to: size, by: 4096) {
            try handle.seek(toOffset: UInt64(page))
            handle.write(Data(repeating: 0xA5, count: 4096))
        }
        try handle.close()
        let damaged = try runBounded(["serve", "--config", install.config.path], timeout: 30)
        XCTAssertEqual(damaged.status, 1, damaged.summary)
        XCTAssertTrue(damaged.stderr.contains("is damaged (quick_check:"), damaged.stderr)
    }
}
