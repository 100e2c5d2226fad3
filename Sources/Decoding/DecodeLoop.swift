import Engine
import Foundation

/// The one decode loop (DESIGN §2b): it admits sequences as slots and KV caches free up, runs
/// their prompts in chunks interleaved with everybody else's decoding, and in each pass lets every
/// sequence's strategy stepper add the rows it needs; one engine pass then reads every weight once
/// for all of them. It applies the end-of-sequence bans (in `SequenceLogits`, the only place),
/// samples through each sequence's sampler, commits tokens to each output, cuts each KV cache back
/// to its committed length, stops cancelled sequences at the next pass, and keeps the metrics.
///
/// A sequence's tokens do not depend on what it is batched with: prefill chunks start at fixed
/// positions (multiples of `prefillChunk`) whatever else runs, and the engine forms its matrix
/// products so that every segment's numbers are those of a pass of its own (see `LlamaModel.run`).
///
/// Not thread-safe: one thread drives it (the daemon's runner, a CLI command, a test).
public final class DecodeLoop {
    /// Rows one sequence may hold: a prefill chunk, or a self-speculative round of up to 64 drafts.
    public static let maxRowsPerSequence = 72
    /// Prompt positions per prefill segment. Above the kernels' row-independent size (so a
    /// chunk runs as a matrix–matrix product of its own), small enough that a pass with a chunk
    /// in it does not stall the decoding sequences for long.
    public static let prefillChunk = 64

    public let model: LlamaModel
    public let maxBatch: Int
    /// Rows and logits rows one pass may carry (a sequence whose step does not fit waits a pass).
    public let maxRowsPerPass: Int
    public let maxLogitsRowsPerPass: Int
    /// Prompt rows per pass while other sequences are decoding (all of a pass's rows otherwise).
    public var prefillRowsPerPass = DecodeLoop.prefillChunk
    let caches: KVCachePool

    /// A sequence that finished (any reason), failed before it ran (`error`), or was cancelled.
    public struct Completion {
        public let id: Int
        public let output: GenerationOutput
        public let metrics: GenerationMetrics?
        public let error: Error?
    }

    private struct Waiting {
        let id: Int
        let request: GenerationRequest
        let strategy: ConfiguredStrategy
        let output: GenerationOutput
        let priority: Int
        let onFinish: (Completion) -> Void
    }

    private var waiting: [Waiting] = []
    public private(set) var active: [DecodeSequence] = []
    private var nextID = 0
    private var freeRows: [FloatBuffer] = []
    private let plan: PassPlan
    private let scratch: PassScratch
    private let logits: Logits
    private let clock = ContinuousClock()
    /// Rotates which sequence plans first, so that one that did not fit is first next time.
    private var rotation = 0

    /// The pass-cost curve the load-aware choice of d uses; measured on first need (see
    /// `calibrate`) and kept per model for the process, or set by the caller.
    public var costCurve: PassCostCurve?
    /// The draft length chosen for the batch at the latest round boundary (nil: none chosen yet).
    public private(set) var chosenDraftLength: Int?

    /// Called after every pass, before finished sequences leave (tests check invariants here).
    public var afterPass: ((DecodeLoop) -> Void)?

    /// Statistics of the passes run so far.
    public private(set) var passes = 0
    public private(set) var passSeconds = 0.0
    /// Passes that carried no prompt rows: their time and the tokens they committed (the
    /// decode-only rate, as llama.cpp's batched bench reports its S_TG).
    public private(set) var decodeOnlySeconds = 0.0
    public private(set) var decodeOnlyTokens = 0

