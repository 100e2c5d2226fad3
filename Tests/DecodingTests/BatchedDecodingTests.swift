import TestFixtures
import Decoding
import Engine
import Foundation
import XCTest

/// Batching must not change a single token: every sequence of a mixed batch (different
/// strategies, exit layers, draft lengths, prompt lengths and output lengths, so that sequences
/// join and leave while others run) produces exactly what it produces alone.
final class BatchedDecodingTests: XCTestCase {
    struct Case {
        var spec: StrategySpec
        var prompt: [Int]
        var maxNewTokens: Int
        var sampling: SamplingParameters = .greedy
    }

    /// Runs every case through one loop of `maxBatch` slots; returns each case's tokens and metrics.
    func runBatched(_ model: LlamaModel, _ cases: [Case], maxBatch: Int, budget: Int = 1 << 26,
                    afterPass: ((DecodeLoop, KVCachePool) -> Void)? = nil) throws -> [(tokens: [Int], metrics: GenerationMetrics)] {
        let pool = KVCachePool(config: model.config, budget: budget)
        let loop = DecodeLoop(model: model, caches: pool, maxBatch: maxBatch)
        var results = [(tokens: [Int], metrics: GenerationMetrics)?](repeating: nil, count: cases.count)
        for (i, c) in cases.enumerated() {
            let request = GenerationRequest(prompt: c.prompt, maxNewTokens: c.maxNewTokens, minNewTokens: c.maxNewTokens,
                                            sampling: c.sampling, eosTokenIds: Set(model.config.eosTokenIds))
            let output = GenerationOutput(request: request, tokenizer: nil)
            loop.submit(request, strategy: try registry.make(c.spec, model: model), output: output) { completion in
                XCTAssertNil(completion.error)
                results[i] = (output.tokens, completion.metrics!)
            }
        }
        if let afterPass { loop.afterPass = { afterPass($0, pool) } }
        loop.run()
        return try results.map { try XCTUnwrap($0) }
    }

