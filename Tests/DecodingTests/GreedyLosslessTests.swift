import TestFixtures
import Decoding
import Engine
import Foundation
import SelfSpeculativePlugin
import XCTest

/// Greedy self-speculative decoding must reproduce autoregressive decoding token for token —
/// and so Hugging Face's own outputs in the fixtures — for every exit layer and draft length.
final class GreedyLosslessTests: XCTestCase {
    func testSelfSpeculativeEqualsAutoregressiveForEveryExitAndDraftLength() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let expected = try Fixtures.expected(name)
            for prompt in expected.prompts {
                let reference = try XCTUnwrap(prompt.greedy["autoregressive"]?.tokens)
                let n = reference.count
                let ar = try generate(model, StrategySpec(name: "autoregressive"), prompt: prompt.ids, maxNewTokens: n, minNewTokens: n)
                XCTAssertEqual(ar.tokens, reference, "\(name): autoregressive vs transformers")
                if let hf = prompt.greedy.first(where: { $0.key.hasPrefix("hf_self_speculative") })?.value.tokens {
                    XCTAssertEqual(hf, reference, "the fixture's own HF self-speculative run")
                }
                for e in 1..<model.layerCount {
                    for d in 1...8 {
                        let spec = try generate(model, selfSpeculative(e, d), prompt: prompt.ids, maxNewTokens: n, minNewTokens: n)
                        XCTAssertEqual(spec.tokens, reference, "\(name) E=\(e) d=\(d) prompt \(prompt.text.debugDescription)")
                        XCTAssertEqual(spec.metrics.generatedTokens, n)
                        let drafted = try XCTUnwrap(spec.metrics.drafted)
                        XCTAssertLessThanOrEqual(spec.metrics.accepted ?? -1, drafted)
                    }
                }
            }
        }
    }

    /// int8 draft weights change only which tokens are proposed, never the output.
    func testInt8DraftPrecisionsAreStillExact() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            for prompt in try Fixtures.expected(name).prompts {
                let reference = try XCTUnwrap(prompt.greedy["autoregressive"]?.tokens)
                for precision in ["int8-head", "int8"] {
                    for e in 1..<model.layerCount {
                        for d in [1, 4, 7] {
                            let spec = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(e), "speculations": .int(d),
                                                                                        "draft_precision": .string(precision)])
                            let got = try generate(model, spec, prompt: prompt.ids, maxNewTokens: reference.count, minNewTokens: reference.count)
                            XCTAssertEqual(got.tokens, reference, "\(name) \(precision) E=\(e) d=\(d)")
                        }
                    }
                }
            }
        }
    }

    func testAdaptiveSelfSpeculativeIsAlsoExact() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            for prompt in try Fixtures.expected(name).prompts {
                let reference = try XCTUnwrap(prompt.greedy["autoregressive"]?.tokens)
                for e in 1..<model.layerCount {
                    let spec = try generate(model, selfSpeculative(e, 3, adaptive: true), prompt: prompt.ids,
                                            maxNewTokens: reference.count, minNewTokens: reference.count)
                    XCTAssertEqual(spec.tokens, reference, "\(name) adaptive E=\(e)")
                }
            }
        }
    }

    /// Adaptive drafting is the default; the most drafts a round may hold (what a sequence reserves
    /// past its last token: dMax + 1 positions) is `max_speculations`, else an explicit
    /// `speculations` when `adaptive` is omitted, else max(2d, 12); `adaptive: false` holds d.
    func testDraftCapsOfTheAdaptiveDefault() throws {
        let model = try LlamaModel(directory: Fixtures.directory(Fixtures.models[0]))
        let request = GenerationRequest(prompt: [1, 2, 3], maxNewTokens: 10, minNewTokens: 0, eosTokenIds: [])
        func reserved(_ c: SelfSpeculativeStrategy.Configuration) -> Int {
            SelfSpeculativeStrategy(configuration: c, model: model).requiredPositions(for: request) - 13 - 1
        }
        XCTAssertEqual(reserved(.init(exitLayer: 1)), 12)
        XCTAssertEqual(reserved(.init(exitLayer: 1, speculations: 3)), 3)
        XCTAssertEqual(reserved(.init(exitLayer: 1, speculations: 3, adaptive: true)), 12)
        XCTAssertEqual(reserved(.init(exitLayer: 1, speculations: 8, adaptive: true)), 16)
        XCTAssertEqual(reserved(.init(exitLayer: 1, speculations: 3, maxSpeculations: 5)), 5)
        XCTAssertEqual(reserved(.init(exitLayer: 1, speculations: 3, adaptive: false)), 3)
        XCTAssertEqual(reserved(.init(exitLayer: 1, adaptive: false)), 6)
    }

    func testEarlyExitMatchesTransformersAndFullDepthEqualsAutoregressive() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let expected = try Fixtures.expected(name)
            for prompt in expected.prompts {
                for e in expected.exit_layers {
                    let reference = try XCTUnwrap(prompt.greedy["early_exit_\(e)"]?.tokens)
                    let spec = StrategySpec(name: "early-exit", options: ["exit_layer": .int(e)])
                    let got = try generate(model, spec, prompt: prompt.ids, maxNewTokens: reference.count, minNewTokens: reference.count)
                    XCTAssertEqual(got.tokens, reference, "\(name) early exit \(e)")
                    XCTAssertEqual(got.metrics.averageExitLayer, Double(e))
                }
                let full = try XCTUnwrap(prompt.greedy["autoregressive"]?.tokens)
                let atL = try generate(model, StrategySpec(name: "early-exit", options: ["exit_layer": .int(model.layerCount)]),
                                       prompt: prompt.ids, maxNewTokens: full.count, minNewTokens: full.count)
                XCTAssertEqual(atL.tokens, full, "\(name): early exit at E = L is the full model")
            }
        }
    }

    /// After every round each layer's cache holds exactly the committed positions, and at the end
    /// the cache equals the one autoregressive decoding builds: rejected drafts leave no trace.
    func testKVBookkeepingAfterEveryRound() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let prompt = try Fixtures.expected("tiny-spm-mha-bf16-sharded").prompts[0].ids
        let n = 24
        for (e, d) in [(1, 4), (2, 6), (4, 3), (5, 8)] {
            let strategy = try registry.make(selfSpeculative(e, d), model: model)
            let request = GenerationRequest(prompt: prompt, maxNewTokens: n, minNewTokens: n, eosTokenIds: Set(model.config.eosTokenIds))
            let output = GenerationOutput(request: request, tokenizer: nil)
            let pool = KVCachePool(config: model.config, budget: 1 << 24)
            let loop = DecodeLoop(model: model, caches: pool, maxBatch: 1)
            var metrics: GenerationMetrics?
            loop.submit(request, strategy: strategy, output: output) { metrics = $0.metrics }
            // After every pass that committed tokens, every layer holds exactly the committed inputs;
            // after a draft pass, layers 0..<E hold the drafts too and E..<L only the committed ones.
            var cache: KVCache?
            var committed = -1, commits = 0, drafts = 0
            loop.afterPass = { loop in
                guard let seq = loop.active.first, seq.generated > 0 else { return }
                cache = seq.cache
                let lengths = seq.cache.lengths
                if seq.generated != committed {
                    committed = seq.generated
                    if !seq.output.isFinished {
                        XCTAssertEqual(lengths, Array(repeating: seq.position, count: model.layerCount), "E=\(e) d=\(d) after a commit")
                    }
                    commits += 1
                } else {
                    drafts += 1
                    XCTAssertTrue(lengths[e...].allSatisfy { $0 == seq.position }, "E=\(e) d=\(d): a draft pass leaves E..<L alone")
                    XCTAssertTrue(lengths[..<e].allSatisfy { $0 > seq.position && $0 <= seq.position + d }, "E=\(e) d=\(d): drafts in 0..<E")
                }
            }
            loop.run()
            XCTAssertGreaterThan(drafts, 0)
            XCTAssertGreaterThan(commits, 1)
            let m = try XCTUnwrap(metrics)
            XCTAssertLessThan(m.accepted ?? 0, m.drafted ?? 0, "E=\(e) d=\(d): the test needs at least one rejection")
            let finalCache = try XCTUnwrap(cache)
            // The same positions computed autoregressively (prompt + all generated tokens but the last).
            let sequence = prompt + output.tokens.dropLast()
            let reference = model.makeCache(capacity: sequence.count)
            let h = model.makeActivations(capacity: 1)
            for (p, token) in sequence.enumerated() {
                model.embed([token], into: h)
                model.forward(h, layers: 0..<model.layerCount, positions: p..<(p + 1), cache: reference)
            }
            let positions = sequence.count
            for layer in 0..<model.layerCount {
                XCTAssertGreaterThanOrEqual(finalCache.lengths[layer], positions)
                for p in 0..<positions {
                    let a = finalCache.entry(layer: layer, position: p), b = reference.entry(layer: layer, position: p)
                    let worst = zip(a.key + a.value, b.key + b.value).map { abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(worst, 1e-5, "E=\(e) d=\(d) layer \(layer) position \(p)")
                }
            }
        }
    }
}
