@testable import Engine
import Foundation
import XCTest

final class ModelConfigTests: XCTestCase {
    /// The transformers-4 style of the published checkpoints: top-level rope_theta, rope_scaling
    /// with llama3 parameters, eos as a list, no head_dim.
    func testTransformers4StyleWithLlama3RoPE() throws {
        let json = """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
             "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
             "rms_norm_eps": 1e-05, "vocab_size": 128256, "tie_word_embeddings": true, "bos_token_id": 128000,
             "eos_token_id": [128001, 128008, 128009], "max_position_embeddings": 131072, "rope_theta": 500000.0,
             "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
            """
        let c = try ModelConfig.parse(Data(json.utf8))
        XCTAssertEqual(c.headDim, 64)
        XCTAssertEqual(c.eosTokenIds, [128001, 128008, 128009])
        XCTAssertEqual(c.rope.theta, 500000)
        XCTAssertEqual(c.rope.kind, .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        XCTAssertTrue(c.tieWordEmbeddings)
    }

    func testTransformers4PlainRoPEAndIntegerEOS() throws {
        let json = """
            {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "vocab_size": 32000, "eos_token_id": 2, "rope_theta": 10000.0, "rope_scaling": null}
            """
        let c = try ModelConfig.parse(Data(json.utf8))
        XCTAssertEqual(c.kvHeadCount, 32, "num_key_value_heads defaults to the head count")
        XCTAssertEqual(c.eosTokenIds, [2])
        XCTAssertEqual(c.rope.kind, .default)
        XCTAssertFalse(c.tieWordEmbeddings, "transformers' LlamaConfig default is untied")
    }

    /// Llama 3.1 frequency scaling, checked against the formula evaluated by hand for three bands:
    /// wavelength < 8192/4 keeps its frequency, > 8192/1 is divided by 32, and between is blended.
    func testLlama3InverseFrequencies() {
        let params = RoPEParameters(theta: 500000, kind: .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        let inv = RoPETable.inverseFrequencies(params, headDim: 64)
        let plain = RoPETable.inverseFrequencies(RoPEParameters(theta: 500000), headDim: 64)
        XCTAssertEqual(inv.count, 32)
        // i = 0: frequency 1, wavelength 2π — high-frequency band, unchanged.
        XCTAssertEqual(inv[0], 1)
        // i = 31: 500000^(-62/64) ≈ 3.0e-6, wavelength ≈ 2.1e6 > 8192 — divided by the factor.
        XCTAssertEqual(Double(inv[31]), pow(500000, -62.0 / 64) / 32, accuracy: 1e-12)
        // A medium band index: wavelength between 2048 and 8192 → smooth blend.
        let i = (0..<32).first { 2 * Double.pi / Double(plain[$0]) > 2048 && 2 * Double.pi / Double(plain[$0]) < 8192 }!
        let f = Double(plain[i]), wavelen = 2 * Double.pi / f
        let smooth = (8192 / wavelen - 1) / (4 - 1)
        XCTAssertEqual(Double(inv[i]), (1 - smooth) * f / 32 + smooth * f, accuracy: f * 1e-5)
    }
}
