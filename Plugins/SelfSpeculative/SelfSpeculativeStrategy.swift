import Decoding
import Engine
import Foundation

/// LayerSkip self-speculative decoding (lossless). Each round drafts up to d tokens with the first
/// E layers and the exit head, then verifies them all in ONE multi-position pass through layers
/// E..<L, which starts from the hidden states that left layer E-1 while drafting (the exit-query
/// cache), so layers 0..<E never run twice for a position. Draft and verification share one KV
/// cache; rejected positions are dropped by truncating it (a length change, no copy).
///
/// Drafts come from the early exit, from the text itself (prompt lookup: what followed the newest
/// tokens where they occurred before), or both (`hybrid`, the default: the lookup's span first,
/// then early-exit drafts after it). A lookup proposal costs nothing to make and is verified in
/// the same pass as the rest.
///
/// Greedy: the longest prefix of drafts equal to the full model's argmax is kept, plus the full
/// model's own next token — the output is exactly autoregressive decoding's. Sampling: draft x is
/// kept with probability min(1, p(x)/q(x)); at the first rejection the token is drawn from
/// normalize(max(0, p − q)); so the output distribution is exactly the full model's. A lookup
/// proposal is a function of the history alone, so its q is one-hot: kept with probability p(x).
public final class SelfSpeculativeStrategy: DecodingStrategy {
    public enum Drafter: String, CaseIterable, Sendable {
        case earlyExit = "early-exit", lookup, hybrid
        var usesExit: Bool { self != .lookup }
        var usesLookup: Bool { self != .earlyExit }
    }

    public struct Configuration: StrategyConfiguration {
        /// Omitted: the daemon fills it (with `speculations`, `drafter`, `lookup_span`) from the
        /// model's `layerskip tune` result when there is one; otherwise L/2. Meaningless with
        /// `drafter: lookup`, which drafts from the text alone.
        public var exitLayer: Int?
        public var speculations: Int?
        /// `true` or omitted: drafting stops when the draft is unsure and d follows the acceptance, up
        /// to `max_speculations` (omitted too: up to `speculations` when that is given, else 12); the
        /// decode loop lowers it under load (down to plain autoregressive steps when the batch alone
        /// fills the machine; DESIGN §2b). `false`: d stays exactly `speculations`.
        /// Adaptive is the default because a fixed d = 6 was the slowest choice measured on the
        /// default model's copy-heavy prompts (1.46× / 1.04× autoregressive against 1.81× / 1.25×).
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
        /// `early-exit`, `lookup` or `hybrid` (default).
        public var drafter: String?
        /// The longest n-gram the lookup matches (it tries n, n − 1, …, down to 2; 1 when this is 1).
        public var lookupNgram: Int?
        /// The most tokens one lookup proposes.
        public var lookupSpan: Int?
        /// K (1...vocab_size): early-exit drafts score only the K most frequent tokens (the
        /// context's `TokenRanking`: a corpus count, else the tokenizer's merge order, else id order;
        /// the end-of-sequence ids always among them), through a copy of those rows of the LM head
        /// in the draft head's precision — about K/vocab of the head's bytes per draft step.
        /// Verification scores every token, so the output is unchanged. `"full"` or omitted: no
        /// pruning. (K = vocab_size still reads a pruned copy: every row, in token order.)
        public var draftVocab: ConfigValue?
        public static let keys = ["exit_layer", "speculations", "adaptive", "draft_confidence", "max_speculations", "draft_precision",
                                  "drafter", "lookup_ngram", "lookup_span", "draft_vocab"]
        public init(exitLayer: Int?, speculations: Int? = nil, adaptive: Bool? = nil, draftConfidence: Double? = nil,
                    maxSpeculations: Int? = nil, draftPrecision: String? = nil, drafter: String? = nil,
                    lookupNgram: Int? = nil, lookupSpan: Int? = nil, draftVocab: ConfigValue? = nil) {
            self.draftVocab = draftVocab
            self.draftPrecision = draftPrecision
            self.exitLayer = exitLayer
            self.speculations = speculations
            self.adaptive = adaptive
            self.draftConfidence = draftConfidence
            self.maxSpeculations = maxSpeculations
            self.drafter = drafter
            self.lookupNgram = lookupNgram
            self.lookupSpan = lookupSpan
        }
        var d: Int { kind.usesExit ? speculations ?? 6 : 0 }
        var isAdaptive: Bool { adaptive ?? true }
        /// Drafting stops early when the draft's top probability falls below this (adaptive only).
        var confidence: Double { draftConfidence ?? 0.5 }
        /// The most early-exit drafts a round may hold (adaptive d grows up to here).
        var dMax: Int {
            guard isAdaptive else { return d }
            if let maxSpeculations { return maxSpeculations }
            // An explicit `speculations` without `adaptive: true` is a maximum, as it was before
            // adaptive became the default.
            if adaptive == nil, let speculations { return speculations }
            return max(2 * d, 12)
        }
        /// The exit an untuned job without `exit_layer` drafts with: half the layers.
        public static func untunedExit(layers: Int) -> Int { max(1, layers / 2) }
        var kind: Drafter { drafter.flatMap(Drafter.init(rawValue:)) ?? .hybrid }
        var ngram: Int { lookupNgram ?? 3 }
        var span: Int { kind.usesLookup ? lookupSpan ?? 10 : 0 }
        /// The most drafts of either kind one round holds: one verification segment stays within a
        /// sequence's rows.
        var roundDrafts: Int { min(SelfSpeculativeStrategy.maxDrafts, dMax + span) }
        static let precisions = ["exact", "int8-head", "int8", "q4-head", "q4"]
        var head: WeightPrecision { WeightPrecision(rawValue: String((draftPrecision ?? "exact").prefix { $0 != "-" })) ?? .exact }
        var layers: WeightPrecision { draftPrecision.flatMap(WeightPrecision.init(rawValue:)) ?? .exact }
        /// K of a pruned draft head; nil for the full head (`full`, or no `draft_vocab`).
        var prunedVocabularySize: Int? { if case let .int(k) = draftVocab { return k } else { return nil } }
    }

