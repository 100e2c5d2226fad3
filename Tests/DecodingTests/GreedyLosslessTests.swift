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
            let generator = try registry.make(selfSpeculative(e, d), model: model) as! SelfSpeculativeStrategy
            var rounds: [SelfSpeculativeStrategy.Round] = []
            generator.onRound = { rounds.append($0) }
            let request = GenerationRequest(prompt: prompt, maxNewTokens: n, minNewTokens: n, eosTokenIds: Set(model.config.eosTokenIds))
            let cache = model.makeCache(capacity: generator.requiredPositions(for: request))
            let output = GenerationOutput(request: request, tokenizer: nil)
            _ = generator.generate(request, cache: cache, output: output)
            XCTAssertFalse(rounds.isEmpty)
            XCTAssertTrue(rounds.contains { $0.accepted < $0.drafted }, "E=\(e) d=\(d): the test needs at least one rejection")
            for round in rounds {
                XCTAssertEqual(round.cacheLengths, Array(repeating: round.position, count: model.layerCount), "E=\(e) d=\(d)")
            }
            // The same positions computed autoregressively (prompt + all generated tokens but the last).
            let sequence = prompt + output.tokens.dropLast()
            let reference = model.makeCache(capacity: sequence.count)
            let h = model.makeActivations(capacity: 1)
            for (p, token) in sequence.enumerated() {
                model.embed([token], into: h)
                model.forward(h, layers: 0..<model.layerCount, positions: p..<(p + 1), cache: reference)
            }
            let committed = rounds.last!.position
            XCTAssertEqual(committed, sequence.count)
            for layer in 0..<model.layerCount {
                for p in 0..<committed {
                    let a = cache.entry(layer: layer, position: p), b = reference.entry(layer: layer, position: p)
                    let worst = zip(a.key + a.value, b.key + b.value).map { abs($0 - $1) }.max()!
                    XCTAssertLessThanOrEqual(worst, 1e-5, "E=\(e) d=\(d) layer \(layer) position \(p)")
                }
            }
        }
    }
}
