import TestFixtures
import Decoding
import Engine
import Foundation
import SelfSpeculativePlugin
import Tokenization
import XCTest

/// Prompt-lookup and hybrid drafting: the lookup itself on hand-made histories, the one-hot
/// acceptance rule, and — on both fixture models and the default model — greedy output equal to
/// autoregressive decoding with prompts built to match and not to match.
final class LookupDraftingTests: XCTestCase {
    func testLookupProposesWhatFollowedTheLongestThenNewestMatch() {
        func propose(_ h: [Int], n: Int = 3, span: Int = 4) -> [Int] {
            Array(PromptLookup.proposal(history: h, longestNgram: n, shortestNgram: 1, maxSpan: span))
        }
        // The suffix [1, 2] occurs at 0 (followed by 3 4 5 6) and at 5 (followed by 9 1 2).
        XCTAssertEqual(propose([1, 2, 3, 4, 5, 1, 2, 9, 1, 2]), [9, 1, 2], "newest occurrence; stops at the history's end")
        // A longer match wins over a newer shorter one: [7, 1, 2] only at 0.
        XCTAssertEqual(propose([7, 1, 2, 3, 4, 1, 2, 8, 7, 1, 2]), [3, 4, 1, 2])
        XCTAssertEqual(propose([7, 1, 2, 3, 4, 1, 2, 8, 7, 1, 2], span: 2), [3, 4], "the span caps the proposal")
        XCTAssertEqual(propose([1, 2, 3, 4]), [], "no earlier occurrence of any suffix")
        XCTAssertEqual(propose([5]), [], "one token has nothing before it")
        // A run repeats itself: [5 5 5] matches at 1 (overlapping the suffix) and proposes the last 5.
        XCTAssertEqual(propose([5, 5, 5, 5, 5]), [5])
        XCTAssertEqual(propose([4, 5, 5, 5, 5], n: 2), [5], "[5 5] newest at 2")
        XCTAssertEqual(propose([5, 5, 6, 5, 5], n: 2), [6, 5, 5])
        // shortestNgram 2: a lone repeated token is not enough.
        XCTAssertEqual(Array(PromptLookup.proposal(history: [3, 1, 4, 2, 4], longestNgram: 3, shortestNgram: 2, maxSpan: 4)), [])
        XCTAssertEqual(Array(PromptLookup.proposal(history: [3, 1, 4, 2, 4], longestNgram: 3, shortestNgram: 1, maxSpan: 4)), [2, 4])
    }

    /// A one-hot q: the proposal is kept with probability p(x), and otherwise the token comes from
    /// p without x — together exactly p (P(x) = p(x); P(y) = (1 − p(x))·p(y)/(1 − p(x)) = p(y)).
    /// Hybrid drafting alone on a sequence times its exit-drafted and plain rounds and stops drafting
    /// with the exit while plain steps measure more than 5% faster, trying it again every 8th round.
    func testExitDraftChoiceFollowsMeasuredRates() {
        var choice = ExitDraftChoice()
        // Untimed: always the exit, lookup or not (fixed-logit tests never switch anything).
        for _ in 0..<40 { XCTAssertTrue(choice.usesExit(timed: true)) }
        choice.record(.exitDrafted, tokens: 3, seconds: 0)
        XCTAssertNil(choice.exitRate)

        // Three timed exit rounds: 1 token in 10 ms, then 3 in 12 ms twice. The rate is tokens over
        // seconds, decayed: (0.85²·1 + 0.85·3 + 3) / (0.85²·10 + 0.85·12 + 12) ms.
        choice.record(.exitDrafted, tokens: 1, seconds: 0.010)
        XCTAssertTrue(choice.usesExit(timed: true), "judged only after 3 exit rounds")
        choice.record(.exitDrafted, tokens: 3, seconds: 0.012)
        choice.record(.exitDrafted, tokens: 3, seconds: 0.012)
        let exitRate = (0.7225 * 1 + 0.85 * 3 + 3) / (0.7225 * 0.010 + 0.85 * 0.012 + 0.012)
        XCTAssertEqual(choice.exitRate!, exitRate, accuracy: 1e-9)
        XCTAssertEqual(exitRate, 213.1, accuracy: 0.1)
        // The next two empty rounds run plain to time them; untimed rounds are not probes.
        XCTAssertTrue(choice.usesExit(timed: false))
        XCTAssertFalse(choice.usesExit(timed: true))
        choice.record(.plain, tokens: 1, seconds: 0.004)
        XCTAssertTrue(choice.exitsPay, "one plain round does not decide")
        XCTAssertFalse(choice.usesExit(timed: true))
        choice.record(.plain, tokens: 1, seconds: 0.004)
        // Plain at 250/s is more than 5% faster: the exit is off from now on,
        XCTAssertFalse(choice.exitsPay)
        var exitRounds: [Int] = []
        for round in 3...17 where choice.usesExit(timed: true) { exitRounds.append(round) }
        XCTAssertEqual(exitRounds, [8, 16], "tried again every 8th round")
        XCTAssertFalse(choice.usesExit(timed: false), "and the verdict is off")
        // until probes measure it faster.
        choice.record(.exitDrafted, tokens: 4, seconds: 0.008)
        choice.record(.exitDrafted, tokens: 4, seconds: 0.008)
        XCTAssertTrue(choice.exitsPay, "\(choice.exitRate!) against \(choice.plainRate!)")
        XCTAssertTrue(choice.usesExit(timed: true))

        // Within 5% counts as paying: plain at 1.04x the exit's rate keeps the exit.
        var close = ExitDraftChoice()
        for _ in 0..<3 { close.record(.exitDrafted, tokens: 2, seconds: 0.01) }
        for _ in 0..<2 { close.record(.plain, tokens: 1, seconds: 1 / 208.0) }
        XCTAssertTrue(close.exitsPay)
    }

