import Decoding
import Engine
import Foundation
import Logging

/// A flag one thread sets and another polls between tokens.
// `@unchecked Sendable`: `value` is read and written under `lock`.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    public func set() { lock.lock(); value = true; lock.unlock() }
}

/// Runs claimed jobs in batches: it keeps up to `maxBatch` sequences (prompts) in flight in one
/// decode loop, drawn from every job it has claimed for the batch's model, and claims the next job
/// (by priority, then age) whenever a slot frees. Each prompt's output is committed as it
/// finishes. On a stop every in-flight job goes back to `queued`; a cancelled job's sequences stop
/// at the next pass without disturbing the others.
/// `@unchecked Sendable`: the batch state lives in `runAvailable`'s frame on the runner's thread;
/// what other threads touch (`stopping`, `liveness`, the cancel watch) is locked.
public final class JobRunner: @unchecked Sendable {
    public enum Outcome: Equatable, Sendable { case none, finished(Int64, JobState), requeued(Int64), lost(Int64) }

    let store: JobStore
    let models: ModelManager
    let caches: CacheManager
    let registry: StrategyRegistry
    let log: Logger
    public let stopping = StopFlag()
    /// Called after each prompt and job, for systemd STATUS= lines.
    public var onProgress: (String) -> Void = { _ in }
    /// How often the store is asked whether a running job was cancelled.
    public var cancelPollInterval: TimeInterval = 0.2
    /// What the watchdog looks at: when the runner last advanced.
    public let liveness = RunnerLiveness()
    /// Jobs whose run ended in a store error and that are not yet released: they are still
    /// `running` in the store, so nothing else is claimed until they are back in the queue.
    private var unreleased: [(job: ClaimedJob, failure: String)] = []
    /// Seconds a job released after a store failure waits, times its attempt number.
    public var storeFailureBackoff: TimeInterval = 30
    /// Sequences in flight at once (config `max_batch`); nil: from each model's pass-cost curve.
    public var maxBatch: Int?
    /// Who claims: the lease length and, on a shared store, the models this host runs.
    public var worker: Worker = .local
    /// What the heartbeat reports (`WorkerLoad`), updated as the batch runs.
    public let load = RunnerLoad()

    public init(store: JobStore, models: ModelManager, caches: CacheManager, registry: StrategyRegistry, log: Logger) {
        self.store = store
        self.models = models
        self.caches = caches
        self.registry = registry
        self.log = log
    }

    /// Claims and runs jobs (of `among`, when given) as one batch until none is in flight and none
    /// is left to claim for the batch's model, or until a stop. Returns the first job's outcome
    /// (`.none` when nothing was claimed); `runAvailable` returns them all.
    public func runNext(among ids: [Int64]? = nil) throws -> Outcome {
        try runAvailable(among: ids).first ?? .none
    }

    /// One job of the batch.
    private final class Flight {
        let job: ClaimedJob
        let cancelled = StopFlag()
        /// Sequences submitted and not yet completed.
        var open = 0
        /// Prompts with an output (this run, earlier attempts included).
        var done: Int
        /// Set when the job must fail; its other sequences stop.
        var failure: String?
        /// Its final state is written, or it is no longer ours.
        var closed = false
        var lost = false
        /// Set by the lease watch: the lease was taken over, or could not be renewed in time.
        let leaseLost = StopFlag()
        /// Outputs finished while the store could not be reached, committed once it can (in order).
        var pendingOutputs: [(index: Int, text: String, tokens: [Int], metrics: GenerationMetrics)] = []
        /// The final state, when writing it found the store unreachable.
        var pendingFinal: (state: JobState, error: String?)?
        init(job: ClaimedJob) {
            self.job = job
            done = job.finished.count
        }
        var stopsSequences: Bool { closed || lost || failure != nil || cancelled.isSet || leaseLost.isSet }
        var isHeld: Bool { !closed && !lost && !leaseLost.isSet }
    }