    func mixedCases(_ model: LlamaModel, prompts: [[Int]]) -> [Case] {
        let L = model.layerCount
        var specs: [StrategySpec] = [
            StrategySpec(name: "autoregressive"),
            StrategySpec(name: "early-exit", options: ["exit_layer": .int(max(1, L / 2))]),
            StrategySpec(name: "early-exit", options: ["confidence": .double(0.3), "check_every": .int(1)]),
            StrategySpec(name: "self-speculative", options: ["exit_layer": .int(1), "speculations": .int(3)]),
            StrategySpec(name: "self-speculative", options: ["exit_layer": .int(L - 1), "speculations": .int(7)]),
            StrategySpec(name: "self-speculative", options: ["exit_layer": .int(max(1, L / 2)), "speculations": .int(2), "adaptive": .bool(true)]),
            StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(4), "draft_precision": .string("int8")]),
            StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(5), "draft_precision": .string("int8-head")]),
        ]
        specs += specs.prefix(3)
        return specs.enumerated().map { i, spec in
            Case(spec: spec, prompt: prompts[i % prompts.count], maxNewTokens: 6 + (i * 5) % 17)
        }
    }

    func testMixedBatchesEqualSoloRunsOnBothFixtureModels() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            var prompts = try Fixtures.expected(name).prompts.map(\.ids)
            // A prompt longer than one prefill chunk, so chunked prefill interleaves with decoding.
            var rng = SplitMix64(seed: 5)
            prompts.append((0..<(DecodeLoop.prefillChunk + 37)).map { _ in Int(rng.next() % UInt64(model.config.vocabSize)) })
            let cases = mixedCases(model, prompts: prompts)
            let solo = try cases.map { c in
                try generate(model, c.spec, prompt: c.prompt, maxNewTokens: c.maxNewTokens, minNewTokens: c.maxNewTokens).tokens
            }
            for maxBatch in [2, 5, cases.count] {
                var peak = 0
                let batched = try runBatched(model, cases, maxBatch: maxBatch) { loop, _ in peak = max(peak, loop.active.count) }
                XCTAssertEqual(peak, min(maxBatch, cases.count), "\(name): the batch filled up")
                for (i, c) in cases.enumerated() {
                    XCTAssertEqual(batched[i].tokens, solo[i], "\(name) batch \(maxBatch) case \(i) \(c.spec)")
                    XCTAssertEqual(batched[i].tokens.count, c.maxNewTokens)
                }
            }
        }
    }

    /// The same on int8 weights (`LlamaModel(format: .int8)`): the q8 kernels are row-independent too.
    func testMixedBatchesOnInt8WeightsEqualSoloRuns() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name), format: .int8)
            let prompts = try Fixtures.expected(name).prompts.map(\.ids)
            let cases = mixedCases(model, prompts: prompts)
            let solo = try cases.map { c in
                try generate(model, c.spec, prompt: c.prompt, maxNewTokens: c.maxNewTokens, minNewTokens: c.maxNewTokens).tokens
            }
            let batched = try runBatched(model, cases, maxBatch: cases.count)
            for (i, c) in cases.enumerated() {
                XCTAssertEqual(batched[i].tokens, solo[i], "\(name) int8 weights, case \(i) \(c.spec)")
            }
        }
    }

    /// Seeded sampling is per sequence: batched runs draw the same tokens as solo runs (with d
    /// fixed: a load-aware d changes how the draws are used, not their distribution; the
    /// batched chi-square test in SamplingLosslessTests covers that).
    func testSampledSequencesAreTheSameBatched() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let prompts = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts.map(\.ids)
        var cases = mixedCases(model, prompts: prompts)
        for i in cases.indices {
            cases[i].sampling = SamplingParameters(temperature: 1.2, topK: 5, seed: UInt64(100 + i))
            if cases[i].spec.name == "self-speculative" { cases[i].spec.options["adaptive"] = .bool(false) }
        }
        let solo = try cases.map { c in
            try generate(model, c.spec, prompt: c.prompt, maxNewTokens: c.maxNewTokens, minNewTokens: c.maxNewTokens, sampling: c.sampling).tokens
        }
        let batched = try runBatched(model, cases, maxBatch: 4)
        for i in cases.indices { XCTAssertEqual(batched[i].tokens, solo[i], "case \(i) \(cases[i].spec)") }
    }

    /// The KV pool never holds more than its budget; sequences that find it full wait (they do not
    /// fail) and reuse the caches that others release.
    func testCachePoolBoundsTheBatchAndSequencesWait() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let prompt = try Fixtures.expected("tiny-spm-mha-bf16-sharded").prompts[0].ids
        let cases = (0..<7).map { i in Case(spec: StrategySpec(name: "autoregressive"), prompt: prompt, maxNewTokens: 4 + i) }
        let pool = KVCachePool(config: model.config, budget: 1)
        let oneCache = pool.byteCount(capacity: prompt.count + 10)
        let budget = 2 * oneCache + oneCache / 2
        var peak = 0
        let solo = try cases.map { try generate(model, $0.spec, prompt: $0.prompt, maxNewTokens: $0.maxNewTokens, minNewTokens: $0.maxNewTokens).tokens }
        let batched = try runBatched(model, cases, maxBatch: 7, budget: budget) { loop, pool in
            XCTAssertLessThanOrEqual(pool.bytesHeld, budget)
            XCTAssertLessThanOrEqual(pool.bytesInUse, budget)
            peak = max(peak, loop.active.count)
        }
        XCTAssertEqual(peak, 2, "two caches fit the budget")
        for i in cases.indices { XCTAssertEqual(batched[i].tokens, solo[i]) }
        XCTAssertGreaterThan(batched.last!.metrics.queueMs ?? 0, 0, "the last sequence waited for a cache")
    }

    func testASequenceThatCanNeverFitFailsAtOnceAndOthersRun() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let pool = KVCachePool(config: model.config, budget: KVCache.byteCount(config: model.config, capacity: 40))
        let loop = DecodeLoop(model: model, caches: pool, maxBatch: 4)
        var errors: [Int: Error] = [:], tokens: [Int: Int] = [:]
        for (i, n) in [5, 400, 6].enumerated() {
            let request = GenerationRequest(prompt: [1, 2, 3], maxNewTokens: n, minNewTokens: n, eosTokenIds: [])
            let output = GenerationOutput(request: request, tokenizer: nil)
            loop.submit(request, strategy: try registry.make(StrategySpec(name: "autoregressive"), model: model), output: output) {
                if let e = $0.error { errors[i] = e } else { tokens[i] = output.tokens.count }
            }
        }
        loop.run()
        XCTAssertEqual(tokens, [0: 5, 2: 6])
        XCTAssertTrue("\(errors[1] ?? DecodeError.emptyPrompt)".contains("cache"), "\(errors)")
    }

    /// Cancelling one sequence stops it at the next pass; its batch-mates' outputs are unchanged.
    func testCancellingOneSequenceLeavesTheOthersAlone() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let prompts = try Fixtures.expected("tiny-bytelevel-gqa-f32").prompts.map(\.ids)
        let cases = mixedCases(model, prompts: prompts).prefix(6)
        let solo = try cases.map { try generate(model, $0.spec, prompt: $0.prompt, maxNewTokens: $0.maxNewTokens, minNewTokens: $0.maxNewTokens).tokens }
        let loop = DecodeLoop(model: model, caches: KVCachePool(config: model.config, budget: 1 << 26), maxBatch: 6)
        var got: [Int: (FinishReason?, [Int])] = [:]
        for (i, c) in cases.enumerated() {
            let request = GenerationRequest(prompt: c.prompt, maxNewTokens: c.maxNewTokens, minNewTokens: c.maxNewTokens, eosTokenIds: [])
            var watched: GenerationOutput?
            let output = GenerationOutput(request: request, tokenizer: nil, isCancelled: { i == 3 && (watched?.tokens.count ?? 0) >= 2 })
            watched = output
            loop.submit(request, strategy: try registry.make(c.spec, model: model), output: output) { _ in got[i] = (output.finishReason, output.tokens) }
        }
        loop.run()
        for i in cases.indices where i != 3 { XCTAssertEqual(got[i]?.1, solo[i], "case \(i)") }
        XCTAssertEqual(got[3]?.0, .cancelled)
        XCTAssertEqual(got[3]?.1, Array(solo[3].prefix(got[3]?.1.count ?? 0)))
    }
}

