import TestFixtures
import Decoding
import Engine
import Foundation
import XCTest

/// A model loaded with `format: .int8` or `.q4` runs every pass on its quantised weights, so
/// self-speculation must reproduce autoregressive decoding *of those weights* token for token:
/// every exit layer, several draft lengths and every draft precision (4-bit drafts over int8
/// verification among them), on both fixture models, with a prompt long enough that its prefill
/// takes the large-n (GEMM) kernel path.
final class QuantizedWeightsTests: XCTestCase {
    func testSelfSpeculationOnQuantizedWeightsEqualsTheirAutoregressive() throws {
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-q-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: temp) }
        // The third case: a `quantize` folder (int8), whose draft copies are requantised from it.
        for format in [WeightFormat.int8, .q4, .stored] {
            for name in Fixtures.models {
                var model = try LlamaModel(directory: Fixtures.directory(name), format: format == .stored ? .int8 : format)
                if format == .stored {
                    try model.writeQuantizedFolder(to: temp.appendingPathComponent(name))
                    model = try LlamaModel(directory: temp.appendingPathComponent(name))
                }
                var prompts = try Fixtures.expected(name).prompts.map(\.ids)
                var rng = SplitMix64(seed: 11)
                prompts.append((0..<(DecodeLoop.prefillChunk + 9)).map { _ in Int(rng.next() % UInt64(model.config.vocabSize)) })
                for prompt in prompts {
                    let n = 12
                    let reference = try generate(model, StrategySpec(name: "autoregressive"), prompt: prompt, maxNewTokens: n, minNewTokens: n).tokens
                    XCTAssertEqual(reference.count, n)
                    for e in 1..<model.layerCount {
                        for d in [1, 3, 6] {
                            for precision in ["exact", "int8", "q4", "q4-head"] {
                                let spec = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(e), "speculations": .int(d),
                                                                                            "draft_precision": .string(precision)])
                                let got = try generate(model, spec, prompt: prompt, maxNewTokens: n, minNewTokens: n).tokens
                                XCTAssertEqual(got, reference, "\(name) \(format) weights, E=\(e) d=\(d) drafts \(precision), prompt of \(prompt.count)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A quantised model reads exactly the copies a stored model's drafts of that precision read:
    /// its logits are bit-identical to the stored model run with every segment and the head at that
    /// precision. Its resident weight bytes are the quantised copies (int8: a byte a weight and an
    /// f32 scale a row; q4: 32 bytes per 64 weights and an f16 scale per block of 32) and the norms.
    func testAQuantizedModelIsTheStoredModelsDraftPath() throws {
        for name in Fixtures.models {
            let stored = try LlamaModel(directory: Fixtures.directory(name))
            let c = stored.config
            let shapes = [(c.qDim, c.hiddenSize), (c.kvDim, c.hiddenSize), (c.kvDim, c.hiddenSize), (c.hiddenSize, c.qDim),
                          (c.intermediateSize, c.hiddenSize), (c.intermediateSize, c.hiddenSize), (c.hiddenSize, c.intermediateSize)]
            func bytes(_ rows: Int, _ cols: Int, _ f: WeightFormat) -> Int {
                f == .int8 ? rows * cols + 4 * rows : rows * ((cols + 63) / 64 * 32 + (cols + 31) / 32 * 2)
            }
            for (format, precision) in [(WeightFormat.int8, WeightPrecision.int8), (.q4, .q4)] {
                let model = try LlamaModel(directory: Fixtures.directory(name), format: format)
                XCTAssertEqual(model.format, format)
                XCTAssertNotEqual(stored.cacheKey, model.cacheKey)
                let expected = c.layerCount * shapes.reduce(0) { $0 + bytes($1.0, $1.1, format) } + bytes(c.vocabSize, c.hiddenSize, format)
                XCTAssertEqual(model.derivedByteCount, expected, "\(name) \(format)")
                XCTAssertLessThan(model.weightBytes, stored.weightBytes, name)
                for prompt in try Fixtures.expected(name).prompts {
                    XCTAssertEqual(Fixtures.logits(stored, prompt.ids, precision: precision), Fixtures.logits(model, prompt.ids),
                                   "\(name): \(format) model vs stored model's \(precision) path")
                }
            }
            // Draft copies never read more than the model's own weights.
            let q4 = try LlamaModel(directory: Fixtures.directory(name), format: .q4)
            XCTAssertEqual(q4.weightsRead(by: .int8), .q4)
            XCTAssertEqual(stored.weightsRead(by: .int8), .int8)
            XCTAssertEqual(try LlamaModel(directory: Fixtures.directory(name), format: .int8).weightsRead(by: .q4), .q4)
        }
    }
}