    public func runAvailable(among ids: [Int64]? = nil) throws -> [Outcome] {
        // Throws again while the store still fails; the caller backs off and comes back here.
        if !unreleased.isEmpty { return try releaseUnreleased() }
        guard !stopping.isSet else { return [] }
        var outcomes: [Outcome] = []
        var flights: [Flight] = []
        var session: (key: String, loaded: LoadedModel, loop: DecodeLoop)?
        let abort = StopFlag()
        var storeFailure: Error?
        let watch = FlightWatch(store: store, worker: worker, interval: cancelPollInterval, log: log)
        defer {
            watch.stop()
            load.update(jobs: 0, sequences: 0)
            if let session { models.release(session.loaded) }
        }
        /// No claim before this time: the store could not be reached.
        var claimsPausedUntil = Date.distantPast
        /// When pending writes were last tried.
        var lastFlush = Date.distantPast

        func drop(_ flight: Flight, _ why: String) {
            flight.closed = true
            flight.pendingOutputs = []
            watch.remove(flight.job.id)
            log.warning("runner: job \(flight.job.id) \(why); its work is dropped")
            outcomes.append(.lost(flight.job.id))
        }

        func close(_ flight: Flight, _ state: JobState, error: String? = nil) throws {
            do {
                try store.finish(flight.job, as: state, error: error)
                flight.closed = true
                flight.pendingFinal = nil
                watch.remove(flight.job.id)
                log.info("runner: job \(flight.job.id) \(state.rawValue)")
                onProgress("job \(flight.job.id) \(state.rawValue)")
                outcomes.append(.finished(flight.job.id, state))
            } catch StoreError.leaseLost {
                drop(flight, "was taken from this worker")
            } catch StoreError.unavailable(let why) {
                // Kept until the store is back or the lease can no longer be renewed.
                if flight.pendingFinal == nil { log.warning("runner: job \(flight.job.id): cannot write its end (\(why)); retrying") }
                flight.pendingFinal = (state, error)
            }
        }

        func commit(_ flight: Flight, index: Int, text: String, tokens: [Int], metrics: GenerationMetrics) throws {
            try store.commitOutput(flight.job, index: index, text: text, tokens: tokens, metrics: metrics)
            flight.done += 1
            load.committed(metrics)
            liveness.advanced()
            onProgress("job \(flight.job.id): prompt \(index + 1) of \(flight.job.spec.prompts.count) done")
        }

        /// Writes what waited for the store, oldest first; stops at the first that still cannot.
        func flushPending() throws {
            for flight in flights where flight.isHeld && !flight.pendingOutputs.isEmpty {
                while let p = flight.pendingOutputs.first {
                    do { try commit(flight, index: p.index, text: p.text, tokens: p.tokens, metrics: p.metrics) } catch StoreError.leaseLost {
                        return drop(flight, "was taken from this worker")
                    } catch StoreError.unavailable { return }
                    flight.pendingOutputs.removeFirst()
                }
            }
        }

        /// Makes the strategy, encodes the prompts and submits every unfinished one.
        func admit(_ job: ClaimedJob, _ loaded: LoadedModel, _ loop: DecodeLoop) throws {
            let flight = Flight(job: job)
            flights.append(flight)
            watch.add(job, cancelled: flight.cancelled, leaseLost: flight.leaseLost)
            let model = loaded.model
            let strategy: ConfiguredStrategy
            var tuning: TuningRecord?
            do { tuning = try loaded.tuningKey.flatMap { try store.tuning(modelKey: $0) } } catch {
                // Without the tune result the job still runs, on the untuned defaults.
                log.warning("runner: job \(job.id): cannot read the model's tune result (\(error))")
            }
            let resolved = ResolvedStrategy.resolve(job.spec.strategy, strategyIsDefault: job.spec.strategyIsDefault ?? false, tuning: tuning)
            var ranking: TokenRanking?
            do { ranking = try tuning?.ranking(vocabularySize: model.config.vocabSize) } catch {
                log.warning("runner: job \(job.id): the model's tune result has a bad token ranking (\(error)); using the merge order")
            }
            let context = StrategyContext(tokenizer: loaded.tokenizer, tokenRanking: ranking)
            do { strategy = try registry.make(resolved.spec, model: model, context: context) } catch {
                return try close(flight, .failed, error: "strategy (\(resolved.settings), from \(resolved.source)): \(error)")
            }
            var requests: [(Int, GenerationRequest)] = []
            for (index, prompt) in job.spec.prompts.enumerated() where !job.finished.contains(index) {
                let ids: [Int]
                do { ids = try loaded.tokenizer.encode(prompt.text, addSpecialTokens: true) } catch {
                    return try close(flight, .failed, error: "prompt \(prompt.id): \(error)")
                }
                let request = GenerationRequest(prompt: ids, maxNewTokens: prompt.maxNewTokens ?? job.spec.maxNewTokens,
                                                minNewTokens: job.spec.minNewTokens, sampling: prompt.sampling ?? job.spec.sampling,
                                                stopStrings: prompt.stop ?? job.spec.stop, eosTokenIds: Set(model.config.eosTokenIds))
                if let problem = DecodeError.check(request, model: model, strategy: strategy) {
                    return try close(flight, .failed, error: "prompt \(prompt.id): \(problem)")
                }
                requests.append((index, request))
            }
            for (index, request) in requests {
                let promptID = job.spec.prompts[index].id
                let output = GenerationOutput(request: request, tokenizer: loaded.tokenizer,
                                              isCancelled: { [stopping] in stopping.isSet || abort.isSet || flight.stopsSequences })
                flight.open += 1
                loop.submit(request, strategy: strategy, output: output, priority: job.spec.priority) { [self] completion in
                    flight.open -= 1
                    guard !flight.closed, !flight.lost, !abort.isSet, flight.failure == nil else { return }
                    if let error = completion.error {
                        flight.failure = "prompt \(promptID): \(error)"
                        return
                    }
                    // An interrupted prompt is not an output: it runs again from its start.
                    guard var metrics = completion.metrics, output.finishReason != .cancelled else { return }
                    metrics.strategySettings = resolved.settings
                    metrics.settingsSource = resolved.source
                    guard flight.pendingOutputs.isEmpty else {
                        return flight.pendingOutputs.append((index, output.text, output.tokens, metrics))
                    }
                    do {
                        try commit(flight, index: index, text: output.text, tokens: output.tokens, metrics: metrics)
                    } catch StoreError.leaseLost {
                        // Its other sequences stop; `settle` drops the job and says so.
                        flight.lost = true
                    } catch StoreError.unavailable(let why) {
                        log.warning("runner: job \(job.id): cannot commit prompt \(index) (\(why)); keeping it until the store is back")
                        flight.pendingOutputs.append((index, output.text, output.tokens, metrics))
                    } catch {
                        storeFailure = error
                        abort.set()
                    }
                }
            }
        }

        /// Writes the final state of every job with nothing left in flight.
        func settle() throws {
            // What waited for the store is retried once a second: outputs, then final states. (One
            // decision for both: a final-state retry that checked the clock after the outputs' retry
            // had reset it never ran, and left the job running under a renewed lease.)
            let retryDue = Date().timeIntervalSince(lastFlush) >= 1
            if retryDue {
                lastFlush = Date()
                try flushPending()
            }
            for flight in flights where !flight.closed && flight.open == 0 {
                let job = flight.job
                if flight.lost {
                    drop(flight, "was taken from this worker")
                } else if flight.leaseLost.isSet {
                    drop(flight, "lost its lease (taken over, or not renewed in time)")
                } else if !flight.pendingOutputs.isEmpty {
                    continue
                } else if let pending = flight.pendingFinal {
                    if retryDue { try close(flight, pending.state, error: pending.error) }
                } else if let failure = flight.failure {
                    try close(flight, .failed, error: failure)
                } else if flight.done < job.spec.prompts.count && stopping.isSet {
                    flight.closed = true
                    watch.remove(job.id)
                    do {
                        try store.requeue(job, note: "the daemon stopped")
                        log.notice("runner: job \(job.id) put back in the queue (stopping)")
                        outcomes.append(.requeued(job.id))
                    } catch StoreError.unavailable(let why) {
                        // Its lease runs out and any daemon (this one restarted, too) puts it back.
                        log.warning("runner: job \(job.id) left to its lease's expiry: cannot reach the store (\(why))")
                        outcomes.append(.lost(job.id))
                    } catch StoreError.leaseLost {
                        outcomes.append(.lost(job.id))
                    }
                } else if flight.cancelled.isSet {
                    try close(flight, .cancelled, error: "cancelled by request")
                } else if flight.done >= job.spec.prompts.count {
                    try close(flight, .succeeded)
                }
            }
        }

        liveness.started()
        defer { liveness.stopped() }
        do {
            while true {
                // Claim while the batch has room (only jobs for the batch's model once it has one).
                while !stopping.isSet, Date() >= claimsPausedUntil,
                      session.map({ $0.loop.active.count + $0.loop.waitingCount < $0.loop.maxBatch }) ?? true {
                    let claimed: ClaimedJob?
                    do { claimed = try store.claimNext(among: ids, model: session?.key, worker: worker) } catch StoreError.unavailable(let why) {
                        // No new work while the store is away; what is in flight goes on.
                        if flights.allSatisfy(\.closed) { throw StoreError.unavailable(why) }
                        log.warning("runner: cannot claim (\(why)); going on with the jobs in flight")
                        claimsPausedUntil = Date().addingTimeInterval(2)
                        break
                    }
                    guard let job = claimed else { break }
                    log.info("runner: job \(job.id) started (attempt \(job.attempt) of \(job.maxAttempts), \(job.spec.strategy.name), \(job.spec.prompts.count) prompt(s), \(job.finished.count) already done)")
                    if session == nil {
                        do {
                            let loaded = try models.acquire(job.modelDirectory)
                            let pool = caches.pool(for: loaded.model, key: loaded.model.cacheKey)
                            let batch = maxBatch ?? DecodeLoop.suggestedBatch(model: loaded.model)
                            if maxBatch == nil { log.info("runner: max_batch auto: \(batch) for \(job.modelDirectory.path) (its pass-cost curve)") }
                            session = (job.modelDirectory.path, loaded, DecodeLoop(model: loaded.model, caches: pool, maxBatch: batch))
                        } catch {
                            let flight = Flight(job: job)
                            flights.append(flight)
                            try close(flight, .failed, error: "cannot load the model \(job.modelDirectory.path): \(error)")
                            continue
                        }
                    }
                    try admit(job, session!.loaded, session!.loop)
                }
                try settle()
                load.update(jobs: flights.filter(\.isHeld).count, sequences: session?.loop.active.count ?? 0)
                guard let loop = session?.loop, !loop.isIdle else {
                    // Finished work that waits for the store keeps the batch open until it is
                    // written or its lease is gone.
                    if flights.contains(where: { $0.isHeld && ($0.pendingFinal != nil || !$0.pendingOutputs.isEmpty) }) {
                        Thread.sleep(forTimeInterval: 0.25)
                        continue
                    }
                    break
                }
                loop.step()
                if let storeFailure { throw storeFailure }
                try settle()
            }
        } catch {
            // The store failed under running jobs (disk full, I/O): none may stay `running` with
            // nobody running it. Stop their sequences, then release them now, or on the next call
            // once the store works again.
            log.error("runner: the job store failed: \(error); releasing the running jobs")
            abort.set()
            if let loop = session?.loop { while !loop.isIdle { loop.step() } }
            for flight in flights where !flight.closed {
                flight.closed = true
                unreleased.append((flight.job, "\(error)"))
            }
            outcomes += try releaseUnreleased()
        }
        return outcomes
    }