    public init(model: LlamaModel, caches: KVCachePool, maxBatch: Int, maxRowsPerPass: Int? = nil, maxLogitsRowsPerPass: Int? = nil) {
        precondition(maxBatch >= 1)
        self.model = model
        self.caches = caches
        self.maxBatch = maxBatch
        let rows = maxRowsPerPass ?? min(512, max(Self.maxRowsPerSequence, maxBatch * 8) + Self.prefillChunk)
        self.maxRowsPerPass = max(rows, Self.maxRowsPerSequence)
        let logitsRows = maxLogitsRowsPerPass ?? min(256, max(Self.maxRowsPerSequence, maxBatch * 8))
        self.maxLogitsRowsPerPass = max(logitsRows, Self.maxRowsPerSequence)
        plan = PassPlan(maxRows: self.maxRowsPerPass, maxLogitsRows: self.maxLogitsRowsPerPass, maxSegments: 2 * maxBatch + 4)
        scratch = model.makePassScratch(maxRows: self.maxRowsPerPass)
        logits = model.makeLogits(capacity: self.maxLogitsRowsPerPass)
    }

    /// Queues a sequence. Admission goes by `priority` (higher first), then by submission order.
    /// `onFinish` is called once, from `step()`, when the sequence is over.
    @discardableResult
    public func submit(_ request: GenerationRequest, strategy: ConfiguredStrategy, output: GenerationOutput, priority: Int = 0,
                       onFinish: @escaping (Completion) -> Void) -> Int {
        let id = nextID
        nextID += 1
        let entry = Waiting(id: id, request: request, strategy: strategy, output: output, priority: priority, onFinish: onFinish)
        let at = waiting.firstIndex { $0.priority < priority } ?? waiting.endIndex
        waiting.insert(entry, at: at)
        return id
    }

    public var isIdle: Bool { waiting.isEmpty && active.isEmpty }
    public var waitingCount: Int { waiting.count }

    /// Runs until every submitted sequence is finished.
    public func run() {
        while !isIdle { step() }
    }

    /// One pass: admit, plan, run, advance, retire. Returns false when there was nothing to run
    /// (idle, or every sequence waits for a cache that a caller's other loop holds).
    @discardableResult
    public func step() -> Bool {
        dropCancelledWaiting()
        admit()
        for seq in active { _ = seq.output.checkCancellation() }
        retire()
        guard !active.isEmpty else { return false }

        chooseDraftLengths()
        plan.reset()
        let count = active.count
        let decoding = active.contains { $0.prefilled }
        // Decoding rows first (they share the small calls), prompt chunks last.
        for k in 0..<count {
            let seq = active[(rotation + k) % count]
            guard seq.prefilled, !seq.output.isFinished else { continue }
            if seq.position >= seq.cache.capacity {
                seq.output.finish(.length)
                continue
            }
            guard seq.stepper.rowsPerStep <= plan.freeRows, seq.stepper.logitsRowsPerStep <= plan.freeLogitsRows else { continue }
            seq.inPass = true
            seq.stepper.plan(seq, into: SequencePass(plan: plan, sequence: seq))
        }
        rotation += 1
        var promptRows = 0
        let promptBudget = decoding ? prefillRowsPerPass : plan.maxRows
        for seq in active where !seq.prefilled && !seq.output.isFinished {
            let start = seq.prefillDone
            let n = min(Self.prefillChunk - start % Self.prefillChunk, seq.request.prompt.count - start)
            guard n <= plan.freeRows, plan.freeLogitsRows >= 1, promptRows == 0 || promptRows + n <= promptBudget else { continue }
            for r in 0..<n { model.embed(seq.request.prompt[start + r], into: seq.row(r)) }
            let last = start + n == seq.request.prompt.count
            let row = plan.add(cache: seq.cache, hidden: seq.row(0), count: n, firstPosition: start, layers: seq.stepper.promptLayers,
                               headRows: last ? (n - 1)..<n : 0..<0)
            seq.prefillLogitsRow = last ? row : nil
            seq.prefillRows = n
            seq.inPass = true
            if seq.prefillStarted == nil { seq.prefillStarted = clock.now }
            promptRows += n
        }
        guard !plan.isEmpty else {
            retire()
            return !active.isEmpty
        }

        let started = clock.now
        model.run(plan, scratch: scratch, logits: logits)
        let seconds = (clock.now - started).seconds
        passes += 1
        passSeconds += seconds
        let inPass = active.reduce(0) { $0 + ($1.inPass ? 1 : 0) }
        if promptRows == 0 { decodeOnlySeconds += seconds }
        // The round being measured for the load-aware choice counts decode-only passes alone.
        if promptRows == 0 { roundSeconds += seconds } else { roundTainted = true }

        for seq in active where seq.inPass {
            seq.inPass = false
            seq.lastPassSeconds = seconds
            if !seq.prefilled {
                seq.prefillDone += seq.prefillRows
                guard let row = seq.prefillLogitsRow else { continue }
                seq.prefilled = true
                seq.firstToken = clock.now
                let first = SequenceLogits(logits: logits, sequence: seq).row(row, forToken: 0)
                seq.position = seq.request.prompt.count
                _ = seq.commit(seq.sampler.sample(first))
            } else {
                seq.passes += 1
                seq.batchSum += inPass
                seq.stepSeconds += seconds
                let before = seq.output.tokens.count
                seq.stepper.advance(seq, logits: SequenceLogits(logits: logits, sequence: seq))
                if promptRows == 0 { decodeOnlyTokens += seq.output.tokens.count - before }
                roundTokens += seq.output.tokens.count - before
                if seq.output.tokens.count > before && !seq.output.isFinished {
                    // Committed: every layer is cut back to the committed inputs.
                    seq.cache.truncate(to: seq.position)
                }
            }
        }
        afterPass?(self)
        retire()
        return true
    }

