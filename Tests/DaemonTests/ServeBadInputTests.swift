#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// Every kind of bad input ends in rejected/ with a readable NAME.error, and the daemon keeps serving.
final class ServeBadInputTests: XCTestCase {
    func testBadFilesAreRejectedWithReadableErrorsWhileServing() throws {
        let install = try Installation(extraConfig: "max_job_file_bytes: 1MiB")
        try install.start()
        // name → (contents, text the .error must contain)
        let cases: [(String, String, String)] = [
            ("invalid.yaml", "model: [unclosed\nprompts: {", "valid YAML"),
            ("list.yaml", "- a\n- b\n", "(top level): expected a mapping"),
            ("unknown-key.yaml", jobYAML(extra: "temprature: 0.5"), "temprature: expected one of"),
            ("wrong-types.yaml", "model: tiny\nmax_new_tokens: lots\npriority: [1]\nprompts: [x]\n", "max_new_tokens: expected an integer"),
            ("no-prompts.yaml", "model: tiny\nstrategy: autoregressive\n", "prompts: expected a list of prompts"),
            ("exit-too-deep.yaml", jobYAML(strategy: "{name: self-speculative, exit_layer: 4, speculations: 3}"), "strategy.exit_layer"),
            ("unknown-model.yaml", jobYAML().replacingOccurrences(of: "model: tiny", with: "model: gpt-17"), "model: expected a model name"),
            ("unknown-strategy.yaml", jobYAML(strategy: "warp-drive"), "strategy.name: expected one of"),
            ("empty.yaml", "", "an empty file"),
        ]
        for (name, contents, _) in cases { try install.drop(name, contents) }
        // Binary garbage, a 50 MB file, a symlink, a directory, a name that is not UTF-8.
        var garbage = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) })
        garbage[10] = 0
        try garbage.write(to: install.root.appendingPathComponent("garbage.tmp"))
        try FileManager.default.moveItem(at: install.root.appendingPathComponent("garbage.tmp"), to: install.incoming.appendingPathComponent("garbage.yaml"))
        let big = install.root.appendingPathComponent("big.tmp")
        _ = FileManager.default.createFile(atPath: big.path, contents: nil)
        let handle = try FileHandle(forWritingTo: big)
        let chunk = Data(repeating: UInt8(ascii: "#"), count: 1 << 20)
        for _ in 0..<50 { handle.write(chunk) }
        try handle.close()
        try FileManager.default.moveItem(at: big, to: install.incoming.appendingPathComponent("big.yaml"))
        try FileManager.default.createSymbolicLink(atPath: install.incoming.appendingPathComponent("link.yaml").path,
                                                   withDestinationPath: Paths.jobs.appendingPathComponent("autoregressive.yaml").path)
        try FileManager.default.createDirectory(at: install.incoming.appendingPathComponent("folder.yaml"), withIntermediateDirectories: false)
        let badName: [UInt8] = Array("not-utf8-".utf8) + [0xFF, 0xFE] + Array(".yaml".utf8)
        let path = (Array(install.incoming.path.utf8) + [UInt8(ascii: "/")] + badName + [0]).map { CChar(bitPattern: $0) }
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = jobYAML().withCString { write(fd, $0, strlen($0)) }
        close(fd)
        // Ignored while being written: dotfiles, *.tmp, *~, *.swp.
        for ignored in [".hidden.yaml", "partial.tmp", "backup.yaml~", ".job.yaml.swp"] {
            try "junk".write(to: install.incoming.appendingPathComponent(ignored), atomically: false, encoding: .utf8)
        }

        let extra: [(String, String)] = [("garbage.yaml", "UTF-8"), ("big.yaml", "52428800 bytes"), ("link.yaml", "symbolic link"),
                                         ("folder.yaml", "a directory"), ("not-utf8-%FF%FE.yaml", "UTF-8")]
        let expected = cases.map { ($0.0, $0.2) } + extra
        try waitFor("every bad file in rejected/", timeout: 30) {
            expected.allSatisfy { FileManager.default.fileExists(atPath: install.rejected.appendingPathComponent($0.0 + ".error").path) }
        }
        for (name, needle) in expected {
            let error = try String(contentsOf: install.rejected.appendingPathComponent(name + ".error"), encoding: .utf8)
            XCTAssertTrue(error.contains(needle), "\(name).error lacks \"\(needle)\":\n\(error)")
            XCTAssertTrue(error.hasPrefix("layerskip rejected "), error)
            var isDirectory: ObjCBool = false
            XCTAssertTrue(FileManager.default.fileExists(atPath: install.rejected.appendingPathComponent(name).path, isDirectory: &isDirectory)
                          || (try? FileManager.default.destinationOfSymbolicLink(atPath: install.rejected.appendingPathComponent(name).path)) != nil,
                          "\(name) kept in rejected/")
        }
        XCTAssertEqual(try String(contentsOf: install.rejected.appendingPathComponent("link.yaml.error"), encoding: .utf8).contains("autoregressive.yaml"), true)
        // Every problem of a file at once.
        let wrong = try String(contentsOf: install.rejected.appendingPathComponent("wrong-types.yaml.error"), encoding: .utf8)
        XCTAssertTrue(wrong.contains("priority: expected an integer"), wrong)

        // Still serving: a good job runs.
        try install.drop("good.yaml", jobYAML())
        try waitFor("good.yaml accepted", timeout: 20) {
            FileManager.default.fileExists(atPath: install.accepted.appendingPathComponent("good.yaml").path)
        }
        let jobs = try install.jobs()
        let good = try XCTUnwrap(jobs.first { $0["source"] as? String == "good.yaml" }?["id"] as? Int)
        XCTAssertEqual(try install.waitForJob(good, toBe: ["succeeded"])["state"] as? String, "succeeded")
        XCTAssertEqual(jobs.filter { $0["state"] as? String == "rejected" }.count, expected.count)
        let rejectedJob = try XCTUnwrap(jobs.first { $0["source"] as? String == "exit-too-deep.yaml" })
        let problems = try XCTUnwrap(rejectedJob["problems"] as? [[String: Any]])
        XCTAssertEqual(problems.first?["path"] as? String, "strategy.exit_layer")
        XCTAssertEqual(problems.first?["found"] as? String, "4")

        let left = try FileManager.default.contentsOfDirectory(atPath: install.incoming.path).sorted()
        XCTAssertEqual(left, [".hidden.yaml", ".job.yaml.swp", "backup.yaml~", "partial.tmp"])
        XCTAssertNotNil(install.daemon?.isRunning == true ? 1 : nil, "the daemon is still running")
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// The content-hash rule: the same name and content again is not a second job; new content is.
    func testSameFileDroppedTwice() throws {
        let install = try Installation()
        try install.start()
        try install.drop("twice.yaml", jobYAML())
        try waitFor("first accepted", timeout: 20) { try install.jobs().count == 1 }
        try install.drop("twice.yaml", jobYAML())
        try waitFor("second taken in", timeout: 20) { try install.jobs().count == 2 }
        try install.drop("twice.yaml", jobYAML(tokens: 9))
        try waitFor("third taken in", timeout: 20) { try install.jobs().count == 3 }
        let jobs = try install.jobs().sorted { ($0["id"] as! Int) < ($1["id"] as! Int) }
        XCTAssertEqual(jobs.map { $0["state"] as? String }.map { $0 == "rejected" }, [false, true, false])
        let error = try String(contentsOf: install.rejected.appendingPathComponent("twice.yaml.error"), encoding: .utf8)
        XCTAssertTrue(error.contains("same name and content as job 1"), error)
        // Nothing overwritten: both accepted files are kept.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: install.accepted.path).sorted(), ["twice.yaml", "twice.yaml.1"])
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }
}
