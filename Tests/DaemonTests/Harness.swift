#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// Paths and the real `layerskip` binary that `swift build` put beside this test bundle.
enum Paths {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let fixtures = repository.appendingPathComponent("Tests/Fixtures")
    static let tinyModel = fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32")
    static let jobs = repository.appendingPathComponent("jobs")

    static var binary: URL {
        let dir = Bundle.main.executableURL?.deletingLastPathComponent()
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let url = candidate.appendingPathComponent("layerskip")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return repository.appendingPathComponent(".build/debug/layerskip")
    }

    static func temporaryDirectory(_ name: String = #function) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("layerskip-\(name.filter { $0.isLetter || $0.isNumber })-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// The result of one run of the binary.
struct Output {
    var status: Int32
    var stdout: String
    var stderr: String
    var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any] }
    var jsonLines: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}

/// A temporary daemon installation: config, state and spool in one folder, and `serve` processes.
final class Installation {
    let root: URL
    let config: URL
    let spool: URL
    var incoming: URL { spool.appendingPathComponent("incoming") }
    var accepted: URL { spool.appendingPathComponent("accepted") }
    var rejected: URL { spool.appendingPathComponent("rejected") }
    var database: URL { root.appendingPathComponent("state/jobs.sqlite") }
    private(set) var daemon: Process?
    private var logIndex = 0
    private(set) var logs: [URL] = []

    /// `tinyEntry`: the config's `models: tiny:` entry (a path, or a mapping with weights:).
    /// `spoolDirectory`: another installation's spool, for daemons that share one.
    init(name: String = #function, extraConfig: String = "", tinyEntry: String = Paths.tinyModel.path, spoolDirectory: URL? = nil) throws {
        root = try Paths.temporaryDirectory(name)
        config = root.appendingPathComponent("layerskip.yaml")
        spool = spoolDirectory ?? root.appendingPathComponent("spool")
        try """
            state_directory: state
            spool_directory: \(spool.path)
            models:
              tiny: \(tinyEntry)
            scan_interval_seconds: 0.5
            log_level: debug
            \(extraConfig)
            """.write(to: config, atomically: true, encoding: .utf8)
    }

    deinit {
        if let daemon, daemon.isRunning { kill(daemon.processIdentifier, SIGKILL); daemon.waitUntilExit() }
        try? FileManager.default.removeItem(at: root)
    }