    /// Load-aware speculation: all speculating sequences start their rounds in the same pass, with
    /// the d that gives the batch the most committed tokens per second; one that is ready while
    /// others are inside a round takes a d = 0 round (one token, all layers) until they are done.
    /// Alone, a sequence drafts what its job asks for. The rate of each d is predicted by
    /// `SpeculationPolicy` on the measured cost curve until it has been measured: every round
    /// (boundary to boundary, decode-only passes) updates the measured rate of its (batch, d), and
    /// every 8th boundary tries the least recently tried neighbour of the best d (one more than 15%
    /// worse only every 32nd), so that a wrong
    /// prediction or a changed acceptance is noticed.
    private func chooseDraftLengths() {
        var speculating: [(DecodeSequence, LoadAwareSpeculation)] = []
        var others = 0
        for seq in active where seq.prefilled && !seq.output.isFinished {
            if let s = seq.stepper.loadAwareSpeculation { speculating.append((seq, s)) } else { others += 1 }
            seq.draftLimit = nil
        }
        guard !speculating.isEmpty, speculating.count + others > 1 else {
            currentRound = nil
            return
        }
        if speculating.contains(where: { $0.1.midRound }) {
            for (seq, s) in speculating where !s.midRound { seq.draftLimit = 0 }
            return
        }
        // A boundary: close the round just run.
        if measuring, let round = currentRound, !roundTainted, roundSeconds > 0 {
            let rate = Double(roundTokens) / roundSeconds
            measuredRates[round] = measuredRates[round].map { 0.5 * $0 + 0.5 * rate } ?? rate
        }
        if costCurve == nil {
            costCurve = calibrate()
            measuring = true
        }
        let curve = costCurve!
        let S = speculating.count
        let E = speculating[0].1.exitLayer
        let acceptance = speculating.reduce(0) { $0 + $1.1.acceptance } / Double(S)
        let maxDrafts = speculating.map(\.1.maxDrafts).min()!
        // Sequences that draft differently are predicted as the costliest of them (measured rates overrule).
        let reads = DraftReads(layers: speculating.map(\.1.draftReads.layers).max()!, head: speculating.map(\.1.draftReads.head).max()!)
        // The predicted best d and a spread around it, so that measured rates can overrule the model.
        let predictedBest = SpeculationPolicy.bestDraftLength(curve: curve, speculating: S, others: others, exitLayer: E,
                                                              layers: model.layerCount, acceptance: acceptance, maxDrafts: maxDrafts,
                                                              draftReads: reads)
        let candidates = Array(Set([0, 1, 2, 3, 4, 6, 8, 12, maxDrafts, predictedBest].filter { $0 <= maxDrafts })).sorted()
        func key(_ d: Int) -> RoundKey { RoundKey(speculating: S, others: others, draftLength: d) }
        func predicted(_ d: Int) -> Double {
            SpeculationPolicy.rate(curve: curve, speculating: S, others: others, exitLayer: E, layers: model.layerCount,
                                   acceptance: acceptance, draftLength: d, draftReads: reads) / max(onePassSeconds, 1e-6)
        }
        // A curve the caller set has no time scale: its predictions alone decide.
        let value = { (d: Int) in (self.measuring ? self.measuredRates[key(d)] : nil) ?? predicted(d) }
        var d = candidates.max { value($0) < value($1) }!
        boundaries += 1
        if measuring, boundaries % 8 == 0, let i = candidates.firstIndex(of: d) {
            let neighbours = [i - 1, i + 1].filter { candidates.indices.contains($0) }.map { candidates[$0] }
            if let probe = neighbours.min(by: { (lastTried[key($0)] ?? -1) < (lastTried[key($1)] ?? -1) }),
               // A neighbour measured (or predicted) more than 15% worse is retried only every 32nd
               // boundary: at large batches each probe of d = 1 costs a fifth of a round.
               value(probe) >= 0.85 * value(d) || boundaries % 32 == 0 {
                d = probe
            }
        }
        lastTried[key(d)] = boundaries
        currentRound = key(d)
        roundTokens = 0
        roundSeconds = 0
        roundTainted = false
        chosenDraftLength = d
        for (seq, _) in speculating { seq.draftLimit = d }
    }