/// Load-aware speculation: the choice of d on a cost curve, and the loop applying it.
final class LoadAwareSpeculationTests: XCTestCase {
    /// Two layers, exit after the first, all weights in the layers; c(n) = 1 up to 4 rows, then +1
    /// per row. By hand: at α = 0.5, d = 1 gives τ = 1.5 tokens in 0.5 + 1 = 1.5 units (rate 1.0, no
    /// better than plain decoding) and d = 2 gives 1.75 in 2 (0.875): d = 0. At α = 0.9 the rates
    /// are 1.27, 1.36, 1.38 for d = 1, 2, 3: d = 3.
    func testBestDraftLengthByHand() {
        let curve = PassCostCurve(costs: [1, 1, 1, 1, 2, 3], layerShare: 1)
        XCTAssertEqual(curve.cost(8), 5)
        XCTAssertEqual(SpeculationPolicy.bestDraftLength(curve: curve, speculating: 1, others: 0, exitLayer: 1, layers: 2,
                                                         acceptance: 0.5, maxDrafts: 3), 0)
        XCTAssertEqual(SpeculationPolicy.bestDraftLength(curve: curve, speculating: 1, others: 0, exitLayer: 1, layers: 2,
                                                         acceptance: 0.9, maxDrafts: 3), 3)
        // Compute-bound from the first row (c(n) = n): a full batch leaves nothing to speculate with.
        let linear = PassCostCurve(costs: (1...32).map(Double.init), layerShare: 0.8)
        XCTAssertEqual(SpeculationPolicy.bestDraftLength(curve: linear, speculating: 16, others: 0, exitLayer: 8, layers: 16,
                                                         acceptance: 0.9, maxDrafts: 6), 0)
        // Flat (bandwidth-bound) everywhere, E = L/2, 80% of the bytes in the layers: a draft pass
        // costs 0.8·0.5 + 0.2 = 0.6 of a full one, so 4·τ(d) / (0.6·d + 1) peaks at d = 2 (4.93
        // against 4.91 for d = 3 and 4.54 for d = 6).
        let flat = PassCostCurve(costs: Array(repeating: 1, count: 64), layerShare: 0.8)
        XCTAssertEqual(SpeculationPolicy.bestDraftLength(curve: flat, speculating: 4, others: 0, exitLayer: 8, layers: 16,
                                                         acceptance: 0.9, maxDrafts: 6), 2)
        // Sequences of other strategies need every layer in every pass, so drafts save less.
        XCTAssertLessThanOrEqual(SpeculationPolicy.bestDraftLength(curve: curve, speculating: 1, others: 3, exitLayer: 1, layers: 2,
                                                                   acceptance: 0.9, maxDrafts: 3), 3)
    }

