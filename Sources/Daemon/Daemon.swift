#if canImport(Glibc)
import Glibc
#endif
import Decoding
import Foundation
import Logging

/// `layerskip serve`: wires the store, the spool intake, the runner and systemd together, and
/// stops them gracefully on SIGTERM or SIGINT (the running job goes back to `queued`).
// `@unchecked Sendable`: its fields are set in init and never change; `stop()` only signals a semaphore.
public final class Daemon: @unchecked Sendable {
    public let config: DaemonConfig
    let registry: StrategyRegistry
    let log: Logger
    let notifier: SystemdNotifier

    private let stopSignal = DispatchSemaphore(value: 0)

    /// Stops a running `run()` as SIGTERM does (for a daemon embedded in another process).
    public func stop() { stopSignal.signal() }

    public init(config: DaemonConfig, registry: StrategyRegistry, log: Logger, notifier: SystemdNotifier = SystemdNotifier()) {
        self.config = config
        self.registry = registry
        self.log = log
        self.notifier = notifier
    }

    /// Runs until a signal arrives. Throws only for problems before it is ready (lock, database).
    public func run() throws {
        // The signals are handled by a dispatch source, not by the default action.
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [stopSignal] in stopSignal.signal() }
            source.resume()
            sources.append(source)
        }
        defer { sources.forEach { $0.cancel() } }

        let lock = try InstanceLock(url: config.lockURL)
        defer { withExtendedLifetime(lock) {} }
        let store = try JobStore.open(config, create: true)
        try store.verifyIntact()
        let worker = config.worker
        let recovered = try store.recoverInterrupted(worker: worker)
        if recovered > 0 { log.notice("recovered \(recovered) job(s) left running by a stopped daemon") }
        try store.registerWorker(worker)
        if store.isShared {
            log.notice("on the shared queue \(store.location) as \(worker.name); models here: \((worker.models?.keys.sorted() ?? []).joined(separator: ", "))")
        }
        let layout = SpoolLayout(root: config.spoolDirectory)
        // On a shared store several daemons may share one spool too (a network filesystem).
        let folders = try SpoolFolders(layout: layout, sharedAs: store.isShared ? worker.name : nil)
        let intake = SpoolIntake(folders: folders, store: store, config: config, registry: registry, log: log)
        try intake.recover()
        let accepted = intake.scan()

        let runner = JobRunner(store: store, models: ModelManager(budget: config.modelMemoryBudget, log: log, formats: config.modelWeights),
                               caches: CacheManager(budget: config.cacheMemoryBudget), registry: registry, log: log)
        runner.maxBatch = config.maxBatch
        runner.worker = worker
        runner.onProgress = { [notifier] in notifier.status($0) }
        runner.storeFailureBackoff = config.retryBackoff
        let runnerService = RunnerService(runner: runner, log: log)
        let watchdog = WatchdogFeeder(notifier: notifier, liveness: runner.liveness, log: log)
        let watcher = SpoolWatcher(intake: intake, interval: config.scanInterval,
                                   onTick: { watchdog.tick() }, onIntake: { runnerService.poke() })
        let heartbeat = HeartbeatService(store: store, worker: worker, load: runner.load, metricsFile: config.metricsTextfile, log: log)
        let services: [DaemonService] = [watcher, runnerService, heartbeat]
        let group = DispatchGroup()
        for service in services {
            group.enter()
            let thread = Thread {
                service.run()
                group.leave()
            }
            thread.name = service.name
            thread.stackSize = 8 << 20
            thread.start()
        }
        let queued = (try? store.jobs(state: .queued).count) ?? 0
        log.notice("serving \(layout.incoming.path) (state \(config.stateDirectory.path)); \(accepted) file(s) taken in, \(queued) job(s) queued")
        notifier.ready(status: "ready; \(queued) job(s) queued")

        stopSignal.wait()
        log.notice("stopping: finishing the current token, putting the running job back in the queue")
        notifier.stopping(status: "stopping")
        services.forEach { $0.shutdown() }
        group.wait()
        do { try store.workerStopped(worker) } catch { log.warning("could not record the stop in the job store: \(error)") }
        log.notice("stopped")
    }
}

/// Sends systemd's WATCHDOG=1 only while both loops are alive: the spool loop (which calls
/// `tick`) and the runner, which must have advanced within the watchdog interval whenever it has
/// a job. A wedged generation therefore stops the keep-alives, systemd restarts the daemon, and
/// the job's attempt counts (it ends `failed` after max_attempts).
/// `@unchecked Sendable`: `reported` is touched by `tick` only, which runs on the spool loop's one thread.
final class WatchdogFeeder: @unchecked Sendable {
    let notifier: SystemdNotifier
    let liveness: RunnerLiveness
    let log: Logger
    private var reported = false

    init(notifier: SystemdNotifier, liveness: RunnerLiveness, log: Logger) {
        self.notifier = notifier
        self.liveness = liveness
        self.log = log
    }

    /// Called from the spool loop only (one thread), several times a second.
    func tick() {
        guard let interval = notifier.watchdogInterval else { return }
        if let stalled = liveness.stalledFor(), stalled > interval {
            if !reported {
                log.error("runner: no progress for \(Int(stalled)) s; not feeding the systemd watchdog, so that systemd restarts the daemon")
                reported = true
            }
            return
        }
        reported = false
        notifier.watchdog()
    }
}