    struct RoundKey: Hashable { var speculating: Int, others: Int, draftLength: Int }
    private var measuredRates: [RoundKey: Double] = [:]
    private var lastTried: [RoundKey: Int] = [:]
    private var currentRound: RoundKey?
    private var roundTokens = 0
    private var roundSeconds = 0.0
    private var roundTainted = false
    private var boundaries = 0
    /// The curve was measured here (with its time scale), so measured round rates can refine it.
    private var measuring = false
    /// Seconds of a one-row pass, from the calibration (converts predicted rates to tokens/s).
    private var onePassSeconds: Double { Self.curvesLock.withLock { Self.onePass[model.cacheKey] } ?? 0.1 }
    nonisolated(unsafe) private static var onePass: [String: Double] = [:]

    nonisolated(unsafe) private static var curves: [String: PassCostCurve] = [:]
    private static let curvesLock = NSLock()

    /// Measures the pass-cost curve on this model (`measurePassCost` at n = 1, 2, 4, …, 32, linear
    /// in between; medians of three), once per model per process: about 45 one-token passes' time. `curves` is read and written under `curvesLock` only.
    public func calibrate() -> PassCostCurve { Self.calibrate(model: model) }

    public static func calibrate(model: LlamaModel) -> PassCostCurve {
        Self.curvesLock.lock()
        if let known = Self.curves[model.cacheKey] { Self.curvesLock.unlock(); return known }
        Self.curvesLock.unlock()
        let points = [1, 2, 4, 8, 16, 32]
        let measurements = Self.measurePassCost(model: model, rowCounts: points, repetitions: 3, context: 1)
        let one = measurements[0].seconds
        let measured = measurements.map { ($0.rows, $0.ratio) }
        var costs: [Double] = []
        for n in 1...points.last! {
            let hi = measured.firstIndex { $0.0 >= n }!
            if measured[hi].0 == n || hi == 0 { costs.append(measured[hi].1); continue }
            let (n0, c0) = measured[hi - 1], (n1, c1) = measured[hi]
            costs.append(c0 + (c1 - c0) * Double(n - n0) / Double(n1 - n0))
        }
        let head = Double(model.weights.lmHead.byteCount)
        let layers = Double(model.weights.layers.reduce(0) { sum, l in sum + [l.q, l.k, l.v, l.o, l.gate, l.up, l.down].reduce(0) { $0 + $1.byteCount } })
        let curve = PassCostCurve(costs: costs, layerShare: max(0.05, min(1, layers / (layers + head))))
        Self.curvesLock.lock()
        Self.curves[model.cacheKey] = curve
        Self.onePass[model.cacheKey] = one
        Self.curvesLock.unlock()
        return curve
    }