    /// Puts jobs whose run hit a store failure back (or ends them); until that succeeds they stay
    /// in `unreleased`, so the next call tries again before claiming anything else.
    private func releaseUnreleased() throws -> [Outcome] {
        var outcomes: [Outcome] = []
        while let (job, failure) = unreleased.first {
            let state: JobState
            do { state = try store.release(job, after: failure, backoff: storeFailureBackoff * Double(job.attempt)) } catch StoreError.leaseLost {
                unreleased.removeFirst()
                log.notice("runner: job \(job.id) was taken over while the store failed; nothing to release")
                outcomes.append(.lost(job.id))
                continue
            }
            unreleased.removeFirst()
            log.notice("runner: job \(job.id) released after the store failure: \(state.rawValue)")
            outcomes.append(state == .queued ? .requeued(job.id) : .finished(job.id, state))
        }
        return outcomes
    }
}

/// Watches the batch's jobs from a timer thread: polls the store for cancel requests and raises
/// their flags, and renews the jobs' leases every third of the lease time. A lease the store says
/// is no longer ours, or one that could not be renewed for a whole lease time (the store is out of
/// reach: by now another daemon may have put the job back), raises the job's `leaseLost` flag, and
/// the runner drops that job's work without writing anything.
/// `@unchecked Sendable`: `watched` and `lastRenewal` are read and written under `lock`.
final class FlightWatch: @unchecked Sendable {
    private struct Watched {
        var job: ClaimedJob
        var cancelled: StopFlag
        var leaseLost: StopFlag
        /// When the lease was last known to be ours (claim, or a renewal).
        var heldAt: Date
    }
    private let lock = NSLock()
    private var watched: [Int64: Watched] = [:]
    private var lastRenewal = Date()
    private let timer: DispatchSourceTimer

