import Foundation

/// Random-weight models with the exact shapes of published LayerSkip checkpoints, for systems
/// benchmarks where the real weights are not available. Their text is noise; with `lateScale`
/// the second half of the layers barely changes the residual stream, so an exit at the middle
/// layer agrees with the full model most of the time — a *synthetic* acceptance rate.
public enum StandInShape: String, CaseIterable, Sendable {
    case llama32_1b = "llama3.2-1b"
    case llama3_8b = "llama3-8b"
    case llama2_7b = "llama2-7b"
    case llama2_13b = "llama2-13b"
    case codellama_7b = "codellama-7b"
    /// A few-megabyte model for tests: Llama-3-style GQA and llama3 RoPE at toy size.
    case tiny = "tiny"

    public var config: ModelConfig {
        let llama31RoPE = RoPEParameters(theta: 500_000, kind: .llama3(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        switch self {
        case .llama32_1b:
            return ModelConfig(hiddenSize: 2048, intermediateSize: 8192, layerCount: 16, headCount: 32, kvHeadCount: 8,
                               headDim: 64, rmsNormEps: 1e-5, vocabSize: 128_256, tieWordEmbeddings: true,
                               bosTokenId: 128_000, eosTokenIds: [128_001, 128_008, 128_009],
                               maxPositionEmbeddings: 131_072, rope: llama31RoPE)
        case .llama3_8b:
            return ModelConfig(hiddenSize: 4096, intermediateSize: 14336, layerCount: 32, headCount: 32, kvHeadCount: 8,
                               rmsNormEps: 1e-5, vocabSize: 128_256, tieWordEmbeddings: false,
                               bosTokenId: 128_000, eosTokenIds: [128_001], maxPositionEmbeddings: 8192,
                               rope: RoPEParameters(theta: 500_000))
        case .llama2_7b:
            return ModelConfig(hiddenSize: 4096, intermediateSize: 11008, layerCount: 32, headCount: 32, kvHeadCount: 32,
                               rmsNormEps: 1e-5, vocabSize: 32000, tieWordEmbeddings: false,
                               bosTokenId: 1, eosTokenIds: [2], maxPositionEmbeddings: 4096)
        case .llama2_13b:
            return ModelConfig(hiddenSize: 5120, intermediateSize: 13824, layerCount: 40, headCount: 40, kvHeadCount: 40,
                               rmsNormEps: 1e-5, vocabSize: 32000, tieWordEmbeddings: false,
                               bosTokenId: 1, eosTokenIds: [2], maxPositionEmbeddings: 4096)
        case .codellama_7b:
            return ModelConfig(hiddenSize: 4096, intermediateSize: 11008, layerCount: 32, headCount: 32, kvHeadCount: 32,
                               rmsNormEps: 1e-5, vocabSize: 32016, tieWordEmbeddings: false,
                               bosTokenId: 1, eosTokenIds: [2], maxPositionEmbeddings: 16384,
                               rope: RoPEParameters(theta: 1_000_000))
        case .tiny:
            return ModelConfig(hiddenSize: 64, intermediateSize: 160, layerCount: 4, headCount: 4, kvHeadCount: 2,
                               headDim: 16, rmsNormEps: 1e-5, vocabSize: 512, tieWordEmbeddings: true,
                               bosTokenId: 0, eosTokenIds: [1], maxPositionEmbeddings: 1024, rope: llama31RoPE)
        }
    }
}

public enum StandInModel {
    /// Writes `config.json` and `model.safetensors` (random weights, seeded) into `directory`.
    /// `vocabSize` overrides the shape's (to match a tokenizer); `progress` gets the fraction done.
    public static func write(config: ModelConfig, dtype: DType, to directory: URL, seed: UInt64 = 0,
                             lateScale: Float = 1, progress: (Double) -> Void = { _ in }) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try configJSON(config, dtype: dtype).write(to: directory.appendingPathComponent("config.json"), options: .atomic)

        let c = config
        var entries: [SafetensorsWriter.Entry] = [.init(name: "model.embed_tokens.weight", dtype: dtype, shape: [c.vocabSize, c.hiddenSize])]
        for l in 0..<c.layerCount {
            let p = "model.layers.\(l)."
            entries += [
                .init(name: p + "input_layernorm.weight", dtype: dtype, shape: [c.hiddenSize]),
                .init(name: p + "self_attn.q_proj.weight", dtype: dtype, shape: [c.qDim, c.hiddenSize]),
                .init(name: p + "self_attn.k_proj.weight", dtype: dtype, shape: [c.kvDim, c.hiddenSize]),
                .init(name: p + "self_attn.v_proj.weight", dtype: dtype, shape: [c.kvDim, c.hiddenSize]),
                .init(name: p + "self_attn.o_proj.weight", dtype: dtype, shape: [c.hiddenSize, c.qDim]),
                .init(name: p + "post_attention_layernorm.weight", dtype: dtype, shape: [c.hiddenSize]),
                .init(name: p + "mlp.gate_proj.weight", dtype: dtype, shape: [c.intermediateSize, c.hiddenSize]),
                .init(name: p + "mlp.up_proj.weight", dtype: dtype, shape: [c.intermediateSize, c.hiddenSize]),
                .init(name: p + "mlp.down_proj.weight", dtype: dtype, shape: [c.hiddenSize, c.intermediateSize]),
            ]
        }
        entries.append(.init(name: "model.norm.weight", dtype: dtype, shape: [c.hiddenSize]))
        if !c.tieWordEmbeddings {
            entries.append(.init(name: "lm_head.weight", dtype: dtype, shape: [c.vocabSize, c.hiddenSize]))
        }

        let writer = try SafetensorsWriter(url: directory.appendingPathComponent("model.safetensors"), entries: entries,
                                           metadata: ["format": "pt", "generator": "layerskip init-model (random weights)"])
        var rng = SplitMix64(seed: seed)
        let total = entries.reduce(0) { $0 + $1.shape.reduce(1, *) }
        var done = 0
        var chunk = [Float](repeating: 0, count: 1 << 20)
        let lateFrom = c.layerCount / 2
        for e in entries {
            let count = e.shape.reduce(1, *)
            // Norm weights are ones, as in a freshly initialised model; matrices are uniform with
            // the standard deviation of Hugging Face's initialiser (0.02).
            let isNorm = e.shape.count == 1
            var scale: Float = 0.02 * 3.0.squareRoot().asFloat
            if let layer = layerIndex(e.name), layer >= lateFrom, e.name.hasSuffix("o_proj.weight") || e.name.hasSuffix("down_proj.weight") {
                scale *= lateScale
            }
            var left = count
            while left > 0 {
                let n = min(left, chunk.count)
                chunk.withUnsafeMutableBufferPointer { buf in
                    if isNorm {
                        for i in 0..<n { buf[i] = 1 }
                    } else {
                        for i in 0..<n { buf[i] = rng.nextSignedUnit() * scale }
                    }
                }
                try chunk.withUnsafeBufferPointer { try writer.write(UnsafeBufferPointer(rebasing: $0[0..<n])) }
                left -= n
                done += n
                progress(Double(done) / Double(total))
            }
        }
        try writer.finish()
    }

    private static func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        guard parts.count > 2, parts[0] == "model", parts[1] == "layers" else { return nil }
        return Int(parts[2])
    }