    /// The rounds the lookup left empty and the rounds after a kept proposal are judged apart: plain
    /// steps winning the first kind leaves exit drafts after proposals on, and the reverse.
    func testEmptyRoundsAndRoundsAfterProposalsAreJudgedApart() {
        let choices = SharedExitDraftChoices()
        // Empty rounds: exits at 100 tokens/s, plain at 250/s. After proposals: exits at 400/s.
        for _ in 0..<3 { choices.record(.exitDrafted, afterLookup: false, tokens: 1, seconds: 0.01) }
        for _ in 0..<3 { choices.record(.exitDrafted, afterLookup: true, tokens: 4, seconds: 0.01) }
        for _ in 0..<2 { XCTAssertFalse(choices.usesExit(afterLookup: false), "timing plain empty rounds") }
        for _ in 0..<2 { XCTAssertFalse(choices.usesExit(afterLookup: true), "timing proposals alone") }
        for _ in 0..<2 {
            choices.record(.plain, afterLookup: false, tokens: 1, seconds: 0.004)
            choices.record(.plain, afterLookup: true, tokens: 3, seconds: 0.01)
        }
        XCTAssertFalse(choices.usesExit(afterLookup: false), "plain empty rounds measured faster")
        XCTAssertTrue(choices.usesExit(afterLookup: true), "exit drafts after proposals measured faster")
    }

    func testOneHotAcceptanceRuleReproducesP() {
        var p: [Float] = [0.1, 0.45, 0.3, 0.15]
        let x = 2
        p.withUnsafeMutableBufferPointer { pb in
            XCTAssertTrue(SpeculativeAcceptance.keepsProposal(x, p: pb, u: 0.29))
            XCTAssertFalse(SpeculativeAcceptance.keepsProposal(x, p: pb, u: 0.31))
        }
        var residual = p
        residual.withUnsafeMutableBufferPointer { SpeculativeAcceptance.residual(p: $0, rejecting: x) }
        let expected: [Float] = [0.1 / 0.7, 0.45 / 0.7, 0, 0.15 / 0.7]
        for j in 0..<4 { XCTAssertEqual(residual[j], expected[j], accuracy: 1e-6) }
        // The general rule with q = one-hot gives the same residual.
        var general = p
        var oneHot: [Float] = [0, 0, 1, 0]
        general.withUnsafeMutableBufferPointer { g in oneHot.withUnsafeMutableBufferPointer { SpeculativeAcceptance.residual(p: g, q: $0) } }
        for j in 0..<4 { XCTAssertEqual(general[j], residual[j], accuracy: 1e-6) }
        let out = (0..<4).map { j in Double(j == x ? p[x] : (1 - p[x]) * residual[j]) }
        for j in 0..<4 { XCTAssertEqual(out[j], Double(p[j]), accuracy: 1e-6) }
    }

    static let drafters: [(String, [String: ConfigValue])] = [
        ("lookup", ["drafter": .string("lookup")]),
        ("lookup n=1 span=3", ["drafter": .string("lookup"), "lookup_ngram": .int(1), "lookup_span": .int(3)]),
        ("hybrid E=1 d=3", ["exit_layer": .int(1), "speculations": .int(3)]),
        ("hybrid E=2 d=2 span=16", ["exit_layer": .int(2), "speculations": .int(2), "drafter": .string("hybrid"), "lookup_span": .int(16)]),
        ("hybrid adaptive", ["exit_layer": .int(2), "adaptive": .bool(true)]),
        ("hybrid int8", ["exit_layer": .int(1), "speculations": .int(4), "draft_precision": .string("int8")]),
    ]