    /// Times passes of n one-row segments (n sequences decoding, each after `context` positions)
    /// through every layer and the head, the n's interleaved run after run so that the machine's
    /// noise hits all alike. Returns per n the median time and the median of the per-run ratios
    /// to the one-row pass of the same run. rowCounts must contain 1 first.
    public static func measurePassCost(model: LlamaModel, rowCounts: [Int], repetitions: Int, context: Int)
        -> [(rows: Int, seconds: Double, ratio: Double)] {
        precondition(rowCounts.first == 1 && rowCounts.allSatisfy { $0 >= 1 } && repetitions >= 1 && context >= 1)
        let maxN = rowCounts.max()!
        let hd = model.config.hiddenSize
        let caches = (0..<maxN).map { _ in KVCache(config: model.config, capacity: context + 1) }
        let warm = model.makeActivations(capacity: context)
        for (i, cache) in caches.enumerated() {
            model.embed((0..<context).map { ($0 * 7 + i) % model.config.vocabSize }, into: warm)
            model.forward(warm, layers: 0..<model.layerCount, positions: 0..<context, cache: cache)
        }
        let rows = FloatBuffer(count: maxN * hd)
        let plan = PassPlan(maxRows: maxN, maxLogitsRows: maxN)
        let scratch = model.makePassScratch(maxRows: maxN)
        let logits = model.makeLogits(capacity: maxN)
        let clock = ContinuousClock()
        func pass(_ n: Int) -> Double {
            plan.reset()
            for i in 0..<n {
                caches[i].truncate(to: context)
                model.embed((i + 1) % model.config.vocabSize, into: rows.pointer + i * hd)
                plan.add(cache: caches[i], hidden: rows.pointer + i * hd, count: 1, firstPosition: context,
                         layers: 0..<model.layerCount, headRows: 0..<1)
            }
            let start = clock.now
            model.run(plan, scratch: scratch, logits: logits)
            return (clock.now - start).seconds
        }
        _ = pass(maxN)
        var times = [Int: [Double]](), ratios = [Int: [Double]]()
        for _ in 0..<repetitions {
            let one = pass(1)
            for n in rowCounts {
                let t = n == 1 ? one : pass(n)
                times[n, default: []].append(t)
                ratios[n, default: []].append(t / one)
            }
        }
        return rowCounts.map { ($0, SpeculationTuner.median(times[$0]!), SpeculationTuner.median(ratios[$0]!)) }
    }

    /// A batch size for this model from its pass-cost curve: the smallest n ≤ 32 whose throughput
    /// n / c(n) is within 5% of the best n / c(n) up to 32 — past it, more sequences per pass add
    /// waiting, not tokens per second.
    public static func suggestedBatch(model: LlamaModel) -> Int {
        suggestedBatch(curve: calibrate(model: model))
    }

    public static func suggestedBatch(curve: PassCostCurve) -> Int {
        let rates = (1...32).map { Double($0) / curve.cost($0) }
        let best = rates.max()!
        return (rates.firstIndex { $0 >= 0.95 * best } ?? 15) + 1
    }