    /// config.json in the transformers-4 style that the published checkpoints use.
    public static func configJSON(_ c: ModelConfig, dtype: DType) throws -> Data {
        var json: [String: Any] = [
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": c.hiddenSize,
            "intermediate_size": c.intermediateSize,
            "num_hidden_layers": c.layerCount,
            "num_attention_heads": c.headCount,
            "num_key_value_heads": c.kvHeadCount,
            "head_dim": c.headDim,
            // The shortest decimal that reads back as the same Float (1e-05, not 9.999999747378752e-06).
            "rms_norm_eps": Double("\(c.rmsNormEps)") ?? Double(c.rmsNormEps),
            "vocab_size": c.vocabSize,
            "tie_word_embeddings": c.tieWordEmbeddings,
            "max_position_embeddings": c.maxPositionEmbeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "rope_theta": c.rope.theta,
            "torch_dtype": ["F32": "float32", "F16": "float16", "BF16": "bfloat16"][dtype.rawValue]!,
        ]
        if let bos = c.bosTokenId { json["bos_token_id"] = bos }
        json["eos_token_id"] = c.eosTokenIds.count == 1 ? c.eosTokenIds[0] as Any : c.eosTokenIds as Any
        switch c.rope.kind {
        case .default:
            json["rope_scaling"] = NSNull()
        case let .llama3(factor, low, high, original):
            json["rope_scaling"] = ["rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                    "high_freq_factor": high, "original_max_position_embeddings": original]
        }
        return try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
    }
}

/// A small, fast, seedable generator (SplitMix64); plenty for random test weights.
public struct SplitMix64 {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    public mutating func nextSignedUnit() -> Float {
        Float(Int32(truncatingIfNeeded: next() >> 32)) * (1.0 / 2_147_483_648.0)
    }
}

private extension Double {
    var asFloat: Float { Float(self) }
}

extension StandInModel {
    /// Number of weights a model of this configuration stores.
    public static func parameterCount(_ c: ModelConfig) -> Int {
        let perLayer = 2 * c.hiddenSize + 2 * c.qDim * c.hiddenSize + 2 * c.kvDim * c.hiddenSize + 3 * c.intermediateSize * c.hiddenSize
        return c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.layerCount * perLayer + c.hiddenSize
    }
}
