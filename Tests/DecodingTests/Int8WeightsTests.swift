import TestFixtures
import Decoding
import Engine
import Foundation
import XCTest

/// A model loaded with `format: .int8` runs every pass on its int8 weights, so self-speculation
/// must reproduce autoregressive decoding *of those weights* token for token: every exit layer,
/// several draft lengths and both draft precisions, on both fixture models, with a prompt long
/// enough that its prefill takes the large-n (GEMM) kernel path.
final class Int8WeightsTests: XCTestCase {
    func testSelfSpeculationOnInt8WeightsEqualsInt8Autoregressive() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name), format: .int8)
            var prompts = try Fixtures.expected(name).prompts.map(\.ids)
            var rng = SplitMix64(seed: 11)
            prompts.append((0..<(DecodeLoop.prefillChunk + 9)).map { _ in Int(rng.next() % UInt64(model.config.vocabSize)) })
            for prompt in prompts {
                let n = 12
                let reference = try generate(model, StrategySpec(name: "autoregressive"), prompt: prompt, maxNewTokens: n, minNewTokens: n).tokens
                XCTAssertEqual(reference.count, n)
                for e in 1..<model.layerCount {
                    for d in [1, 3, 6] {
                        for precision in ["exact", "int8"] {
                            let spec = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(e), "speculations": .int(d),
                                                                                        "draft_precision": .string(precision)])
                            let got = try generate(model, spec, prompt: prompt, maxNewTokens: n, minNewTokens: n).tokens
                            XCTAssertEqual(got, reference, "\(name) int8 weights, E=\(e) d=\(d) drafts \(precision), prompt of \(prompt.count)")
                        }
                    }
                }
            }
        }
    }

    /// The int8 model reads exactly the copies a stored model's int8 drafts read: its logits are
    /// bit-identical to the stored model run with every segment and the head at `.int8`. Its
    /// resident weight bytes are the int8 copies (one byte per weight, a scale per row) and norms.
    func testAnInt8ModelIsTheStoredModelsInt8Path() throws {
        for name in Fixtures.models {
            let stored = try LlamaModel(directory: Fixtures.directory(name))
            let int8 = try LlamaModel(directory: Fixtures.directory(name), format: .int8)
            XCTAssertEqual(int8.format, .int8)
            XCTAssertNotEqual(stored.cacheKey, int8.cacheKey)
            let c = int8.config
            let matrices = c.layerCount * (2 * c.qDim * c.hiddenSize + 2 * c.kvDim * c.hiddenSize + 3 * c.intermediateSize * c.hiddenSize)
                + c.vocabSize * c.hiddenSize
            let scaleRows = c.layerCount * (c.qDim + 2 * c.kvDim + c.hiddenSize + 2 * c.intermediateSize + c.hiddenSize) + c.vocabSize
            XCTAssertEqual(int8.derivedByteCount, matrices + 4 * scaleRows, name)
            XCTAssertLessThan(int8.weightBytes, stored.weightBytes, name)
            for prompt in try Fixtures.expected(name).prompts {
                XCTAssertEqual(Fixtures.logits(stored, prompt.ids, precision: .int8), Fixtures.logits(int8, prompt.ids),
                               "\(name): int8 model vs stored model's int8 path")
            }
        }
    }
}