    /// What a draft reads moves the best d. Flat curve, 80% of the bytes in the layers, E = L/2, 4
    /// sequences at α = 0.9 (τ(d) = 1.9, 2.71, 3.439, 4.0951, 4.6856 for d = 1...5): an exact draft
    /// pass costs 0.4 + 0.2 = 0.6 and d = 2 wins (above); with a head of 1/16 of the vocabulary it
    /// costs 0.4 + 0.2/16 = 0.4125, so 4τ(d) / (0.4125·d + 1) = 5.381, 5.940, 6.148, 6.181, 6.120: d = 4.
    /// Approximate layers make verification run layers 0..<E again: two layers, exit after the
    /// first, c = 1 up to 4 rows then +1 a row, one sequence, d = 4: exact drafts cost 4·0.5 and
    /// verification 0.5·c(1) + 0.5·c(5) = 1.5 (rate 4.0951 / 3.5 = 1.170); int8 ones (half the
    /// bytes) 4·0.25, and verification c(5) = 2 (4.0951 / 3 = 1.365).
    func testDraftReadsByHand() {
        let flat = PassCostCurve(costs: Array(repeating: 1, count: 64), layerShare: 0.8)
        let pruned = DraftReads(layers: 1, head: 1.0 / 16)
        XCTAssertTrue(pruned.reusesExitStates)
        XCTAssertEqual(SpeculationPolicy.rate(curve: flat, speculating: 4, others: 0, exitLayer: 8, layers: 16, acceptance: 0.9,
                                              draftLength: 4, draftReads: pruned), 4 * 4.0951 / 2.65, accuracy: 1e-9)
        XCTAssertEqual(SpeculationPolicy.bestDraftLength(curve: flat, speculating: 4, others: 0, exitLayer: 8, layers: 16,
                                                         acceptance: 0.9, maxDrafts: 6, draftReads: pruned), 4)
        let curve = PassCostCurve(costs: [1, 1, 1, 1, 2, 3], layerShare: 1)
        XCTAssertEqual(SpeculationPolicy.rate(curve: curve, speculating: 1, others: 0, exitLayer: 1, layers: 2, acceptance: 0.9,
                                              draftLength: 4), 4.0951 / 3.5, accuracy: 1e-9)
        let int8 = DraftReads(layers: 0.5, head: 0.5)
        XCTAssertFalse(int8.reusesExitStates)
        XCTAssertEqual(SpeculationPolicy.rate(curve: curve, speculating: 1, others: 0, exitLayer: 1, layers: 2, acceptance: 0.9,
                                              draftLength: 4, draftReads: int8), 4.0951 / 3, accuracy: 1e-9)
        // Other sequences read the model's weights in every pass: a draft pass costs c(A) + r·c(S) in a part r < 1.
        let linear = PassCostCurve(costs: (1...32).map(Double.init), layerShare: 1)
        // A = 2, S = 1, E = 1 of 2, d = 1: draft 0.5·(2 + 0.5·1) + 0.5·2 = 2.25; verify c(2 + 2) = 4; 2·2 + 1.9 tokens.
        XCTAssertEqual(SpeculationPolicy.rate(curve: linear, speculating: 1, others: 2, exitLayer: 1, layers: 2, acceptance: 0.9,
                                              draftLength: 1, draftReads: int8), 5.9 / 6.25, accuracy: 1e-9)
    }

