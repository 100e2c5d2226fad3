#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// One run of the real binary with a deadline: killed when it runs past `timeout` (a hang is a
/// finding, not a stuck test), with the exit status or signal and the child's peak memory.
struct BoundedRun {
    var status: Int32
    /// The signal that ended it, if one did (SIGILL is a Swift trap, SIGKILL our deadline).
    var signal: Int32?
    var timedOut: Bool
    var stdout: String
    var stderr: String
    /// Peak resident memory of the binary, when measured (`measureMemory`), else 0.
    var maxRSSBytes: Int
    var seconds: Double

    var summary: String { "status \(status) signal \(signal.map(String.init) ?? "-") timedOut \(timedOut): \(stderr)\(stdout)" }
}

/// - Parameter measureMemory: run the binary under GNU time, which forks it from its own small
///   process: the rusage of a child spawned straight from this test process starts from the test
///   process's own peak (posix_spawn shares its memory until the exec), which would swamp the figure.
func runBounded(_ arguments: [String], timeout: Double = 30, environment: [String: String] = [:],
                measureMemory: Bool = false) throws -> BoundedRun {
    let dir = try Paths.temporaryDirectory("run")
    defer { try? FileManager.default.removeItem(at: dir) }
    let outPath = dir.appendingPathComponent("out").path, errPath = dir.appendingPathComponent("err").path
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    // Its own process group, so that a deadline kills the binary and not only GNU time.
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    let rssPath = dir.appendingPathComponent("rss").path
    let time = "/usr/bin/time"
    if measureMemory && !FileManager.default.isExecutableFile(atPath: time) {
        throw XCTSkip("measuring peak memory needs GNU time (Debian package time)")
    }
    let command = measureMemory ? [time, "-f", "%M", "-o", rssPath, Paths.binary.path] : [Paths.binary.path]
    var env = ProcessInfo.processInfo.environment
    env["NOTIFY_SOCKET"] = nil
    // A crash must end the process at once, not after Swift's backtracer has run for seconds.
    env["SWIFT_BACKTRACE"] = "enable=no"
    for (k, v) in environment { env[k] = v }
    let argv = (command + arguments).map { strdup($0) } + [nil]
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let started = Date()
    let rc = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
    guard rc == 0 else { throw NSError(domain: "posix_spawn", code: Int(rc)) }
    var status: Int32 = 0
    var timedOut = false
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { break }
        if Date().timeIntervalSince(started) > timeout && !timedOut {
            timedOut = true
            kill(-pid, SIGKILL)
        }
        usleep(10_000)
    }
    let seconds = Date().timeIntervalSince(started)
    let signaled = (status & 0x7F) != 0 && (status & 0x7F) != 0x7F
    var signal = signaled ? status & 0x7F : nil
    var exitStatus = signaled ? -1 : (status >> 8) & 0xFF
    var rss = 0
    if measureMemory, let text = try? String(contentsOfFile: rssPath, encoding: .utf8) {
        // GNU time writes "Command terminated by signal N" before the figure when the binary died.
        let lines = text.split(separator: "\n")
        if let last = lines.last, let kb = Int(last.trimmingCharacters(in: .whitespaces)) { rss = kb * 1024 }
        if let line = lines.first(where: { $0.hasPrefix("Command terminated by signal ") }), let n = Int32(line.split(separator: " ").last ?? "") {
            (signal, exitStatus) = (n, -1)
        }
    }
    return BoundedRun(status: exitStatus, signal: signal, timedOut: timedOut,
                      stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
                      maxRSSBytes: rss, seconds: seconds)
}

/// Hostile model folders, each a copy of the tiny fixture with one thing made bad.
enum HostileModel {
    /// A copy of the tiny fixture model at `parent/name`, changed by `alter`.
    static func make(_ parent: URL, _ name: String, _ alter: (URL) throws -> Void = { _ in }) throws -> URL {
        let dir = parent.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            try FileManager.default.copyItem(at: Paths.tinyModel.appendingPathComponent(file), to: dir.appendingPathComponent(file))
        }
        try alter(dir)
        return dir
    }

    /// Replaces `file` in `dir` with a FIFO (nobody ever writes to it).
    static func fifo(_ dir: URL, _ file: String) throws {
        let path = dir.appendingPathComponent(file).path
        try? FileManager.default.removeItem(atPath: path)
        XCTAssertEqual(mkfifo(path, 0o644), 0)
    }

    /// A safetensors file from a raw header text and a data section; `length` overrides the prefix.
    static func safetensors(_ url: URL, header: String, data: Data = Data(), length: UInt64? = nil) throws {
        var prefix = (length ?? UInt64(header.utf8.count)).littleEndian
        var bytes = Data(bytes: &prefix, count: 8)
        bytes.append(Data(header.utf8))
        bytes.append(data)
        try bytes.write(to: url)
    }

    /// Edits config.json as a JSON object.
    static func editConfig(_ dir: URL, _ change: (inout [String: Any]) -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&json)
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }

    /// Sets tokenizer.json's pre-tokenizer to a Split on `pattern`.
    static func splitPattern(_ dir: URL, _ pattern: String) throws {
        let url = dir.appendingPathComponent("tokenizer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        json["pre_tokenizer"] = ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false]
        try JSONSerialization.data(withJSONObject: json).write(to: url)
    }
}