    /// Runs a CLI command with this installation's config.
    @discardableResult
    func cli(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        try Installation.run(arguments + ["--config", config.path], environment: environment)
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = Paths.binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // `@unchecked Sendable`: written by the reader thread before `group.leave()`, read after `group.wait()`.
        final class Box: @unchecked Sendable { var data = Data() }
        let errData = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData.data, as: UTF8.self))
    }

    /// Runs a system tool (mount, umount) and returns its exit status.
    static func runTool(_ path: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Starts `serve` and waits until it has scanned the spool (its "serving" line).
    @discardableResult
    /// - Parameter launcher: a command that runs the daemon for us (e.g. `ip netns exec NS`); it
    ///   must exec the daemon, so that signals sent to the process reach it.
    func start(environment: [String: String] = [:], waitReady: Bool = true, launcher: [String] = []) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launcher.first ?? Paths.binary.path)
        process.arguments = Array(launcher.dropFirst()) + (launcher.isEmpty ? [] : [Paths.binary.path]) + ["serve", "--config", config.path]
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        logIndex += 1
        let log = root.appendingPathComponent("serve-\(logIndex).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        daemon = process
        logs.append(log)
        if waitReady { try waitUntilReady() }
        return process
    }

    /// Waits until the running daemon has scanned the spool (its "serving" line): before that a
    /// SIGTERM may arrive ahead of its signal handlers and kill it outright.
    func waitUntilReady() throws {
        guard let process = daemon, let log = logs.last else { return }
        try waitFor("the daemon to be ready", timeout: 30) {
            (try? String(contentsOf: log, encoding: .utf8))?.contains("serving ") ?? false || !process.isRunning
        }
        XCTAssertTrue(process.isRunning, "serve exited: \(lastLog)")
    }

    var lastLog: String { logs.last.flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? "" }

    /// Sends a signal and waits for the exit status.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        guard let daemon else { return -1 }
        kill(daemon.processIdentifier, signal)
        // A daemon that does not stop must fail the test, not hang the suite.
        let deadline = Date().addingTimeInterval(60)
        while daemon.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if daemon.isRunning {
            XCTFail("the daemon did not exit within 60 s of signal \(signal); killed. Log:\n\(lastLog.suffix(3000))")
            kill(daemon.processIdentifier, SIGKILL)
        }
        daemon.waitUntilExit()
        self.daemon = nil
        return daemon.terminationReason == .uncaughtSignal ? -daemon.terminationStatus : daemon.terminationStatus
    }

    /// Writes a job file elsewhere, then renames it into incoming/ (the spool's rule).
    func drop(_ name: String, _ contents: String) throws {
        let temp = incoming.appendingPathComponent(".drop-\(UUID().uuidString).tmp")
        try contents.write(to: temp, atomically: false, encoding: .utf8)
        try FileManager.default.moveItem(at: temp, to: incoming.appendingPathComponent(name))
    }

    func job(_ id: Int) throws -> [String: Any] {
        let r = try cli(["show", String(id), "--json"])
        guard r.status == 0, let json = r.json, let job = json["job"] as? [String: Any] else {
            throw NSError(domain: "show", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr + r.stdout])
        }
        return job
    }

    func jobs() throws -> [[String: Any]] {
        let r = try cli(["jobs", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return (r.json?["jobs"] as? [[String: Any]]) ?? []
    }

    func waitForJob(_ id: Int, toBe states: Set<String>, timeout: Double = 60) throws -> [String: Any] {
        var last: [String: Any] = [:]
        try waitFor("job \(id) to be \(states.sorted())", timeout: timeout) {
            last = (try? self.job(id)) ?? [:]
            return states.contains(last["state"] as? String ?? "")
        }
        return last
    }
}

/// Polls until `condition` holds; fails the test (by throwing) after `timeout` seconds.
func waitFor(_ what: String, timeout: Double, interval: Double = 0.05, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        Thread.sleep(forTimeInterval: interval)
    }
    throw NSError(domain: "timeout", code: 1, userInfo: [NSLocalizedDescriptionKey: "timed out waiting for \(what)"])
}

/// A job file for the tiny fixture model.
func jobYAML(strategy: String = "autoregressive", prompts: Int = 1, tokens: Int = 8, priority: Int = 0,
             extra: String = "", promptPrefix: String = "Hello") -> String {
    var s = """
        model: tiny
        strategy: \(strategy)
        max_new_tokens: \(tokens)
        min_new_tokens: \(tokens)
        priority: \(priority)
        \(extra)
        prompts:

        """
    for i in 0..<prompts { s += "  - {id: p\(i), text: \"\(promptPrefix) \(i)\"}\n" }
    return s
}

/// Each job's output texts (by prompt index) when every prompt is decoded alone: `layerskip run`
/// with `max_batch: 1` over the same job files.
func soloTexts(_ files: [(name: String, yaml: String)]) throws -> [String: [String]] {
    let install = try Installation(name: "solo-\(UUID().uuidString)", extraConfig: "max_batch: 1")
    let dir = install.root.appendingPathComponent("jobs")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    var paths: [String] = []
    for file in files {
        let url = dir.appendingPathComponent(file.name)
        try file.yaml.write(to: url, atomically: true, encoding: .utf8)
        paths.append(url.path)
    }
    let run = try install.cli(["run"] + paths)
    XCTAssertEqual(run.status, 0, run.stderr)
    var texts: [String: [String]] = [:]
    for (i, file) in files.enumerated() {
        texts[file.name] = try outputs(install, i + 1)
    }
    return texts
}

func outputs(_ install: Installation, _ id: Int) throws -> [String] {
    let result = try install.cli(["result", "\(id)", "--json"])
    let list = try XCTUnwrap(result.json?["outputs"] as? [[String: Any]], result.stdout + result.stderr)
    return list.map { $0["text"] as? String ?? "<none>" }
}