    private func dropCancelledWaiting() {
        var i = 0
        while i < waiting.count {
            let w = waiting[i]
            if w.output.isFinished || w.output.checkCancellation() {
                waiting.remove(at: i)
                w.onFinish(Completion(id: w.id, output: w.output, metrics: nil, error: nil))
            } else {
                i += 1
            }
        }
    }

    private func admit() {
        while active.count < maxBatch, let next = waiting.first {
            let positions = next.strategy.requiredPositions(for: next.request)
            let cache: KVCache
            do {
                if let problem = DecodeError.check(next.request, model: model, strategy: next.strategy) { throw problem }
                guard let c = try caches.acquire(capacity: positions) else { return }  // waits for a release
                cache = c
            } catch {
                waiting.removeFirst()
                next.onFinish(Completion(id: next.id, output: next.output, metrics: nil, error: error))
                continue
            }
            waiting.removeFirst()
            let rows = freeRows.popLast() ?? FloatBuffer(count: Self.maxRowsPerSequence * model.config.hiddenSize)
            let stepper = next.strategy.makeStepper(for: next.request)
            precondition(stepper.rowsPerStep <= Self.maxRowsPerSequence && stepper.logitsRowsPerStep <= Self.maxRowsPerSequence,
                         "a stepper asks for more rows than a sequence may hold")
            active.append(DecodeSequence(id: next.id, model: model, request: next.request, output: next.output, cache: cache,
                                         rows: rows, stepper: stepper, strategyName: next.strategy.strategyName, onFinish: next.onFinish, admitted: clock.now))
        }
    }

    /// Hands finished sequences their completion and frees their cache and rows.
    private func retire() {
        var i = 0
        while i < active.count {
            let seq = active[i]
            guard seq.output.isFinished else { i += 1; continue }
            active.remove(at: i)
            caches.release(seq.cache)
            freeRows.append(seq.rowBuffer)
            var metrics = seq.metrics(now: clock.now)
            metrics.weights = model.format.rawValue
            seq.onFinish(Completion(id: seq.id, output: seq.output, metrics: metrics, error: nil))
        }
    }
}

/// Why a request cannot run on a model, whatever the batch: what every caller (the loop's
/// admission, the daemon's runner, `generate`) checks the same way.
public enum DecodeError: Error, CustomStringConvertible {
    case emptyPrompt
    case tokenOutsideVocabulary(id: Int, vocabSize: Int)
    case contextTooLong(promptTokens: Int, maxNewTokens: Int, needed: Int, available: Int)

    public var description: String {
        switch self {
        case .emptyPrompt:
            "the prompt encodes to no tokens"
        case let .tokenOutsideVocabulary(id, vocabSize):
            "token id \(id) from tokenizer.json is outside the model's vocabulary (vocab_size \(vocabSize))"
        case let .contextTooLong(promptTokens, maxNewTokens, needed, available):
            "\(promptTokens) prompt tokens + max_new_tokens \(maxNewTokens) need \(needed) positions; the model has \(available)"
        }
    }

    /// The first reason `request` cannot run on `model` with `strategy`, or nil.
    public static func check(_ request: GenerationRequest, model: LlamaModel, strategy: ConfiguredStrategy) -> DecodeError? {
        if request.prompt.isEmpty { return .emptyPrompt }
        if let bad = request.prompt.first(where: { $0 < 0 || $0 >= model.config.vocabSize }) {
            return .tokenOutsideVocabulary(id: bad, vocabSize: model.config.vocabSize)
        }
        let needed = strategy.requiredPositions(for: request)
        if needed > model.maxPositions {
            return .contextTooLong(promptTokens: request.prompt.count, maxNewTokens: request.maxNewTokens, needed: needed,
                                   available: model.maxPositions)
        }
        return nil
    }
}