    init(store: JobStore, worker: Worker, interval: TimeInterval, log: Logger) {
        timer = DispatchSource.makeTimerSource(queue: .global())
        timer.schedule(deadline: .now(), repeating: interval)
        let renewEvery = worker.leaseSeconds / 3
        timer.setEventHandler { [weak self] in
            guard let self else { return }
            self.lock.lock()
            let now = Date()
            let snapshot = self.watched
            let renewing = now.timeIntervalSince(self.lastRenewal) >= renewEvery
            if renewing { self.lastRenewal = now }
            self.lock.unlock()
            let polled = snapshot.filter { !$0.value.cancelled.isSet }
            if let requested = try? store.cancelRequested(among: polled.keys.sorted()) {
                for id in requested { polled[id]?.cancelled.set() }
            }
            guard renewing else { return }
            let live = snapshot.values.filter { !$0.leaseLost.isSet }
            do {
                let lost = try store.renewLeases(live.map(\.job), worker: worker)
                self.lock.lock()
                for w in live where !lost.contains(w.job.id) { self.watched[w.job.id]?.heldAt = now }
                self.lock.unlock()
                for w in live where lost.contains(w.job.id) { w.leaseLost.set() }
            } catch {
                for w in live where now.timeIntervalSince(w.heldAt) >= worker.leaseSeconds {
                    log.error("runner: job \(w.job.id): its lease could not be renewed for \(Int(worker.leaseSeconds)) s (\(error)); dropping it")
                    w.leaseLost.set()
                }
            }
        }
        timer.resume()
    }

