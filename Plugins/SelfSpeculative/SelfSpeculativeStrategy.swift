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
        /// `true`: drafting stops when the draft is unsure and d follows the acceptance (up to
        /// `max_speculations`). `false`: d stays exactly `speculations`. Omitted: `speculations` is a
        /// maximum that the decode loop lowers under load (down to plain autoregressive steps when the
        /// batch alone fills the machine; DESIGN §2b).
        public var adaptive: Bool?
        public var draftConfidence: Double?
        public var maxSpeculations: Int?
        /// Which weights the drafts read; verification always uses the model's own (its format), so
        /// the output is exactly the full model's whatever this is.
        /// - `exact` (default): the model's weights — pure LayerSkip, with the exit-query cache reuse.
        /// - `int8-head` / `q4-head`: an int8 / 4-bit copy of the LM head (a half / about a quarter
        ///   of bf16's bytes per draft step); the drafted layers are exact, so the exit-query cache
        ///   is still reused.
        /// - `int8` / `q4`: copies of layers 0..<E and the head. The drafted states are approximate,
        ///   so verification recomputes layers 0..<E for the round's positions (no exit-query reuse).
        ///   Costs the copies' bytes in extra memory. A copy never reads more bytes than the model's
        ///   own weights: `int8` drafts on a q4 model read its q4 weights (and are then exact).
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
        static let precisions = ["exact", "int8-head", "int8", "q4-head", "q4"]
        var head: WeightPrecision { WeightPrecision(rawValue: String((draftPrecision ?? "exact").prefix { $0 != "-" })) ?? .exact }
        var layers: WeightPrecision { draftPrecision.flatMap(WeightPrecision.init(rawValue:)) ?? .exact }
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

    public func makeStepper(for request: GenerationRequest) -> SequenceStepper {
        Stepper(configuration: configuration, layerCount: model.layerCount, vocabSize: model.config.vocabSize,
                sampling: !request.sampling.isGreedy,
                draftsReadTheModelsWeights: model.weightsRead(by: configuration.layers) == model.weightsRead(by: .exact))
    }

    /// draft [1 row, layers 0..<E, head] × k  →  verify [the newest input through 0..<E, then the
    /// round's k + 1 rows through E..<L from the exit-query cache, head]  →  accept → commit.
    /// The exit-query cache is the sequence's own rows: draft i leaves the state after layer E−1
    /// in row i, and verification continues from rows 0...k in place.
    final class Stepper: SequenceStepper {
        let configuration: Configuration
        let promptLayers: Range<Int>
        let exitLayer: Int
        let layerCount: Int
        let vocabSize: Int
        let reuseExitQueries: Bool
        var rowsPerStep: Int { configuration.dMax + 2 }
        var logitsRowsPerStep: Int { configuration.dMax + 1 }

        /// (dMax, vocab): the draft distributions q of the round, for the acceptance test (sampling only).
        private let q: FloatBuffer?
        private var drafts: [Int] = []
        private var d: Int
        private var inRound = false
        private var budget = 0
        private var verifying = false
        private var logitsRow = 0
        private var stats = (drafted: 0, accepted: 0, rounds: 0, draftSeconds: 0.0, verifySeconds: 0.0)
        /// Running share of drafts accepted (exponential average over rounds), for the loop's choice of d.
        private var acceptance = 0.7
        /// Rounds the loop held to d = 0 (plain autoregressive steps).
        private var plainRounds = 0

        var loadAwareSpeculation: LoadAwareSpeculation? {
            // `adaptive: false` keeps the job's d whatever the load.
            guard configuration.adaptive != false else { return nil }
            return LoadAwareSpeculation(exitLayer: exitLayer, maxDrafts: configuration.dMax, acceptance: acceptance, midRound: inRound)
        }

        /// `draftsReadTheModelsWeights`: the drafted layers' states are the model's own (exact drafts,
        /// or a draft precision the model's format already is), so verification starts at layer E.
        init(configuration: Configuration, layerCount: Int, vocabSize: Int, sampling: Bool, draftsReadTheModelsWeights: Bool) {
            self.configuration = configuration
            self.layerCount = layerCount
            self.vocabSize = vocabSize
            exitLayer = configuration.exitLayer
            promptLayers = 0..<layerCount
            reuseExitQueries = draftsReadTheModelsWeights
            d = configuration.d
            q = sampling ? FloatBuffer(count: configuration.dMax * vocabSize) : nil
            drafts.reserveCapacity(configuration.dMax)
        }

        private func qRow(_ i: Int) -> UnsafeMutableBufferPointer<Float> {
            UnsafeMutableBufferPointer(start: q!.pointer + i * vocabSize, count: vocabSize)
        }

        func plan(_ sequence: DecodeSequence, into pass: SequencePass) {
            let P = sequence.position
            let E = exitLayer
            if !inRound {
                inRound = true
                drafts.removeAll(keepingCapacity: true)
                budget = min(d, sequence.draftLimit ?? d, sequence.remaining - 1, sequence.cache.capacity - P - 1)
                if sequence.draftLimit == 0 { plainRounds += 1 }
                verifying = budget <= 0
            }
            let k = drafts.count
            let input = k == 0 ? sequence.pending : drafts[k - 1]
            if !verifying {
                sequence.embed(input, row: k)
                logitsRow = pass.add(rows: k..<(k + 1), firstPosition: P + k, layers: 0..<E, precision: configuration.layers,
                                     head: k..<(k + 1), headPrecision: configuration.head)
            } else if reuseExitQueries {
                // The newest input still needs layers 0..<E; then every row of the round goes on.
                sequence.embed(input, row: k)
                pass.add(rows: k..<(k + 1), firstPosition: P + k, layers: 0..<E)
                logitsRow = pass.add(rows: 0..<(k + 1), firstPosition: P, layers: E..<layerCount, head: 0..<(k + 1))
            } else {
                // Drafted with approximate layers: their K/V and states are discarded and the
                // round's inputs run through every layer with the exact weights, in one segment.
                for l in 0..<E { sequence.cache.truncate(layer: l, to: P) }
                sequence.embed(sequence.pending, row: 0)
                for (i, token) in drafts.enumerated() { sequence.embed(token, row: i + 1) }
                logitsRow = pass.add(rows: 0..<(k + 1), firstPosition: P, layers: 0..<layerCount, head: 0..<(k + 1))
            }
        }

        func advance(_ sequence: DecodeSequence, logits: SequenceLogits) {
            if verifying { verify(sequence, logits) } else { draft(sequence, logits) }
        }

        private func draft(_ sequence: DecodeSequence, _ logits: SequenceLogits) {
            let i = drafts.count
            let row = logits.row(logitsRow, forToken: sequence.generated + i)
            let token: Int
            var confident = true
            if q != nil {
                let qi = qRow(i)
                sequence.distribution(row, into: qi)
                token = sequence.draw(from: qi)
                if configuration.isAdaptive { confident = Double(qi[token]) >= configuration.confidence }
            } else {
                token = Sampler.argmax(row)
                if configuration.isAdaptive { confident = Double(topProbability(row, best: token)) >= configuration.confidence }
            }
            drafts.append(token)
            stats.draftSeconds += sequence.lastPassSeconds
            if !confident || drafts.count >= budget { verifying = true }
        }

        private func verify(_ sequence: DecodeSequence, _ logits: SequenceLogits) {
            let step = sequence.generated
            let k = drafts.count
            // Accept the longest agreeing prefix, then take the full model's own next token.
            var accepted = 0
            var next = -1
            for i in 0..<k {
                let row = logits.row(logitsRow + i, forToken: step + i)
                if q != nil {
                    sequence.distribution(row, into: row)  // p
                    let qi = qRow(i)
                    if SpeculativeAcceptance.keeps(drafts[i], p: row, q: qi, u: sequence.uniform()) {
                        accepted += 1
                        continue
                    }
                    SpeculativeAcceptance.residual(p: row, q: qi)
                    next = sequence.draw(from: row)
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
            if accepted == k { next = sequence.sample(logits.row(logitsRow + k, forToken: step + k)) }
            stats.verifySeconds += sequence.lastPassSeconds
            stats.drafted += k
            stats.accepted += accepted
            stats.rounds += 1
            if k > 0 {
                acceptance = 0.8 * acceptance + 0.2 * Double(accepted) / Double(k)
            } else {
                // Held to d = 0 nothing is learnt; drift back towards the prior so that a sequence
                // whose drafts were poor once gets to try again later.
                acceptance = 0.95 * acceptance + 0.05 * 0.7
            }
            inRound = false
            verifying = false
            if configuration.isAdaptive {
                // Grow while everything is accepted, shrink on early rejection.
                d = accepted == k && k == d ? min(d + 2, configuration.dMax) : max(1, min(d - 1, accepted + 1))
            }
            for i in 0..<accepted where !sequence.commit(drafts[i]) { return }
            sequence.commit(next)
        }

        func report(into metrics: inout GenerationMetrics) {
            metrics.drafted = stats.drafted
            metrics.accepted = stats.accepted
            metrics.acceptanceRate = stats.drafted > 0 ? Double(stats.accepted) / Double(stats.drafted) : nil
            metrics.rounds = stats.rounds
            // The first token comes from the prefill; every other one from a round.
            metrics.tokensPerRound = stats.rounds > 0 ? Double(max(metrics.generatedTokens - 1, 0)) / Double(stats.rounds) : nil
            metrics.draftMs = stats.draftSeconds * 1000
            metrics.verifyMs = stats.verifySeconds * 1000
            metrics.draftsPerRound = stats.rounds > 0 ? Double(stats.drafted) / Double(stats.rounds) : nil
            metrics.plainRounds = plainRounds
        }

        private func topProbability(_ row: UnsafeMutableBufferPointer<Float>, best: Int) -> Float {
            let top = row[best]
            var sum = 0.0
            for x in row where x > -.infinity { sum += Double(Foundation.exp(x - top)) }
            return Float(1 / sum)
        }
    }
}
