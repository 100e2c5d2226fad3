#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// sd_notify(3) spoken directly on $NOTIFY_SOCKET (a datagram socket; a leading "@" is the
/// abstract namespace), so the daemon needs no libsystemd. Without the variable it does nothing.
// `@unchecked Sendable`: the socket is written under `lock`; the other fields are `let`s.
public final class SystemdNotifier: @unchecked Sendable {
    private let socketPath: String?
    /// Half of WATCHDOG_USEC, when systemd asked for keep-alives.
    public let watchdogInterval: TimeInterval?
    private let lock = NSLock()
    private var lastWatchdog = Date.distantPast

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        if let usec = environment["WATCHDOG_USEC"].flatMap(Double.init), usec > 0,
           environment["WATCHDOG_PID"].map({ Int32($0) == getpid() }) ?? true {
            watchdogInterval = usec / 2_000_000
        } else {
            watchdogInterval = nil
        }
    }

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)\nMAINPID=\(getpid())") }
    public func status(_ text: String) { send("STATUS=\(text)") }
    public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    /// Sends WATCHDOG=1 at most every half interval; call it from a loop that proves liveness.
    public func watchdog() {
        guard let interval = watchdogInterval else { return }
        lock.lock()
        let due = Date().timeIntervalSince(lastWatchdog) >= interval / 2
        if due { lastWatchdog = Date() }
        lock.unlock()
        if due { send("WATCHDOG=1") }
    }

    public func send(_ message: String) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        if pathBytes.first == UInt8(ascii: "@") { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in pathBytes.enumerated() { raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes.first == 0 ? 0 : 1))
        let bytes = Array(message.utf8)
        _ = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                sendto(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL), sa, length)
            }
        }
    }
}

/// One daemon per state directory: an exclusive `flock` held for the life of the process (the
/// kernel drops it when the process dies, so a crash never leaves a stale lock behind).
public final class InstanceLock {
    private let fd: Int32

    public init(url: URL) throws {
        try StateDirectory.prepare(url.deletingLastPathComponent())
        // Never through a link: the pid is written into whatever this opens.
        fd = open(url.path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            let reason = errno == ELOOP ? "it is a symbolic link (refused)" : FileOps.errnoText()
            throw DaemonError.io("cannot open the lock file \(url.path): \(reason)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw DaemonError.io("the lock file \(url.path) is not a regular file")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let pid = (try? String(contentsOf: url, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            close(fd)
            throw DaemonError.alreadyRunning(stateDirectory: url.deletingLastPathComponent().path, pid: pid.isEmpty ? "?" : pid)
        }
        ftruncate(fd, 0)
        let text = "\(getpid())\n"
        _ = text.withCString { write(fd, $0, strlen($0)) }
    }

    deinit { close(fd) }
}