/// One sequence in the decode loop, as its stepper sees it.
public final class DecodeSequence {
    public let id: Int
    public let request: GenerationRequest
    public let output: GenerationOutput
    public let cache: KVCache
    let model: LlamaModel
    let stepper: SequenceStepper
    let strategyName: String
    let sampler: Sampler
    /// (maxRowsPerSequence, hidden): this sequence's residual-stream rows (prompt chunks, drafts,
    /// the exit-query cache of a round); they persist from pass to pass.
    let rowBuffer: FloatBuffer
    let onFinish: (DecodeLoop.Completion) -> Void

    /// Positions whose inputs are committed and in the cache: the pending token goes here.
    public internal(set) var position = 0
    /// The newest committed token, not yet run through the model.
    public internal(set) var pending = -1
    /// Seconds of the latest pass this sequence was in (for a stepper's phase timings).
    public internal(set) var lastPassSeconds = 0.0
    /// The most drafts a speculative round starting now may make (load-aware speculation, set by
    /// the loop before each plan); nil: the job's own setting.
    public internal(set) var draftLimit: Int?

    var prefilled = false
    var prefillDone = 0
    var prefillRows = 0
    var prefillLogitsRow: Int?
    var inPass = false
    let admitted: ContinuousClock.Instant
    var prefillStarted: ContinuousClock.Instant?
    var firstToken: ContinuousClock.Instant?
    var passes = 0
    var batchSum = 0
    var stepSeconds = 0.0
    var layerEvaluations = 0

    init(id: Int, model: LlamaModel, request: GenerationRequest, output: GenerationOutput, cache: KVCache, rows: FloatBuffer,
         stepper: SequenceStepper, strategyName: String, onFinish: @escaping (DecodeLoop.Completion) -> Void, admitted: ContinuousClock.Instant) {
        self.id = id
        self.model = model
        self.request = request
        self.output = output
        self.cache = cache
        rowBuffer = rows
        self.stepper = stepper
        self.strategyName = strategyName
        self.onFinish = onFinish
        self.admitted = admitted
        sampler = Sampler(parameters: request.sampling, vocabSize: model.config.vocabSize)
    }

    /// Tokens generated so far.
    public var generated: Int { output.tokens.count }
    /// Tokens that may still be committed.
    public var remaining: Int { output.remaining }
    public var isGreedy: Bool { request.sampling.isGreedy }

    /// Row r of this sequence's residual-stream rows: (hidden) floats.
    public func row(_ r: Int) -> UnsafeMutablePointer<Float> {
        precondition(r >= 0 && r < DecodeLoop.maxRowsPerSequence)
        return rowBuffer.pointer + r * model.config.hiddenSize
    }

    /// Writes the embedding of `token` into row r.
    public func embed(_ token: Int, row r: Int) { model.embed(token, into: row(r)) }

    // Sampling goes through the sequence's own seeded sampler, so a sequence's draws do not
    // depend on its batch-mates either.
    public func sample(_ row: UnsafeMutableBufferPointer<Float>) -> Int { sampler.sample(row) }
    public func distribution(_ row: UnsafeMutableBufferPointer<Float>, into probs: UnsafeMutableBufferPointer<Float>) {
        sampler.distribution(row, into: probs)
    }
    public func draw(from probs: UnsafeMutableBufferPointer<Float>) -> Int { sampler.draw(from: probs) }
    public func uniform() -> Double { sampler.uniform() }

    /// Commits the next token: it becomes the pending token at the next position. Returns false
    /// when generation is over (this token was the last). The loop cuts the cache back to the
    /// committed positions after the step.
    @discardableResult
    public func commit(_ token: Int) -> Bool {
        if pending >= 0 { position += 1 }
        pending = token
        return output.append(token)
    }

