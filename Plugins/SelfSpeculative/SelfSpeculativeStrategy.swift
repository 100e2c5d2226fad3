import Decoding
import Engine
import Foundation

/// LayerSkip self-speculative decoding (lossless). Each round drafts up to d tokens with the first
/// E layers and the exit head, then verifies them all in ONE multi-position pass through layers
/// E..<L, which starts from the hidden states that left layer E-1 while drafting (the exit-query
/// cache), so layers 0..<E never run twice for a position. Draft and verification share one KV
/// cache; rejected positions are dropped by truncating it (a length change, no copy).
///
/// Greedy: the longest prefix of drafts equal to the full model's argmax is kept, plus the full
/// model's own next token — the output is exactly autoregressive decoding's. Sampling: draft x is
/// kept with probability min(1, p(x)/q(x)); at the first rejection the token is drawn from
/// normalize(max(0, p − q)); so the output distribution is exactly the full model's.
public final class SelfSpeculativeStrategy: DecodingStrategy {
    public struct Configuration: StrategyConfiguration {
        public var exitLayer: Int
        public var speculations: Int?
        public var adaptive: Bool?
        public var draftConfidence: Double?
        public var maxSpeculations: Int?
        /// Which weights the drafts read; verification always uses the stored ones, so the output is
        /// exactly the full model's whatever this is.
        /// - `exact` (default): the stored weights — pure LayerSkip, with the exit-query cache reuse.
        /// - `int8-head`: an int8 copy of the LM head (half its bytes per draft step); the drafted
        ///   layers are exact, so the exit-query cache is still reused.
        /// - `int8`: int8 copies of layers 0..<E and the head. The drafted states are approximate, so
        ///   verification recomputes layers 0..<E for the round's positions (no exit-query reuse).
        ///   Costs about half the draft layers' bytes in extra memory.
        public var draftPrecision: String?
        public static let keys = ["exit_layer", "speculations", "adaptive", "draft_confidence", "max_speculations", "draft_precision"]
        public init(exitLayer: Int, speculations: Int? = nil, adaptive: Bool? = nil, draftConfidence: Double? = nil,
                    maxSpeculations: Int? = nil, draftPrecision: String? = nil) {
            self.draftPrecision = draftPrecision
            self.exitLayer = exitLayer
            self.speculations = speculations
            self.adaptive = adaptive
            self.draftConfidence = draftConfidence
            self.maxSpeculations = maxSpeculations
        }
        var d: Int { speculations ?? 6 }
        var isAdaptive: Bool { adaptive ?? false }
        /// Drafting stops early when the draft's top probability falls below this (adaptive only).
        var confidence: Double { draftConfidence ?? 0.5 }
        /// The most drafts a round may hold (adaptive d grows up to here).
        var dMax: Int { isAdaptive ? (maxSpeculations ?? max(2 * d, 12)) : d }
        static let precisions = ["exact", "int8-head", "int8"]
        var head: WeightPrecision { draftPrecision == nil || draftPrecision == "exact" ? .exact : .int8 }
        var layers: WeightPrecision { draftPrecision == "int8" ? .int8 : .exact }
    }

    public static let name = "self-speculative"
    public static let summary = "draft with the first exit_layer layers, verify with the rest in one pass (exact)"
    public static let plugin = StrategyPlugin(SelfSpeculativeStrategy.self)
    public static let maxDrafts = 64

    let model: LlamaModel
    let configuration: Configuration

    public init(configuration: Configuration, model: LlamaModel) {
        self.model = model
        self.configuration = configuration
    }

