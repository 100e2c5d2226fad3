import Decoding
import Engine
import Foundation
import Logging

/// A flag one thread sets and another polls between tokens.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    public func set() { lock.lock(); value = true; lock.unlock() }
}

/// Runs claimed jobs: one prompt at a time through the job's strategy, each prompt's output
/// committed as it finishes. Stops between tokens when asked (the job goes back to `queued`)
/// or when the job is cancelled.
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
    /// How often the store is asked whether the running job was cancelled.
    public var cancelPollInterval: TimeInterval = 0.2
    /// What the watchdog looks at: when the runner last advanced.
    public let liveness = RunnerLiveness()
    /// A job whose run ended in a store error and that is not yet released: it is still
    /// `running` in the store, so nothing else is claimed until it is back in the queue.
    private var unreleased: (job: ClaimedJob, failure: String)?
    /// Seconds a job released after a store failure waits, times its attempt number.
    public var storeFailureBackoff: TimeInterval = 30

    public init(store: JobStore, models: ModelManager, caches: CacheManager, registry: StrategyRegistry, log: Logger) {
        self.store = store
        self.models = models
        self.caches = caches
        self.registry = registry
        self.log = log
    }

    /// Claims and runs the next job (of `among`, when given) to a final state, or until a stop.
    public func runNext(among ids: [Int64]? = nil) throws -> Outcome {
        // Throws again while the store still fails; the caller backs off and comes back here.
        if let (job, failure) = unreleased { return try release(job, after: failure) }
        guard !stopping.isSet, let job = try store.claimNext(among: ids) else { return .none }
        log.info("runner: job \(job.id) started (attempt \(job.attempt) of \(job.maxAttempts), \(job.spec.strategy.name), \(job.spec.prompts.count) prompt(s), \(job.finished.count) already done)")
        liveness.started()
        defer { liveness.stopped() }
        do {
            let outcome = try run(job)
            switch outcome {
            case let .finished(_, state):
                log.info("runner: job \(job.id) \(state.rawValue)")
                onProgress("job \(job.id) \(state.rawValue)")
            case .requeued: log.notice("runner: job \(job.id) put back in the queue (stopping)")
            default: break
            }
            return outcome
        } catch let StoreError.leaseLost(id) {
            log.warning("runner: job \(id) was taken from this worker; its work is dropped")
            return .lost(id)
        } catch {
            // The store failed under a running job (disk full, I/O): the job must not stay
            // `running` with nobody running it. Release it now, or on the next call once the
            // store works again.
            log.error("runner: job \(job.id): the job store failed: \(error); releasing the job")
            return try release(job, after: "\(error)")
        }
    }

    /// Puts a job whose run hit a store failure back (or ends it); until that succeeds the job is
    /// kept in `unreleased`, so the next `runNext` tries again before claiming anything else.
    private func release(_ job: ClaimedJob, after failure: String) throws -> Outcome {
        unreleased = (job, failure)
        let state = try store.release(job, after: failure, backoff: storeFailureBackoff * Double(job.attempt))
        unreleased = nil
        log.notice("runner: job \(job.id) released after the store failure: \(state.rawValue)")
        return state == .queued ? .requeued(job.id) : .finished(job.id, state)
    }

    private func run(_ job: ClaimedJob) throws -> Outcome {
        let cancelled = StopFlag()
        let poller = DispatchSource.makeTimerSource(queue: .global())
        poller.schedule(deadline: .now(), repeating: cancelPollInterval)
        poller.setEventHandler { [store] in
            if (try? store.isCancelRequested(job.id)) ?? false { cancelled.set() }
        }
        poller.resume()
        defer { poller.cancel() }

        let loaded: LoadedModel
        let generator: Generator
        do {
            loaded = try models.acquire(job.modelDirectory)
        } catch {
            try store.finish(job, as: .failed, error: "cannot load the model \(job.modelDirectory.path): \(error)")
            return .finished(job.id, .failed)
        }
        defer { models.release(loaded) }
        do {
            generator = try registry.make(job.spec.strategy, model: loaded.model)
        } catch {
            try store.finish(job, as: .failed, error: "strategy: \(error)")
            return .finished(job.id, .failed)
        }
        let model = loaded.model
        for (index, prompt) in job.spec.prompts.enumerated() where !job.finished.contains(index) {
            if stopping.isSet {
                try store.requeue(job, note: "the daemon stopped")
                return .requeued(job.id)
            }
            if cancelled.isSet {
                try store.finish(job, as: .cancelled, error: "cancelled by request")
                return .finished(job.id, .cancelled)
            }
            let ids: [Int]
            do { ids = try loaded.tokenizer.encode(prompt.text, addSpecialTokens: true) } catch {
                try store.finish(job, as: .failed, error: "prompt \(prompt.id): \(error)")
                return .finished(job.id, .failed)
            }
            let request = GenerationRequest(prompt: ids, maxNewTokens: job.spec.maxNewTokens, minNewTokens: job.spec.minNewTokens,
                                            sampling: job.spec.sampling, stopStrings: job.spec.stop,
                                            eosTokenIds: Set(model.config.eosTokenIds))
            if let problem = check(request, model: model, generator: generator) {
                try store.finish(job, as: .failed, error: "prompt \(prompt.id): \(problem)")
                return .finished(job.id, .failed)
            }
            let cache: KVCache
            do {
                guard let c = try caches.acquire(config: model.config, capacity: generator.requiredPositions(for: request),
                                                 shouldStop: { stopping.isSet || cancelled.isSet }) else { continue }
                cache = c
            } catch {
                try store.finish(job, as: .failed, error: "prompt \(prompt.id): \(error)")
                return .finished(job.id, .failed)
            }
            let output = GenerationOutput(request: request, tokenizer: loaded.tokenizer,
                                          isCancelled: { [stopping] in stopping.isSet || cancelled.isSet })
            let metrics = generator.generate(request, cache: cache, output: output)
            caches.release(cache)
            if output.finishReason == .cancelled || metrics.finishReason == .cancelled {
                // An interrupted prompt is not an output: it runs again from its start.
                continue
            }
            liveness.advanced()
            try store.commitOutput(job, index: index, text: output.text, tokens: output.tokens, metrics: metrics)
            onProgress("job \(job.id): prompt \(index + 1) of \(job.spec.prompts.count) done")
        }
        if stopping.isSet {
            try store.requeue(job, note: "the daemon stopped")
            return .requeued(job.id)
        }
        if cancelled.isSet {
            try store.finish(job, as: .cancelled, error: "cancelled by request")
            return .finished(job.id, .cancelled)
        }
        try store.finish(job, as: .succeeded)
        return .finished(job.id, .succeeded)
    }

    private func check(_ request: GenerationRequest, model: LlamaModel, generator: Generator) -> String? {
        if request.prompt.isEmpty { return "the prompt encodes to no tokens" }
        if let bad = request.prompt.first(where: { $0 < 0 || $0 >= model.config.vocabSize }) {
            return "token id \(bad) from tokenizer.json is outside the model's vocabulary (vocab_size \(model.config.vocabSize))"
        }
        let needed = generator.requiredPositions(for: request)
        if needed > model.maxPositions {
            return "\(request.prompt.count) prompt tokens + max_new_tokens \(request.maxNewTokens) need \(needed) positions; the model has \(model.maxPositions)"
        }
        return nil
    }
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