    func metrics(now: ContinuousClock.Instant) -> GenerationMetrics {
        let prefillEnd = firstToken ?? now
        let prefill = prefillStarted.map { (prefillEnd - $0).seconds } ?? 0
        let decode = firstToken.map { (now - $0).seconds } ?? 0
        var m = GenerationMetrics(strategy: strategyName, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                  finishReason: output.finishReason ?? .length, prefillSeconds: prefill, decodeSeconds: decode,
                                  layerEvaluations: layerEvaluations)
        m.queueMs = ((prefillStarted ?? now) - admitted).seconds * 1000
        if passes > 0 {
            m.batchSize = Double(batchSum) / Double(passes)
            m.stepMs = stepSeconds / Double(passes) * 1000
        }
        m.seed = request.sampling.isGreedy ? nil : sampler.seed
        stepper.report(into: &m)
        return m
    }
}

/// How a stepper adds its sequence's rows to the next pass.
public struct SequencePass {
    let plan: PassPlan
    let sequence: DecodeSequence

    /// Adds rows `rows` of the sequence (its positions `firstPosition`...) through `layers`; the
    /// exit head runs on `head` (a sub-range of `rows`) after the whole pass. Returns the logits
    /// row of `head.lowerBound`, for `SequenceLogits.row`. `headVocabulary`: the head scores only
    /// its tokens (a pruned draft head; −infinity for the rest).
    @discardableResult
    public func add(rows: Range<Int>, firstPosition: Int, layers: Range<Int>, precision: WeightPrecision = .exact,
                    head: Range<Int> = 0..<0, headPrecision: WeightPrecision = .exact, headVocabulary: DraftVocabulary? = nil) -> Int {
        precondition(head.isEmpty || (head.lowerBound >= rows.lowerBound && head.upperBound <= rows.upperBound))
        sequence.layerEvaluations += rows.count * layers.count
        return plan.add(cache: sequence.cache, hidden: sequence.row(rows.lowerBound), count: rows.count, firstPosition: firstPosition,
                        layers: layers, precision: precision,
                        headRows: head.isEmpty ? 0..<0 : (head.lowerBound - rows.lowerBound)..<(head.upperBound - rows.lowerBound),
                        headPrecision: headPrecision, headVocabulary: head.isEmpty ? nil : headVocabulary)
    }

    /// CALM's fill: K/V of `layers` at `position` projected from row `row` (an exited state).
    public func fillKeysAndValues(row: Int, position: Int, layers: Range<Int>) {
        plan.add(cache: sequence.cache, hidden: sequence.row(row), count: 1, firstPosition: position, layers: layers,
                 keysAndValuesOnly: true)
    }
}

/// A sequence's logits of the pass just run.
public struct SequenceLogits {
    let logits: Logits
    let sequence: DecodeSequence

    /// Logits row `row` (as `SequencePass.add` returned it, plus an offset), as the prediction of
    /// generated token number `token` (0-based): the end-of-sequence ids are banned there while
    /// `min_new_tokens` is not reached. Every logits row a strategy reads comes through here.
    public func row(_ row: Int, forToken token: Int) -> UnsafeMutableBufferPointer<Float> {
        let r = logits.row(row)
        sequence.output.applyBans(r, step: token)
        return r
    }
}

extension DecodeLoop {
    /// One sequence through the loop (CLI and tests): the same code path as a batch of one.
    public static func generate(model: LlamaModel, strategy: ConfiguredStrategy, request: GenerationRequest,
                                output: GenerationOutput, caches: KVCachePool? = nil) throws -> GenerationMetrics {
        let pool = caches ?? KVCachePool(config: model.config,
                                             budget: KVCache.byteCount(config: model.config, capacity: max(1, strategy.requiredPositions(for: request))),
                                             granule: 1)
        let loop = DecodeLoop(model: model, caches: pool, maxBatch: 1)
        var result: Completion?
        loop.submit(request, strategy: strategy, output: output) { result = $0 }
        loop.run()
        if let error = result?.error { throw error }
        return result!.metrics!
    }
}