    /// max_batch auto: the smallest n within 5% of the best n / c(n) up to 32.
    func testSuggestedBatch() {
        XCTAssertEqual(DecodeLoop.suggestedBatch(curve: PassCostCurve(costs: Array(repeating: 1, count: 32), layerShare: 1)), 31)
        XCTAssertEqual(DecodeLoop.suggestedBatch(curve: PassCostCurve(costs: (1...32).map(Double.init), layerShare: 1)), 1)
        // Flat to 4 rows, then compute-bound: c(n) = n / 4 beyond, so n / c(n) = n up to 4 and 4
        // after; the best is 4 and 95% of it (3.8) is first reached at n = 4.
        let knee = PassCostCurve(costs: (1...32).map { $0 <= 4 ? 1 : 1 + Double($0 - 4) / 4 }, layerShare: 1)
        XCTAssertEqual(DecodeLoop.suggestedBatch(curve: knee), 4)
    }

    func runBatch(_ model: LlamaModel, curve: PassCostCurve, specs: [StrategySpec], prompt: [Int], n: Int)
        throws -> (tokens: [[Int]], metrics: [GenerationMetrics], chosen: Int?) {
        let loop = DecodeLoop(model: model, caches: KVCachePool(config: model.config, budget: 1 << 26), maxBatch: specs.count)
        loop.costCurve = curve
        var tokens = [[Int]](repeating: [], count: specs.count)
        var metrics = [GenerationMetrics?](repeating: nil, count: specs.count)
        for (i, spec) in specs.enumerated() {
            let request = GenerationRequest(prompt: prompt, maxNewTokens: n, minNewTokens: n, eosTokenIds: [])
            let output = GenerationOutput(request: request, tokenizer: nil)
            loop.submit(request, strategy: try registry.make(spec, model: model), output: output) {
                tokens[i] = output.tokens
                metrics[i] = $0.metrics
            }
        }
        loop.run()
        return (tokens, try metrics.map { try XCTUnwrap($0) }, loop.chosenDraftLength)
    }

    func testTheLoopTurnsSpeculationOffWhenTheBatchFillsTheMachineAndOnWhenItDoesNot() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let prompt = try Fixtures.expected("tiny-spm-mha-bf16-sharded").prompts[0].ids
        let n = 20
        let spec = selfSpeculative(2, 4)
        let solo = try generate(model, spec, prompt: prompt, maxNewTokens: n, minNewTokens: n).tokens
        let specs = Array(repeating: spec, count: 4)

        let busy = try runBatch(model, curve: PassCostCurve(costs: (1...32).map(Double.init), layerShare: 0.8), specs: specs, prompt: prompt, n: n)
        XCTAssertEqual(busy.chosen, 0)
        for i in 0..<4 {
            XCTAssertEqual(busy.tokens[i], solo, "lossless whatever d")
            XCTAssertEqual(busy.metrics[i].drafted, 0, "no drafts when speculation cannot pay")
        }

        let idle = try runBatch(model, curve: PassCostCurve(costs: Array(repeating: 1, count: 64), layerShare: 1), specs: specs, prompt: prompt, n: n)
        XCTAssertNotNil(idle.chosen)
        for i in 0..<4 {
            XCTAssertEqual(idle.tokens[i], solo)
            XCTAssertGreaterThan(idle.metrics[i].drafted ?? 0, 0)
        }

        // adaptive: false keeps the job's d whatever the load.
        let fixed = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2), "speculations": .int(4), "adaptive": .bool(false)])
        let pinned = try runBatch(model, curve: PassCostCurve(costs: (1...32).map(Double.init), layerShare: 0.8),
                                  specs: Array(repeating: fixed, count: 4), prompt: prompt, n: n)
        for i in 0..<4 {
            XCTAssertEqual(pinned.tokens[i], solo)
            XCTAssertGreaterThan(pinned.metrics[i].drafted ?? 0, 0)
        }
    }
}

/// The acceptance rules on fixed numbers, without the engine.
final class SpeculativeAcceptanceTests: XCTestCase {
    func buffer(_ values: [Float]) -> UnsafeMutableBufferPointer<Float> {
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
        _ = b.initialize(from: values)
        return b
    }