    /// Greedy lookup and hybrid drafting equal autoregressive decoding on both fixture models, for
    /// the fixture prompts (little to match) and for prompts that repeat themselves (much to match).
    func testGreedyLookupAndHybridEqualAutoregressiveOnTheFixtureModels() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            var lookupAccepted = 0, lookupDrafted = 0
            for prompt in try Fixtures.expected(name).prompts {
                let repeated = prompt.ids + prompt.ids.dropFirst() + prompt.ids.dropFirst().prefix(3)
                for ids in [prompt.ids, repeated] {
                    let n = 24
                    let reference = try generate(model, StrategySpec(name: "autoregressive"), prompt: ids, maxNewTokens: n, minNewTokens: n).tokens
                    for (label, options) in Self.drafters {
                        let run = try generate(model, StrategySpec(name: "self-speculative", options: options), prompt: ids,
                                               maxNewTokens: n, minNewTokens: n)
                        XCTAssertEqual(run.tokens, reference, "\(name) \(label) prompt \(ids)")
                        let m = run.metrics
                        XCTAssertLessThanOrEqual(m.lookupAccepted ?? 0, m.lookupDrafted ?? 0)
                        XCTAssertLessThanOrEqual(m.lookupDrafted ?? 0, m.drafted ?? 0)
                        XCTAssertLessThanOrEqual(m.accepted ?? 0, m.drafted ?? 0)
                        lookupAccepted += m.lookupAccepted ?? 0
                        lookupDrafted += m.lookupDrafted ?? 0
                    }
                }
            }
            // The repeated prompts made the lookup propose, and some proposals were right and some wrong.
            XCTAssertGreaterThan(lookupAccepted, 0, name)
            XCTAssertGreaterThan(lookupDrafted, lookupAccepted, name)
        }
    }

    /// On the trained default model, a prompt that holds the answer (its own continuation of a
    /// text, then that text again) makes long lookup spans that verification keeps.
    func testGreedyLookupAndHybridEqualAutoregressiveOnTheDefaultModel() throws {
        let model = try LlamaModel(directory: Fixtures.defaultModel)
        let tokenizer = try Tokenizer(contentsOf: Fixtures.defaultModel.appendingPathComponent("tokenizer.json"))
        let n = 40
        let plain = try tokenizer.encode("import os\n\nclass Config:\n")
        let continuation = try generate(model, StrategySpec(name: "autoregressive"), prompt: plain, maxNewTokens: n, minNewTokens: n).tokens
        let copy = plain + continuation + (try tokenizer.encode("\n\n\n", addSpecialTokens: false)) + plain.dropFirst()
        for ids in [copy, plain] {
            let reference = try generate(model, StrategySpec(name: "autoregressive"), prompt: ids, maxNewTokens: n, minNewTokens: n).tokens
            for (label, options) in Self.drafters + [("hybrid E=4 d=4", ["exit_layer": .int(4), "speculations": .int(4)])] {
                let run = try generate(model, StrategySpec(name: "self-speculative", options: options), prompt: ids, maxNewTokens: n, minNewTokens: n)
                XCTAssertEqual(run.tokens, reference, "default model, \(label)")
                if ids == copy && label == "lookup" {
                    // The answer partly repeats the earlier continuation (this small model copies
                    // loosely): the lookup proposes much of it correctly.
                    XCTAssertGreaterThanOrEqual(run.metrics.lookupAccepted ?? 0, n / 4, "\(run.metrics)")
                    XCTAssertLessThan(run.metrics.rounds ?? n, 3 * n / 4, "several tokens per verification pass")
                }
            }
        }
    }

    /// Lookup and hybrid sequences in one batch produce what each produces alone.
    func testBatchedLookupSequencesEqualTheirSoloRuns() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let prompts = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts.map { $0.ids + $0.ids.dropFirst() }
        let n = 20
        let loop = DecodeLoop(model: model, caches: KVCachePool(config: model.config, budget: 1 << 26), maxBatch: 8)
        var expected: [[Int]] = [], got: [Int: [Int]] = [:]
        var index = 0
        for ids in prompts {
            for (_, options) in Self.drafters {
                let spec = StrategySpec(name: "self-speculative", options: options)
                expected.append(try generate(model, spec, prompt: ids, maxNewTokens: n, minNewTokens: n).tokens)
                let request = GenerationRequest(prompt: ids, maxNewTokens: n, minNewTokens: n, eosTokenIds: [])
                let output = GenerationOutput(request: request, tokenizer: nil)
                let i = index
                loop.submit(request, strategy: try registry.make(spec, model: model), output: output) { _ in got[i] = output.tokens }
                index += 1
            }
        }
        loop.run()
        for i in expected.indices { XCTAssertEqual(got[i], expected[i], "sequence \(i)") }
    }
}
