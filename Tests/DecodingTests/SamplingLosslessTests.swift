import TestFixtures
import Decoding
import Engine
import Foundation
import XCTest

/// The exact distribution of the first `steps` tokens under the full model and the chi-square
/// test against it (SamplingLosslessTests below; PrunedDraftHeadTests).
struct ExactSamplingCheck {
    let sampling = SamplingParameters(temperature: 1.5, topK: 3, topP: 1)
    let steps = 3

    /// Exact probabilities of every 3-token continuation under the full model.
    func exactDistribution(_ model: LlamaModel, prompt: [Int]) -> [[Int]: Double] {
        let sampler = Sampler(parameters: sampling, vocabSize: model.config.vocabSize)
        var result: [[Int]: Double] = [:]
        func expand(_ prefix: [Int], _ probability: Double) {
            if prefix.count == steps { result[prefix] = probability; return }
            let sequence = prompt + prefix
            let cache = model.makeCache(capacity: sequence.count)
            let h = model.makeActivations(capacity: sequence.count)
            let logits = model.makeLogits()
            model.embed(sequence, into: h)
            model.forward(h, layers: 0..<model.layerCount, positions: 0..<sequence.count, cache: cache)
            model.exitLogits(h, rows: (sequence.count - 1)..<sequence.count, into: logits)
            let row = logits.row(0)
            sampler.distribution(row, into: row)
            for t in 0..<row.count where row[t] > 0 { expand(prefix + [t], probability * Double(row[t])) }
        }
        expand([], 1)
        return result
    }

    /// The distribution's degrees of freedom and the chi-square bound the tests use: its 99.9th
    /// percentile ≈ df + 3.1·sqrt(2·df) + 2 for df ≈ 26 (Wilson–Hilferty ≈ 54.1).
    func chiSquareBound(_ exact: [[Int]: Double], file: StaticString = #filePath, line: UInt = #line) -> (Double, Double) {
        XCTAssertEqual(exact.values.reduce(0, +), 1, accuracy: 1e-6, file: file, line: line)
        let df = Double(exact.count - 1)
        return (df, df + 3.1 * (2 * df).squareRoot() + 2)
    }

    func chiSquare(_ counts: [[Int]: Int], _ exact: [[Int]: Double], samples: Int) -> Double {
        var chi = 0.0
        for (sequence, p) in exact {
            let expected = p * Double(samples)
            let observed = Double(counts[sequence] ?? 0)
            chi += (observed - expected) * (observed - expected) / expected
        }
        // A sequence outside the support is an outright failure.
        for (sequence, c) in counts where exact[sequence] == nil { chi += Double(c) * 1e6 }
        return chi
    }
}

/// Self-speculative sampling must draw from exactly the full model's distribution. The test
/// enumerates the exact distribution of the first three tokens under the full model (top-k 3,
/// so 27 sequences), then checks seeded self-speculative runs against it with a chi-square
/// goodness-of-fit test. Autoregressive sampling is checked the same way as a control.
///
/// The test was seen to fail when the rule was broken while writing it (df 26, bound 50.4):
/// resampling from p instead of normalize(max(0, p − q)) after a rejection gave chi-square 298
/// (E=1, d=2) and 338 (E=2, d=3); accepting every draft (ignoring min(1, p/q)) produced sequences
/// outside the full model's top-k support (chi-square > 1e9). The correct rule gave 21 and 34,
/// autoregressive sampling 24.
final class SamplingLosslessTests: XCTestCase {
    let check = ExactSamplingCheck()
    var sampling: SamplingParameters { check.sampling }
    var steps: Int { check.steps }
    func exactDistribution(_ model: LlamaModel, prompt: [Int]) -> [[Int]: Double] { check.exactDistribution(model, prompt: prompt) }
    func chiSquareBound(_ exact: [[Int]: Double], file: StaticString = #filePath, line: UInt = #line) -> (Double, Double) {
        check.chiSquareBound(exact, file: file, line: line)
    }
    func chiSquare(_ counts: [[Int]: Int], _ exact: [[Int]: Double], samples: Int) -> Double { check.chiSquare(counts, exact, samples: samples) }