    func add(_ job: ClaimedJob, cancelled: StopFlag, leaseLost: StopFlag) {
        lock.lock()
        watched[job.id] = Watched(job: job, cancelled: cancelled, leaseLost: leaseLost, heldAt: Date())
        lock.unlock()
    }
    func remove(_ id: Int64) { lock.lock(); watched[id] = nil; lock.unlock() }
    func stop() { timer.cancel() }
}

/// What the heartbeat reports of a runner: jobs and sequences in flight, and running totals of
/// what its committed outputs generated.
/// `@unchecked Sendable`: every field is read and written under `lock`.
public final class RunnerLoad: @unchecked Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var jobs = 0, sequences = 0
        /// Totals over the outputs this runner committed.
        public var tokens = 0, drafted = 0, accepted = 0
        /// Sum of (batch size × tokens) and the tokens it covers, for a token-weighted mean batch size.
        public var batchWeighted = 0.0, batchTokens = 0
    }
    private let lock = NSLock()
    private var state = Snapshot()

    func update(jobs: Int, sequences: Int) { lock.lock(); state.jobs = jobs; state.sequences = sequences; lock.unlock() }
    func committed(_ m: GenerationMetrics) {
        lock.lock()
        state.tokens += m.generatedTokens
        state.drafted += m.drafted ?? 0
        state.accepted += m.accepted ?? 0
        if let b = m.batchSize {
            state.batchWeighted += b * Double(m.generatedTokens)
            state.batchTokens += m.generatedTokens
        }
        lock.unlock()
    }

    public var snapshot: Snapshot { lock.lock(); defer { lock.unlock() }; return state }
}

/// When the runner last advanced, for systemd's watchdog: a generation whose engine runs no layer
/// must stop the keep-alives, so that systemd restarts the daemon and the job's attempt counts.
/// Progress is a layer the engine ran (every token and every prefill chunk runs some) or a
/// finished prompt.
/// `@unchecked Sendable`: every field is read and written under `lock`.
public final class RunnerLiveness: @unchecked Sendable {
    private let lock = NSLock()
    private var busy = false
    private var lastAdvance = Date()
    private var lastLayers = 0

    public init() {}

    func started() { lock.lock(); busy = true; lastAdvance = Date(); lastLayers = EngineProgress.layersRun; lock.unlock() }
    func stopped() { lock.lock(); busy = false; lastAdvance = Date(); lock.unlock() }
    func advanced() { lock.lock(); lastAdvance = Date(); lock.unlock() }

    /// Seconds since the runner last advanced while it has a job; nil when it is idle.
    public func stalledFor() -> TimeInterval? {
        lock.lock()
        defer { lock.unlock() }
        guard busy else { return nil }
        let layers = EngineProgress.layersRun
        if layers != lastLayers {
            lastLayers = layers
            lastAdvance = Date()
        }
        return Date().timeIntervalSince(lastAdvance)
    }
}