    public static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        let L = model.layerCount
        var problems: [ConfigurationProblem] = []
        if !(1..<L).contains(c.exitLayer) {
            problems.append(.init(path: "\(path).exit_layer", expected: "an integer in 1...\(L - 1) (the model has \(L) layers; the verifier needs at least one)",
                                  found: "\(c.exitLayer)"))
        }
        if let d = c.speculations, !(1...maxDrafts).contains(d) {
            problems.append(.init(path: "\(path).speculations", expected: "an integer in 1...\(maxDrafts)", found: "\(d)"))
        }
        if !c.isAdaptive {
            for (key, present) in [("draft_confidence", c.draftConfidence != nil), ("max_speculations", c.maxSpeculations != nil)] where present {
                problems.append(.init(path: "\(path).\(key)", expected: "only with adaptive: true", found: "a value"))
            }
        }
        if let precision = c.draftPrecision, !Configuration.precisions.contains(precision) {
            problems.append(.init(path: "\(path).draft_precision", expected: "one of \(Configuration.precisions.joined(separator: ", "))",
                                  found: "\"\(precision)\""))
        }
        if let conf = c.draftConfidence, !(conf >= 0 && conf <= 1) {
            problems.append(.init(path: "\(path).draft_confidence", expected: "a probability in [0, 1]", found: "\(conf)"))
        }
        if let m = c.maxSpeculations, !(c.d...maxDrafts).contains(m) {
            problems.append(.init(path: "\(path).max_speculations", expected: "an integer in \(c.d)...\(maxDrafts) (at least speculations)", found: "\(m)"))
        }
        return problems
    }

    public func requiredPositions(for request: GenerationRequest) -> Int {
        // Drafts may run up to dMax + 1 positions past the last committed token.
        request.prompt.count + request.maxNewTokens + configuration.dMax + 1
    }

    /// Per-round bookkeeping, exposed for tests.
    public struct Round: Sendable, Equatable {
        public var position: Int
        public var drafted: Int
        public var accepted: Int
        public var cacheLengths: [Int]
    }

    /// Called after every round with the committed length and the cache's per-layer lengths.
    public var onRound: ((Round) -> Void)?

    public func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        let L = model.layerCount
        let E = configuration.exitLayer
        let V = model.config.vocabSize
        let dMax = configuration.dMax
        let sampler = Sampler(parameters: request.sampling, vocabSize: V)
        let greedy = request.sampling.isGreedy
        var clock = PhaseClock()
        cache.reset()

        // Scratch, sized once per call.
        let hPrompt = model.makeActivations(capacity: min(request.prompt.count, PrefillChunk.positions))
        /// (1, hidden): the position being drafted.
        let hDraft = model.makeActivations(capacity: 1)
        /// (dMax + 1, hidden): the exit-query cache — states leaving layer E-1 for the round's
        /// positions; verification continues from them through layers E..<L in place.
        let exitQueries = model.makeActivations(capacity: dMax + 1)
        let draftLogits = model.makeLogits(capacity: 1)
        let fullLogits = model.makeLogits(capacity: dMax + 1)
        /// (dMax, vocab): the draft distributions q, kept for the acceptance test when sampling.
        let q = greedy ? nil : FloatBuffer(count: dMax * V)
        var drafts: [Int] = []
        drafts.reserveCapacity(dMax)
        let reuseExitQueries = configuration.layers == .exact

        let last = prefill(model, prompt: request.prompt[...], layers: 0..<L, activations: hPrompt, cache: cache)
        model.exitLogits(hPrompt, rows: last..<(last + 1), into: fullLogits)
        clock.prefillDone()

        var stats = (drafted: 0, accepted: 0, rounds: 0, evaluations: 0)
        let wallClock = ContinuousClock()
        var draftTime = Duration.zero, verifyTime = Duration.zero
        let first = fullLogits.row(0)
        output.applyBans(first, step: 0)
        var pending = sampler.sample(first)
        var position = request.prompt.count  // where `pending` goes; every layer's cache holds this many
        var d = configuration.d
        var alive = output.append(pending)

        while alive {
            let step = output.tokens.count  // generated tokens so far = step index of the next one
            let budget = min(d, output.remaining - 1, cache.capacity - position - 1)
            guard budget >= 0 else { output.finish(.length); break }

            // Draft with layers 0..<E, one position at a time.
            let roundStart = wallClock.now
            drafts.removeAll(keepingCapacity: true)
            var input = pending
            for i in 0..<budget {
                model.embed(CollectionOfOne(input), into: hDraft)
                model.forward(hDraft, layers: 0..<E, positions: (position + i)..<(position + i + 1), cache: cache,
                              precision: configuration.layers)
                if reuseExitQueries { exitQueries.copyRows(from: hDraft, 0, to: i, count: 1) }
                model.exitLogits(hDraft, rows: 0..<1, into: draftLogits, head: configuration.head)
                stats.evaluations += E
                let row = draftLogits.row(0)
                output.applyBans(row, step: step + i)
                let token: Int
                var confident = true
                if let q {
                    let qi = UnsafeMutableBufferPointer(start: q.pointer + i * V, count: V)
                    sampler.distribution(row, into: qi)
                    token = sampler.draw(from: qi)
                    if configuration.isAdaptive { confident = Double(qi[token]) >= configuration.confidence }
                } else {
                    token = Sampler.argmax(row)
                    if configuration.isAdaptive { confident = Double(topProbability(row, best: token)) >= configuration.confidence }
                }
                drafts.append(token)
                input = token
                if !confident { break }
            }
            let k = drafts.count
            let draftEnd = wallClock.now
            draftTime += draftEnd - roundStart

            if reuseExitQueries {
                // The last draft (or `pending` when nothing was drafted) still needs layers 0..<E.
                model.embed(CollectionOfOne(input), into: hDraft)
                model.forward(hDraft, layers: 0..<E, positions: (position + k)..<(position + k + 1), cache: cache)
                exitQueries.copyRows(from: hDraft, 0, to: k, count: 1)
                // Verify every drafted position in one pass through the remaining layers.
                model.forward(exitQueries, layers: E..<L, positions: position..<(position + k + 1), cache: cache)
                stats.evaluations += E + (L - E) * (k + 1)
            } else {
                // Drafted with approximate layers: their K/V and states are discarded and the
                // round's inputs run through every layer with the exact weights, in one pass.
                for l in 0..<E { cache.truncate(layer: l, to: position) }
                model.embed(CollectionOfOne(pending), into: exitQueries)
                model.embed(drafts, into: exitQueries, at: 1)
                model.forward(exitQueries, layers: 0..<L, positions: position..<(position + k + 1), cache: cache)
                stats.evaluations += L * (k + 1)
            }
            model.exitLogits(exitQueries, rows: 0..<(k + 1), into: fullLogits)

            // Accept the longest agreeing prefix, then take the full model's own next token.
            var accepted = 0
            var next = -1
            for i in 0..<k {
                let row = fullLogits.row(i)
                output.applyBans(row, step: step + i)
                if let q {
                    sampler.distribution(row, into: row)  // p
                    let x = drafts[i]
                    let qi = UnsafeMutableBufferPointer(start: q.pointer + i * V, count: V)
                    if Double(qi[x]) > 0 && sampler.uniform() < min(1, Double(row[x]) / Double(qi[x])) {
                        accepted += 1
                        continue
                    }
                    next = drawResidual(p: row, q: qi, sampler: sampler)
                } else {
                    let target = Sampler.argmax(row)
                    if target == drafts[i] {
                        accepted += 1
                        continue
                    }
                    next = target
                }
                break
            }
            if accepted == k {
                let row = fullLogits.row(k)
                output.applyBans(row, step: step + k)
                next = sampler.sample(row)
            }

            // Positions position...position+accepted hold committed inputs; the rest is dropped.
            cache.truncate(to: position + accepted + 1)
            verifyTime += wallClock.now - draftEnd
            position += accepted + 1
            stats.drafted += k
            stats.accepted += accepted
            stats.rounds += 1
            for i in 0..<accepted where alive { alive = output.append(drafts[i]) }
            if alive { alive = output.append(next) }
            pending = next
            onRound?(Round(position: position, drafted: k, accepted: accepted, cacheLengths: cache.lengths))

            if configuration.isAdaptive {
                // Grow while everything is accepted, shrink on early rejection.
                d = accepted == k && k == d ? min(d + 2, dMax) : max(1, min(d - 1, accepted + 1))
            }
        }

        var metrics = GenerationMetrics(strategy: Self.name, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                        finishReason: output.finishReason ?? .length, prefillSeconds: clock.prefillSeconds,
                                        decodeSeconds: clock.decodeSeconds, layerEvaluations: stats.evaluations)
        metrics.drafted = stats.drafted
        metrics.accepted = stats.accepted
        metrics.acceptanceRate = stats.drafted > 0 ? Double(stats.accepted) / Double(stats.drafted) : nil
        metrics.rounds = stats.rounds
        // The first token comes from the prefill; every other one from a round.
        metrics.tokensPerRound = stats.rounds > 0 ? Double(max(output.tokens.count - 1, 0)) / Double(stats.rounds) : nil
        metrics.draftMs = draftTime.seconds * 1000
        metrics.verifyMs = verifyTime.seconds * 1000
        metrics.seed = greedy ? nil : sampler.seed
        return metrics
    }

    /// normalize(max(0, p − q)), written over p, then a draw from it. If p ≤ q everywhere
    /// (only possible through rounding when p == q), p itself is the right distribution.
    private func drawResidual(p: UnsafeMutableBufferPointer<Float>, q: UnsafeMutableBufferPointer<Float>, sampler: Sampler) -> Int {
        var total = 0.0
        for j in 0..<p.count {
            let r = max(0, p[j] - q[j])
            total += Double(r)
        }
        guard total > 0 else { return sampler.draw(from: p) }
        let scale = Float(1 / total)
        for j in 0..<p.count { p[j] = max(0, p[j] - q[j]) * scale }
        return sampler.draw(from: p)
    }

    private func topProbability(_ row: UnsafeMutableBufferPointer<Float>, best: Int) -> Float {
        let top = row[best]
        var sum = 0.0
        for x in row where x > -.infinity { sum += Double(Foundation.exp(x - top)) }
        return Float(1 / sum)
    }
}