    func sampleCounts(_ model: LlamaModel, _ spec: StrategySpec, prompt: [Int], samples: Int) throws -> [[Int]: Int] {
        var counts: [[Int]: Int] = [:]
        for seed in 0..<samples {
            var params = sampling
            params.seed = UInt64(seed) &* 7919 &+ 11
            let run = try generate(model, spec, prompt: prompt, maxNewTokens: steps, minNewTokens: steps, sampling: params)
            counts[run.tokens, default: 0] += 1
        }
        return counts
    }

    func testSelfSpeculativeSamplingMatchesTheFullModelDistribution() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let prompt = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts[1].ids
        let exact = exactDistribution(model, prompt: prompt)
        let (df, bound) = chiSquareBound(exact)
        let samples = 2500

        // The draft (exit after layer 1) must really differ from the full model, or the test proves nothing.
        let draftIsDifferent = try generate(model, StrategySpec(name: "early-exit", options: ["exit_layer": .int(1)]),
                                            prompt: prompt, maxNewTokens: 8, minNewTokens: 8).tokens
        let full = try generate(model, StrategySpec(name: "autoregressive"), prompt: prompt, maxNewTokens: 8, minNewTokens: 8).tokens
        XCTAssertNotEqual(draftIsDifferent, full)

        let control = chiSquare(try sampleCounts(model, StrategySpec(name: "autoregressive"), prompt: prompt, samples: samples), exact, samples: samples)
        XCTAssertLessThan(control, bound, "autoregressive sampling vs the exact distribution")
        let int8Drafts = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(3), "draft_precision": .string("int8")])
        for (e, d, spec) in [(1, 2, selfSpeculative(1, 2)), (2, 3, selfSpeculative(2, 3)), (2, 3, int8Drafts)] {
            let chi = chiSquare(try sampleCounts(model, spec, prompt: prompt, samples: samples), exact, samples: samples)
            XCTAssertLessThan(chi, bound, "self-speculative E=\(e) d=\(d): chi-square \(chi), df \(df)")
        }
    }

    /// Lookup proposals are drafts with a one-hot q: kept with probability p(x), else a draw from
    /// p without x. The prompt ends with the model's own greedy continuation of its start, so that
    /// the tokens sampled have occurred before (n = 1 matches any token seen before) and what
    /// followed them then is often likely again: proposals come at most rounds, and both outcomes occur.
    func testLookupAndHybridSamplingMatchTheFullModelDistribution() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let ids = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts[1].ids
        let prompt = ids + (try generate(model, StrategySpec(name: "autoregressive"), prompt: ids, maxNewTokens: 48, minNewTokens: 48).tokens)
        let exact = exactDistribution(model, prompt: prompt)
        let (df, bound) = chiSquareBound(exact)
        let samples = 2500
        let lookup = StrategySpec(name: "self-speculative", options: ["drafter": .string("lookup"), "lookup_ngram": .int(1)])
        let hybrid = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(1), "speculations": .int(2), "lookup_ngram": .int(1),
                                                                      "lookup_span": .int(2)])
        for spec in [lookup, hybrid] {
            var counts: [[Int]: Int] = [:]
            var proposed = 0, kept = 0
            for seed in 0..<samples {
                var params = sampling
                params.seed = UInt64(seed) &* 7919 &+ 11
                let run = try generate(model, spec, prompt: prompt, maxNewTokens: steps, minNewTokens: steps, sampling: params)
                counts[run.tokens, default: 0] += 1
                proposed += run.metrics.lookupDrafted ?? 0
                kept += run.metrics.lookupAccepted ?? 0
            }
            XCTAssertGreaterThan(proposed, samples / 4, "\(spec): the lookup proposed")
            XCTAssertGreaterThan(kept, samples / 20, "\(spec): some proposals kept")
            XCTAssertLessThan(kept, proposed - samples / 20, "\(spec): some proposals rejected")
            let chi = chiSquare(counts, exact, samples: samples)
            XCTAssertLessThan(chi, bound, "\(spec): chi-square \(chi), df \(df), \(kept)/\(proposed) proposals kept")
        }
    }

    /// On quantised weights the distribution to reproduce is the quantised model's own: 4-bit
    /// drafts over int8 verification, and exact drafts on a q4 model.
    func testSelfSpeculativeSamplingOnQuantizedWeightsMatchesTheirDistribution() throws {
        let q4Drafts = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(3), "draft_precision": .string("q4")])
        for (format, spec) in [(WeightFormat.int8, q4Drafts), (.q4, selfSpeculative(1, 2))] {
            let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"), format: format)
            let prompt = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts[1].ids
            let exact = exactDistribution(model, prompt: prompt)
            let (df, bound) = chiSquareBound(exact)
            let chi = chiSquare(try sampleCounts(model, spec, prompt: prompt, samples: 2500), exact, samples: 2500)
            XCTAssertLessThan(chi, bound, "\(format) weights, \(spec): chi-square \(chi), df \(df)")
        }
    }

    /// The same test with every sample in one decode loop of 16 sequences: rounds in lockstep, d
    /// chosen by load (a flat cost curve, so speculation pays), d = 0 rounds while a sequence
    /// waits for the batch's rounds to align, sequences joining as others finish.
    func testBatchedSelfSpeculativeSamplingMatchesTheFullModelDistribution() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let prompt = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts[1].ids
        let exact = exactDistribution(model, prompt: prompt)
        let (df, bound) = chiSquareBound(exact)
        let samples = 2500
        for spec in [selfSpeculative(1, 2), StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(3), "draft_precision": .string("int8")])] {
            let loop = DecodeLoop(model: model, caches: KVCachePool(config: model.config, budget: 1 << 26), maxBatch: 16)
            loop.costCurve = PassCostCurve(costs: Array(repeating: 1, count: 64), layerShare: 1)
            let strategy = try registry.make(spec, model: model)
            var counts: [[Int]: Int] = [:]
            var drafted = 0
            for seed in 0..<samples {
                var params = sampling
                params.seed = UInt64(seed) &* 7919 &+ 11
                let request = GenerationRequest(prompt: prompt, maxNewTokens: steps, minNewTokens: steps, sampling: params, eosTokenIds: [])
                let output = GenerationOutput(request: request, tokenizer: nil)
                loop.submit(request, strategy: strategy, output: output) {
                    counts[output.tokens, default: 0] += 1
                    drafted += $0.metrics?.drafted ?? 0
                }
            }
            loop.run()
            XCTAssertGreaterThan(drafted, samples / 2, "the batch really speculated")
            XCTAssertGreaterThan(loop.chosenDraftLength ?? 0, 0)
            let chi = chiSquare(counts, exact, samples: samples)
            XCTAssertLessThan(chi, bound, "batched \(spec): chi-square \(chi), df \(df)")
        }
    }

    func testSeedMakesSamplingReproducible() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let prompt = try Fixtures.expected("tiny-spm-mha-bf16-sharded").prompts[0].ids
        let params = SamplingParameters(temperature: 0.8, topK: 40, topP: 0.95, seed: 1234)
        for spec in [StrategySpec(name: "autoregressive"), selfSpeculative(3, 4)] {
            let a = try generate(model, spec, prompt: prompt, maxNewTokens: 16, sampling: params)
            let b = try generate(model, spec, prompt: prompt, maxNewTokens: 16, sampling: params)
            XCTAssertEqual(a.tokens, b.tokens)
            XCTAssertEqual(a.metrics.seed, 1234)
        }
    }
}