    func testGreedyPrefix() {
        XCTAssertEqual(SpeculativeAcceptance.greedyPrefix(drafts: [4, 5, 6], targets: [4, 5, 6, 9]), 3)
        XCTAssertEqual(SpeculativeAcceptance.greedyPrefix(drafts: [4, 5, 6], targets: [4, 7, 6, 9]), 1)
        XCTAssertEqual(SpeculativeAcceptance.greedyPrefix(drafts: [4], targets: [3, 1]), 0)
        XCTAssertEqual(SpeculativeAcceptance.greedyPrefix(drafts: [Int](), targets: [3]), 0)
    }

    func testMinOneRatioRule() {
        let p = buffer([0.5, 0.5, 0]), q = buffer([0.25, 0.75, 0])
        defer { p.deallocate(); q.deallocate() }
        // p/q = 2 at token 0: always kept.
        XCTAssertTrue(SpeculativeAcceptance.keeps(0, p: p, q: q, u: 0.999))
        // p/q = 2/3 at token 1: kept below u = 0.666…, rejected above.
        XCTAssertTrue(SpeculativeAcceptance.keeps(1, p: p, q: q, u: 0.66))
        XCTAssertFalse(SpeculativeAcceptance.keeps(1, p: p, q: q, u: 0.67))
        // q(x) = 0 can never have been drawn: rejected.
        XCTAssertFalse(SpeculativeAcceptance.keeps(2, p: p, q: q, u: 0))
    }

    func testResidualDistribution() {
        let p = buffer([0.5, 0.3, 0.2]), q = buffer([0.2, 0.6, 0.2])
        defer { p.deallocate(); q.deallocate() }
        SpeculativeAcceptance.residual(p: p, q: q)
        XCTAssertEqual(Array(p), [1, 0, 0])
        let p2 = buffer([0.4, 0.4, 0.2]), q2 = buffer([0.1, 0.2, 0.7])
        defer { p2.deallocate(); q2.deallocate() }
        SpeculativeAcceptance.residual(p: p2, q: q2)
        XCTAssertEqual(p2[0], 0.6, accuracy: 1e-6)
        XCTAssertEqual(p2[1], 0.4, accuracy: 1e-6)
        XCTAssertEqual(p2[2], 0)
        // p == q: nothing to take away; p stays the distribution.
        let p3 = buffer([0.3, 0.7]), q3 = buffer([0.3, 0.7])
        defer { p3.deallocate(); q3.deallocate() }
        SpeculativeAcceptance.residual(p: p3, q: q3)
        XCTAssertEqual(Array(p3), [0.3, 0.7])
    }

    /// Draw x ~ q, keep it by min(1, p/q), else draw from the residual: the result is p.
    func testTheRulesTogetherSampleFromP() {
        let pValues: [Float] = [0.1, 0.45, 0.05, 0.4], qValues: [Float] = [0.4, 0.3, 0.2, 0.1]
        var rng = SplitMix64(seed: 3)
        func uniform() -> Double { Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
        func draw(_ d: [Float]) -> Int {
            let u = uniform()
            var c = 0.0
            for (i, x) in d.enumerated() { c += Double(x); if u < c { return i } }
            return d.count - 1
        }
        let n = 200_000
        var counts = [Int](repeating: 0, count: 4)
        let q = buffer(qValues)
        defer { q.deallocate() }
        for _ in 0..<n {
            let p = buffer(pValues)
            defer { p.deallocate() }
            let x = draw(qValues)
            if SpeculativeAcceptance.keeps(x, p: p, q: q, u: uniform()) {
                counts[x] += 1
            } else {
                SpeculativeAcceptance.residual(p: p, q: q)
                counts[draw(Array(p))] += 1
            }
        }
        var chi = 0.0
        for i in 0..<4 {
            let e = Double(pValues[i]) * Double(n)
            chi += (Double(counts[i]) - e) * (Double(counts[i]) - e) / e
        }
        XCTAssertLessThan(chi, 16.3, "chi-square \(chi) with 3 degrees of freedom (99.9th percentile 16.27); counts \(counts)")
    }
}
