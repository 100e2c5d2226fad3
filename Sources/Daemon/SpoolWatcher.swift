#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Long-running parts of the daemon: `run()` blocks until `shutdown()` is called.
public protocol DaemonService: AnyObject, Sendable {
    var name: String { get }
    func run()
    func shutdown()
}

/// Watches incoming/ with inotify as a hint and rescans it every `interval` anyway, so a lost
/// event (queue overflow, a file renamed in while the daemon was down) only delays intake.
// `@unchecked Sendable`: `run()` owns the loop state on its own thread; `shutdown()` only sets a locked flag.
public final class SpoolWatcher: DaemonService, @unchecked Sendable {
    public let name = "spool watcher"
    let intake: SpoolIntake
    let interval: TimeInterval
    let onTick: () -> Void
    let onIntake: () -> Void
    private let stopping = StopFlag()

    public init(intake: SpoolIntake, interval: TimeInterval, onTick: @escaping () -> Void = {}, onIntake: @escaping () -> Void = {}) {
        self.intake = intake
        self.interval = interval
        self.onTick = onTick
        self.onIntake = onIntake
    }

    public func run() {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        if fd >= 0 {
            let mask = UInt32(IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE)
            if inotify_add_watch(fd, intake.layout.incoming.path, mask) < 0 {
                intake.log.warning("spool: inotify unavailable (\(FileOps.errnoText())); rescanning every \(interval) s")
            }
        }
        defer { if fd >= 0 { close(fd) } }
        var lastScan = Date()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !stopping.isSet {
            onTick()
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = fd >= 0 ? poll(&pfd, 1, 250) : { usleep(250_000); return 0 }()
            var hinted = false
            if ready > 0 {
                // The events only say "look"; what is there is read from the folder itself.
                while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 { hinted = true }
            }
            if hinted || Date().timeIntervalSince(lastScan) >= interval {
                lastScan = Date()
                if intake.scan() > 0 { onIntake() }
            }
        }
    }

    public func shutdown() { stopping.set() }
}

/// Runs jobs one after another until shut down; sleeps while the queue is empty.
// `@unchecked Sendable`: `woken` is read and written under `wake`; the runner runs on this service's thread only.
public final class RunnerService: DaemonService, @unchecked Sendable {
    public let name = "job runner"
    let runner: JobRunner
    let log: Logger
    private let wake = NSCondition()
    private var woken = false

    public init(runner: JobRunner, log: Logger) {
        self.runner = runner
        self.log = log
    }

    /// New work may be there (a file was accepted, a job retried).
    public func poke() {
        wake.lock()
        woken = true
        wake.signal()
        wake.unlock()
    }

    public func run() {
        var failures = 0
        while !runner.stopping.isSet {
            do {
                if try runner.runNext() != .none { failures = 0; continue }
            } catch {
                failures += 1
                log.error("runner: \(error)")
                // The store is unhappy (disk full, I/O): back off instead of spinning.
                Thread.sleep(forTimeInterval: min(30, 0.5 * Double(failures)))
            }
            wake.lock()
            if !woken { _ = wake.wait(until: Date().addingTimeInterval(1)) }
            woken = false
            wake.unlock()
        }
    }

    public func shutdown() {
        runner.stopping.set()
        poke()
    }
}