    public static let name = "self-speculative"
    public static let summary = "draft with the first exit_layer layers, verify with the rest in one pass (exact)"
    public static let plugin = StrategyPlugin(SelfSpeculativeStrategy.self)
    public static let maxDrafts = 64

    let model: LlamaModel
    let configuration: Configuration
    /// The tokens early-exit drafts score (`draft_vocab`); nil: all of them.
    public let draftVocabulary: DraftVocabulary?

    /// `context.tokenRanking` (or the tokenizer's merge order) picks a pruned draft head's tokens.
    public init(configuration: Configuration, model: LlamaModel, context: StrategyContext) {
        self.model = model
        self.configuration = configuration
        draftVocabulary = configuration.prunedVocabularySize.map { k in
            model.draftVocabulary(context.ranking(for: model.config).top(k, always: model.config.eosTokenIds))
        }
    }

    public convenience init(configuration: Configuration, model: LlamaModel) {
        self.init(configuration: configuration, model: model, context: StrategyContext())
    }

    public static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        let L = model.layerCount
        var problems: [ConfigurationProblem] = []
        guard let kind = c.drafter.map(Drafter.init(rawValue:)) ?? .hybrid else {
            return [.init(path: "\(path).drafter", expected: "one of \(Drafter.allCases.map(\.rawValue).joined(separator: ", "))",
                          found: "\"\(c.drafter!)\"")]
        }
        if kind.usesExit {
            if let e = c.exitLayer {
                if !(1..<L).contains(e) {
                    problems.append(.init(path: "\(path).exit_layer", expected: "an integer in 1...\(L - 1) (the model has \(L) layers; the verifier needs at least one)",
                                          found: "\(e)"))
                }
            }
        } else {
            // Lookup drafts come from the text: none of the early exit's settings means anything.
            let exitKeys: [(String, Bool)] = [("exit_layer", c.exitLayer != nil), ("speculations", c.speculations != nil),
                                              ("adaptive", c.adaptive != nil), ("draft_precision", c.draftPrecision != nil),
                                              ("draft_vocab", c.draftVocab != nil)]
            for (key, present) in exitKeys where present {
                problems.append(.init(path: "\(path).\(key)", expected: "only with drafter: early-exit or hybrid (lookup drafts use no exit)",
                                      found: "a value"))
            }
        }
        if !kind.usesLookup {
            for (key, present) in [("lookup_ngram", c.lookupNgram != nil), ("lookup_span", c.lookupSpan != nil)] where present {
                problems.append(.init(path: "\(path).\(key)", expected: "only with drafter: lookup or hybrid", found: "a value"))
            }
        }
        if let n = c.lookupNgram, !(1...16).contains(n) {
            problems.append(.init(path: "\(path).lookup_ngram", expected: "an integer in 1...16", found: "\(n)"))
        }
        if let span = c.lookupSpan, !(1...maxDrafts).contains(span) {
            problems.append(.init(path: "\(path).lookup_span", expected: "an integer in 1...\(maxDrafts)", found: "\(span)"))
        }
        if let d = c.speculations, !(1...maxDrafts).contains(d) {
            problems.append(.init(path: "\(path).speculations", expected: "an integer in 1...\(maxDrafts)", found: "\(d)"))
        }
        if !c.isAdaptive {
            for (key, present) in [("draft_confidence", c.draftConfidence != nil), ("max_speculations", c.maxSpeculations != nil)] where present {
                problems.append(.init(path: "\(path).\(key)", expected: "only with adaptive drafting (adaptive: true, the default)", found: "a value"))
            }
        }
        if let precision = c.draftPrecision, !Configuration.precisions.contains(precision) {
            problems.append(.init(path: "\(path).draft_precision", expected: "one of \(Configuration.precisions.joined(separator: ", "))",
                                  found: "\"\(precision)\""))
        }
        switch c.draftVocab {
        case nil, .string("full"): break
        case let .int(k) where (1...model.vocabSize).contains(k): break
        case let value?:
            problems.append(.init(path: "\(path).draft_vocab", expected: "an integer in 1...\(model.vocabSize) (the model's vocabulary) or \"full\"",
                                  found: value.description))
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

    /// Hybrid drafting's two exit choices, shared by the sequences of this strategy: what they
    /// measure (the cost of exit drafts against plain steps on this model and machine) is the
    /// model's, and a sequence of a hundred tokens is too short to learn it alone (with a choice per
    /// sequence, its first timed rounds and probes cost copy-heavy prompts on the default model 1.51×
    /// against lookup alone's 1.74×).
    public let exitChoices = SharedExitDraftChoices()

    public func makeStepper(for request: GenerationRequest) -> SequenceStepper {
        let shares = model.draftReadShares(layers: configuration.layers, head: configuration.head, vocabulary: draftVocabulary)
        return Stepper(configuration: configuration, layerCount: model.layerCount, vocabSize: model.config.vocabSize,
                sampling: !request.sampling.isGreedy, draftVocabulary: draftVocabulary,
                draftsReadTheModelsWeights: model.weightsRead(by: configuration.layers) == model.weightsRead(by: .exact),
                draftReads: DraftReads(layers: shares.layers, head: shares.head), exitChoices: exitChoices)
    }

    /// lookup [the history proposes m tokens]  →  draft [rows not yet through 0..<E, layers 0..<E,
    /// head on the newest] × k  →  verify [the newest input through 0..<E, then the round's rows
    /// through E..<L from the exit-query cache, head]  →  accept → commit.
    /// The exit-query cache is the sequence's own rows: row i holds input i of the round (the
    /// pending token, then the drafts), and after a draft pass the state leaving layer E−1;
    /// verification continues from them in place. A round without early-exit drafts (no exit,
    /// or lookup alone) runs its rows through every layer in one segment.
    final class Stepper: SequenceStepper {
        let configuration: Configuration
        let promptLayers: Range<Int>
        /// 0 for `drafter: lookup` (no layer is drafted with).
        let exitLayer: Int
        let layerCount: Int
        let vocabSize: Int
        let reuseExitQueries: Bool
        let draftVocabulary: DraftVocabulary?
        /// What a draft row reads (precision, pruned head), for the loop's prediction of a round's cost.
        let draftReads: DraftReads
        var rowsPerStep: Int { configuration.roundDrafts + 2 }
        var logitsRowsPerStep: Int { configuration.roundDrafts + 1 }

        /// (dMax, vocab): the early-exit drafts' distributions q of the round, for the acceptance
        /// test (sampling only). Lookup proposals need none: their q is one-hot.
        private let q: FloatBuffer?
        /// The round's proposals: `lookupCount` from the lookup, then the early exit's.
        private var drafts: [Int] = []
        private var lookupCount = 0
        /// Rows 0..<ranRows of the round have been through layers 0..<E (exit-query cache).
        private var ranRows = 0
        /// The prompt and every committed token (the pending one last), for the lookup.
        private var history: [Int] = []
        private var d: Int
        /// The most tokens the next lookup may propose: it doubles (up to `lookup_span`) while every
        /// proposal is kept and falls to one past the kept ones after a rejection, because every
        /// rejected row costs verification work (several rows cost more than one on a CPU).
        private var lookupLimit: Int
        /// Every proposal of the latest round that had one was kept.
        private var lookupKeptWhole = false
        private var inRound = false
        private var exitBudget = 0
        private var verifying = false
        private var logitsRow = 0
        private var stats = (drafted: 0, accepted: 0, rounds: 0, lookupDrafted: 0, lookupAccepted: 0, draftSeconds: 0.0, verifySeconds: 0.0)
        /// Running share of early-exit drafts accepted (exponential average over rounds), for the loop's choice of d.
        private var acceptance = 0.7
        /// Rounds the loop held to d = 0 (plain autoregressive steps), and hybrid rounds without
        /// early-exit drafts because they did not pay (`ExitDraftChoice`).
        private var plainRounds = 0
        /// Hybrid drafting decoding alone (`ExitDraftChoice`): whether a round the lookup left empty
        /// drafts with the exit, and whether exit drafts follow a lookup proposal (after one that was
        /// kept whole). The two are judged apart: on a small model the first paid and the second lost
        /// (copy-heavy prompts, default model: 1.76× against 1.33× autoregressive, same run).
        private let exitChoices: SharedExitDraftChoices
        /// The current round is timed for one of `exitChoices`: as one with exit drafts, or without.
        private var timedRound: (afterLookup: Bool, round: ExitDraftChoice.Round)?
        private var roundSeconds = 0.0

        var loadAwareSpeculation: LoadAwareSpeculation? {
            // `adaptive: false` keeps the job's d whatever the load; lookup alone has no d to choose.
            guard configuration.adaptive != false, configuration.kind.usesExit else { return nil }
            return LoadAwareSpeculation(exitLayer: exitLayer, maxDrafts: configuration.dMax, acceptance: acceptance, midRound: inRound,
                                        draftReads: draftReads)
        }

        /// `draftsReadTheModelsWeights`: the drafted layers' states are the model's own (exact drafts,
        /// or a draft precision the model's format already is), so verification starts at layer E.
        init(configuration: Configuration, layerCount: Int, vocabSize: Int, sampling: Bool, draftVocabulary: DraftVocabulary?,
             draftsReadTheModelsWeights: Bool, draftReads: DraftReads = .exact, exitChoices: SharedExitDraftChoices = .init()) {
            self.exitChoices = exitChoices
            self.configuration = configuration
            self.draftReads = draftReads
            self.draftVocabulary = draftVocabulary
            self.layerCount = layerCount
            self.vocabSize = vocabSize
            exitLayer = configuration.kind.usesExit ? configuration.exitLayer ?? Configuration.untunedExit(layers: layerCount) : 0
            promptLayers = 0..<layerCount
            reuseExitQueries = draftsReadTheModelsWeights
            d = configuration.d
            lookupLimit = min(configuration.span, 4)
            q = sampling && configuration.dMax > 0 ? FloatBuffer(count: configuration.dMax * vocabSize) : nil
            drafts.reserveCapacity(configuration.roundDrafts)
        }

        private func qRow(_ j: Int) -> UnsafeMutableBufferPointer<Float> {
            UnsafeMutableBufferPointer(start: q!.pointer + j * vocabSize, count: vocabSize)
        }

        /// Input i of the round: the pending token, then the drafts.
        private func input(_ i: Int, _ sequence: DecodeSequence) -> Int { i == 0 ? sequence.pending : drafts[i - 1] }

        private func startRound(_ sequence: DecodeSequence) {
            inRound = true
            drafts.removeAll(keepingCapacity: true)
            ranRows = 0
            // Every draft kept plus the full model's own token must fit the output and the cache.
            let room = min(sequence.remaining - 1, sequence.cache.capacity - sequence.position - 1)
            if sequence.draftLimit == 0 { plainRounds += 1 }
            // d = 0 from the loop means the batch's rows already fill the machine (or it waits for
            // the batch's rounds to align): a proposal's rows would then cost what they save.
            if configuration.kind.usesLookup, room > 0, sequence.draftLimit != 0 {
                if history.isEmpty { history = sequence.request.prompt }
                let tokens = sequence.output.tokens
                history.append(contentsOf: tokens[(history.count - sequence.request.prompt.count)...])
                let n = configuration.ngram
                drafts.append(contentsOf: PromptLookup.proposal(history: history, longestNgram: n, shortestNgram: min(2, n),
                                                                maxSpan: min(lookupLimit, room)))
            }
            lookupCount = drafts.count
            var exitDrafts = configuration.kind.usesExit ? min(d, sequence.draftLimit ?? d) : 0
            roundSeconds = 0
            timedRound = nil
            // Decoding alone (the loop leaves d to the sequence), hybrid drafting times its own
            // rounds once the lookup has shown it finds something (4 proposals kept): until then
            // the exit is the only source of drafts, and speculation stays on as with the exit alone.
            if configuration.kind == .hybrid, configuration.adaptive != false, sequence.draftLimit == nil, exitDrafts > 0, room > 0,
               stats.lookupAccepted >= 4, lookupCount == 0 || lookupKeptWhole {
                let useExit = exitChoices.usesExit(afterLookup: lookupCount > 0)
                if !useExit {
                    exitDrafts = 0
                    plainRounds += 1
                }
                timedRound = (lookupCount > 0, useExit ? .exitDrafted : .plain)
            }
            // Early-exit drafts after a proposal count only if all of it is kept, and each costs a
            // pass through E layers: they follow one only while proposals are being kept whole.
            if lookupCount > 0 && !lookupKeptWhole { exitDrafts = 0 }
            exitBudget = min(exitDrafts, room - lookupCount, configuration.roundDrafts - lookupCount)
            verifying = exitBudget <= 0
        }

        func plan(_ sequence: DecodeSequence, into pass: SequencePass) {
            let P = sequence.position
            let E = exitLayer
            if !inRound { startRound(sequence) }
            let k = drafts.count
            for r in ranRows...k { sequence.embed(input(r, sequence), row: r) }
            if !verifying {
                logitsRow = pass.add(rows: ranRows..<(k + 1), firstPosition: P + ranRows, layers: 0..<E, precision: configuration.layers,
                                     head: k..<(k + 1), headPrecision: configuration.head, headVocabulary: draftVocabulary)
                ranRows = k + 1
            } else if ranRows > 0 && reuseExitQueries {
                // The newest input still needs layers 0..<E; then every row of the round goes on.
                pass.add(rows: ranRows..<(k + 1), firstPosition: P + ranRows, layers: 0..<E)
                logitsRow = pass.add(rows: 0..<(k + 1), firstPosition: P, layers: E..<layerCount, head: 0..<(k + 1))
            } else {
                // Nothing drafted through the exit, or drafted with approximate layers: then their K/V
                // and states are discarded and the round's inputs run through every layer with the
                // exact weights, in one segment.
                if ranRows > 0 {
                    for l in 0..<E { sequence.cache.truncate(layer: l, to: P) }
                    for r in 0..<ranRows { sequence.embed(input(r, sequence), row: r) }
                }
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
                let qj = qRow(i - lookupCount)
                sequence.distribution(row, into: qj)
                token = sequence.draw(from: qj)
                if configuration.isAdaptive { confident = Double(qj[token]) >= configuration.confidence }
            } else {
                token = Sampler.argmax(row)
                if configuration.isAdaptive { confident = Double(topProbability(row, best: token)) >= configuration.confidence }
            }
            drafts.append(token)
            stats.draftSeconds += sequence.lastPassSeconds
            roundSeconds += sequence.lastPassSeconds
            if !confident || drafts.count - lookupCount >= exitBudget { verifying = true }
        }

        private func verify(_ sequence: DecodeSequence, _ logits: SequenceLogits) {
            let step = sequence.generated
            let k = drafts.count
            // Accept the longest agreeing prefix, then take the full model's own next token.
            var accepted = 0
            var next = -1
            for i in 0..<k {
                let row = logits.row(logitsRow + i, forToken: step + i)
                if !sequence.isGreedy {
                    sequence.distribution(row, into: row)  // p
                    if i < lookupCount {
                        if SpeculativeAcceptance.keepsProposal(drafts[i], p: row, u: sequence.uniform()) {
                            accepted += 1
                            continue
                        }
                        SpeculativeAcceptance.residual(p: row, rejecting: drafts[i])
                    } else {
                        let qj = qRow(i - lookupCount)
                        if SpeculativeAcceptance.keeps(drafts[i], p: row, q: qj, u: sequence.uniform()) {
                            accepted += 1
                            continue
                        }
                        SpeculativeAcceptance.residual(p: row, q: qj)
                    }
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
            roundSeconds += sequence.lastPassSeconds
            if let (afterLookup, round) = timedRound {
                exitChoices.record(round, afterLookup: afterLookup, tokens: accepted + 1, seconds: roundSeconds)
            }
            stats.drafted += k
            stats.accepted += accepted
            stats.lookupDrafted += lookupCount
            stats.lookupAccepted += min(accepted, lookupCount)
            if lookupCount > 0 {
                lookupKeptWhole = accepted >= lookupCount
                lookupLimit = accepted >= lookupCount ? min(configuration.span, 2 * lookupLimit) : max(1, accepted + 1)
            }
            stats.rounds += 1
            // The early exit's drafts were judged only if every lookup proposal before them was kept.
            let exitDrafted = k - lookupCount
            let exitAccepted = accepted - lookupCount
            if exitDrafted > 0 && exitAccepted >= 0 {
                acceptance = 0.8 * acceptance + 0.2 * Double(exitAccepted) / Double(exitDrafted)
                if configuration.isAdaptive {
                    // Grow while everything is accepted, shrink on early rejection.
                    d = exitAccepted == exitDrafted && exitDrafted == d ? min(d + 2, configuration.dMax)
                                                                        : max(1, min(d - 1, exitAccepted + 1))
                }
            } else if exitDrafted == 0 && lookupCount == 0 {
                // Held to d = 0 nothing is learnt; drift back towards the prior so that a sequence
                // whose drafts were poor once gets to try again later.
                acceptance = 0.95 * acceptance + 0.05 * 0.7
            }
            inRound = false
            verifying = false
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
            if configuration.kind.usesLookup {
                metrics.lookupDrafted = stats.lookupDrafted
                metrics.lookupAccepted = stats.lookupAccepted
            }
        }

        private func topProbability(_ row: UnsafeMutableBufferPointer<Float>, best: Int) -> Float {
            let top = row[best]
            var sum = 0.0
            for x in row where x > -.infinity { sum += Double(Foundation.exp(x - top)) }
            return Float(1 / sum)
        }
    }
}

/// Hybrid drafting of a sequence decoding alone: whether a round drafts with the early exit. On a
/// model whose passes are not bound by the weight stream (one that sits in the CPU's cache) an exit
/// draft costs nearly a step and verifying k rows nearly k steps, so early-exit drafts may lose while
/// lookup proposals, which cost nothing to make, still win. The choice compares the measured tokens
/// per second of rounds with exit drafts and of rounds without — committed tokens over pass seconds,
/// both sums decayed by 0.85 per timed round of their kind, so that a slow first round weighs by its
/// time and old rounds fade — and drafts with the exit unless the rounds without measured more than
/// 5% faster (timing noise must not turn a winner off). A sequence keeps one choice for the rounds
/// the lookup left empty (exit drafts or a plain step) and one for the rounds after a proposal kept
/// whole (the proposal with exit drafts after it, or alone): each compares like rounds. The exit is
/// judged after 3 timed rounds with it: the next 2 timed rounds run without to time them, and every
/// 8th after that tries the way that measured slower. Nothing timed (passes of no measured time, as
/// with fixed logits in tests) never turns the exit off.
public struct ExitDraftChoice: Sendable {
    public enum Round: Sendable { case exitDrafted, plain }
    private var exit = (tokens: 0.0, seconds: 0.0, rounds: 0)
    private var plain = (tokens: 0.0, seconds: 0.0, rounds: 0)
    /// Rounds without lookup proposals since the exit was first judged.
    private var judged = 0

    public init() {}

    public var exitRate: Double? { exit.rounds > 0 ? exit.tokens / exit.seconds : nil }
    public var plainRate: Double? { plain.rounds > 0 ? plain.tokens / plain.seconds : nil }

    public var exitsPay: Bool {
        guard exit.rounds >= 3, plain.rounds >= 2, let exitRate, let plainRate else { return true }
        return plainRate <= 1.05 * exitRate
    }

    /// Whether the coming round drafts with the exit; `timed`: it will be recorded (a probe may
    /// then go the other way), otherwise the verdict alone.
    public mutating func usesExit(timed: Bool) -> Bool {
        var use = exitsPay
        if timed, exit.rounds >= 3 {
            judged += 1
            if plain.rounds < 2 { use = false } else if judged % 8 == 0 { use.toggle() }
        }
        return use
    }

    /// A timed round: `tokens` committed in `seconds` of passes.
    public mutating func record(_ round: Round, tokens: Int, seconds: Double) {
        guard seconds > 0 else { return }
        switch round {
        case .exitDrafted: exit = (0.85 * exit.tokens + Double(tokens), 0.85 * exit.seconds + seconds, exit.rounds + 1)
        case .plain: plain = (0.85 * plain.tokens + Double(tokens), 0.85 * plain.seconds + seconds, plain.rounds + 1)
        }
    }
}

/// The two `ExitDraftChoice`s of hybrid drafting (rounds the lookup left empty; rounds after a
/// proposal kept whole), shared by the sequences of one strategy instance.
public final class SharedExitDraftChoices: @unchecked Sendable {
    // @unchecked: both choices are read and written only under `lock` (sequences of one strategy
    // may step on different decode loops' threads).
    private let lock = NSLock()
    private var empty = ExitDraftChoice()
    private var afterLookup = ExitDraftChoice()

    public init() {}

    /// Whether the coming timed round drafts with the exit (`ExitDraftChoice.usesExit(timed: true)`).
    public func usesExit(afterLookup isAfterLookup: Bool) -> Bool {
        lock.withLock { isAfterLookup ? afterLookup.usesExit(timed: true) : empty.usesExit(timed: true) }
    }

    public func record(_ round: ExitDraftChoice.Round, afterLookup isAfterLookup: Bool, tokens: Int, seconds: Double) {
        lock.withLock {
            if isAfterLookup { afterLookup.record(round, tokens: tokens, seconds: seconds) }
            else { empty.record(round, tokens: tokens, seconds: seconds) }
        }
    }
}
