#if canImport(Glibc)
import Glibc
#endif
import AutoregressivePlugin
import Daemon
import Decoding
import Engine
import Foundation
import Logging
import XCTest

/// A strategy that wedges: it produces no token and runs no layer until released, like a
/// generation stuck in a syscall. Only the watchdog test registers it.
final class TestStall: DecodingStrategy {
    struct Configuration: StrategyConfiguration { static let keys: [String] = [] }
    static let name = "stall"
    static let summary = "test strategy that hangs"
    static let released = StopFlag()
    static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] { [] }
    init(configuration: Configuration, model: LlamaModel) {}
    func requiredPositions(for request: GenerationRequest) -> Int { request.prompt.count + request.maxNewTokens }
    func makeStepper(for request: GenerationRequest) -> SequenceStepper { Stepper() }

    /// Wedges in its first plan, as a stuck generation would, until released; then commits a token.
    final class Stepper: SequenceStepper {
        var promptLayers: Range<Int> { 0..<1 }
        var rowsPerStep: Int { 1 }
        var logitsRowsPerStep: Int { 1 }
        func plan(_ sequence: DecodeSequence, into pass: SequencePass) {
            while !TestStall.released.isSet { usleep(20_000) }
            sequence.embed(sequence.pending, row: 0)
            pass.add(rows: 0..<1, firstPosition: sequence.position, layers: 0..<1, head: 0..<1)
        }
        func advance(_ sequence: DecodeSequence, logits: SequenceLogits) {
            sequence.output.finish(.length)
        }
    }
}

/// Issue defects 5 and 10: the store failing under a running job, and a wedged generation.
final class FaultTests: XCTestCase {
    /// Defect 5: the disk fills while a job commits its outputs. The job must not stay `running`:
    /// once space returns it is released (back to the queue with a backoff), resumes without
    /// redoing finished prompts, and succeeds; the daemon never stops serving.
    func testStoreFailureDuringARunReleasesTheJob() throws {
        // Two prompts at a time, so that the prompts commit in turn while the disk fills.
        let install = try Installation(extraConfig: "retry_backoff_seconds: 1\nmax_attempts: 5\nmax_batch: 2")
        let state = install.root.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        // A small filesystem of its own for the state directory, so that it can be filled for real.
        let mount = try Installation.runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=4m,mode=0750", "tmpfs", state.path])
        guard mount == 0 else { throw XCTSkip("mounting a tmpfs needs root (mount exited \(mount))") }
        defer { _ = try? Installation.runTool("/bin/umount", ["-l", state.path]) }

        try install.start()
        // Long enough (16 × 400 tokens, seconds even for the tiny model) that the filesystem is
        // full well before the last prompt commits.
        let prompts = 16
        try install.drop("long.yaml", jobYAML(prompts: prompts, tokens: 400))
        try waitFor("the job to start", timeout: 30) { try install.jobs().first?["state"] as? String == "running" }
        try waitFor("a first output", timeout: 60) { (try install.jobs().first?["finished_prompts"] as? Int ?? 0) >= 1 }

        // Fill the filesystem to the last block.
        let filler = state.appendingPathComponent("filler")
        let fd = open(filler.path, O_WRONLY | O_CREAT, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let block = [UInt8](repeating: 0x55, count: 4096)
        while write(fd, block, block.count) > 0 {}
        while write(fd, block, 1) > 0 {}
        close(fd)
        try waitFor("the store failure in the log", timeout: 60) {
            let state = try install.jobs().first?["state"] as? String
            return install.lastLog.contains("the job store failed") || state != "running"
        }
        let jobsNow = try install.jobs()
        XCTAssertTrue(install.lastLog.contains("the job store failed"), "the job ended before the filesystem was full: \(jobsNow)")
        XCTAssertTrue(install.daemon?.isRunning ?? false, install.lastLog)
        Thread.sleep(forTimeInterval: 1)
        try FileManager.default.removeItem(at: filler)

        // Space is back: released, resumed, done; each prompt's output exactly once.
        let id = try XCTUnwrap(try install.jobs().first?["id"] as? Int)
        let job = try install.waitForJob(id, toBe: ["succeeded", "failed"], timeout: 120)
        XCTAssertEqual(job["state"] as? String, "succeeded", "\(job)\n\(install.lastLog)")
        let lines = try install.cli(["result", String(id), "--jsonl"]).jsonLines
        XCTAssertEqual(lines.compactMap { $0["id"] as? String }, (0..<prompts).map { "p\($0)" })
        let show = try install.cli(["show", String(id), "--json"])
        let events = (show.json?["events"] as? [[String: Any]]) ?? []
        XCTAssertTrue(events.contains { ($0["note"] as? String)?.contains("the job store failed during attempt 1") == true }, "\(events)")
        XCTAssertEqual((show.json?["job"] as? [String: Any])?["attempts"] as? Int, 2)
        // And the daemon takes the next job.
        try install.drop("next.yaml", jobYAML(tokens: 2))
        try waitFor("the next job", timeout: 30) {
            try install.jobs().contains { $0["source"] as? String == "next.yaml" && $0["state"] as? String == "succeeded" }
        }
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }

    /// Defect 10: WATCHDOG=1 follows the runner. While a generation is wedged the keep-alives
    /// stop (systemd then restarts the daemon); when it advances again they resume. The daemon
    /// runs in this process so that a strategy can wedge on purpose.
    func testWatchdogStopsWhileTheRunnerIsWedged() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = try SystemdNotifyTests.NotifySocket(path: dir.appendingPathComponent("notify.sock").path)
        var config = DaemonConfig(stateDirectory: dir.appendingPathComponent("state"))
        config.models = ["tiny": Paths.tinyModel]
        config.scanInterval = 0.2
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "1000000"])
        let registry = StrategyRegistry([AutoregressiveStrategy.plugin, StrategyPlugin(TestStall.self)])
        let daemon = Daemon(config: config, registry: registry, log: Logger.daemon(level: .error, journald: true), notifier: notifier)
        let finished = DispatchSemaphore(value: 0)
        Thread { try? daemon.run(); finished.signal() }.start()
        defer {
            TestStall.released.set()
            daemon.stop()
            finished.wait()
        }
        XCTAssertTrue(socket.receive(until: "READY=1", timeout: 30).contains { $0.contains("READY=1") })
        // Idle: fed.
        XCTAssertTrue(socket.receive(until: "WATCHDOG=1", timeout: 3).contains { $0.contains("WATCHDOG=1") })

        let incoming = config.spoolDirectory.appendingPathComponent("incoming")
        try jobYAML(strategy: "stall").write(to: dir.appendingPathComponent("stall.tmp"), atomically: true, encoding: .utf8)
        try FileManager.default.moveItem(at: dir.appendingPathComponent("stall.tmp"), to: incoming.appendingPathComponent("stall.yaml"))
        // Once wedged for longer than the interval (0.5 s), no more keep-alives.
        Thread.sleep(forTimeInterval: 2)
        _ = socket.receive(until: "never", timeout: 0.3)  // drain
        let wedged = socket.receive(until: "never", timeout: 2.5)
        XCTAssertFalse(wedged.contains { $0.contains("WATCHDOG=1") }, "fed while wedged: \(wedged)")

        TestStall.released.set()
        XCTAssertTrue(socket.receive(until: "WATCHDOG=1", timeout: 5).contains { $0.contains("WATCHDOG=1") }, "not fed after the runner advanced")
    }
}
