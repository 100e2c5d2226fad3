import Engine
import Foundation

/// Where each weight tensor lives in the trainer's single flat parameter buffer. One buffer (and
/// gradient, and two AdamW moments of the same layout) makes clipping, the optimizer step and
/// checkpoints loops over one array. Tensors are in the order of the Hugging Face checkpoint, with
/// the Hugging Face names and row-major shapes (Linear weights are (out, in)).
public struct ParameterLayout: Sendable {
    public struct Entry: Sendable {
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Matrices get weight decay; RMSNorm gains do not (decaying them towards 0 fights the norm).
        public var decays: Bool { shape.count == 2 }
    }

    /// Offsets of one decoder layer's tensors.
    public struct Layer: Sendable {
        public var inputNorm: Int      // (hidden)
        public var q: Int              // (heads·headDim, hidden)
        public var k: Int              // (kvHeads·headDim, hidden)
        public var v: Int              // (kvHeads·headDim, hidden)
        public var o: Int              // (hidden, heads·headDim)
        public var postNorm: Int       // (hidden)
        public var gate: Int           // (intermediate, hidden)
        public var up: Int             // (intermediate, hidden)
        public var down: Int           // (hidden, intermediate)
    }

    public let config: ModelConfig
    public private(set) var entries: [Entry] = []
    public private(set) var embedding = 0   // (vocab, hidden)
    public private(set) var layers: [Layer] = []
    public private(set) var finalNorm = 0   // (hidden)
    /// (vocab, hidden): the untied LM head, or the embedding when the config ties them.
    public private(set) var lmHead = 0
    public private(set) var count = 0

    public init(config c: ModelConfig) {
        self.config = c
        func add(_ name: String, _ shape: [Int]) -> Int {
            let offset = count
            entries.append(Entry(name: name, shape: shape, offset: offset))
            count += shape.reduce(1, *)
            return offset
        }
        embedding = add("model.embed_tokens.weight", [c.vocabSize, c.hiddenSize])
        for l in 0..<c.layerCount {
            let p = "model.layers.\(l)."
            layers.append(Layer(
                inputNorm: add(p + "input_layernorm.weight", [c.hiddenSize]),
                q: add(p + "self_attn.q_proj.weight", [c.qDim, c.hiddenSize]),
                k: add(p + "self_attn.k_proj.weight", [c.kvDim, c.hiddenSize]),
                v: add(p + "self_attn.v_proj.weight", [c.kvDim, c.hiddenSize]),
                o: add(p + "self_attn.o_proj.weight", [c.hiddenSize, c.qDim]),
                postNorm: add(p + "post_attention_layernorm.weight", [c.hiddenSize]),
                gate: add(p + "mlp.gate_proj.weight", [c.intermediateSize, c.hiddenSize]),
                up: add(p + "mlp.up_proj.weight", [c.intermediateSize, c.hiddenSize]),
                down: add(p + "mlp.down_proj.weight", [c.hiddenSize, c.intermediateSize])))
        }
        finalNorm = add("model.norm.weight", [c.hiddenSize])
        lmHead = c.tieWordEmbeddings ? embedding : add("lm_head.weight", [c.vocabSize, c.hiddenSize])
    }

    /// Initial weights: norm gains 1; matrices normal with std 0.02 (Hugging Face's initialiser),
    /// the projections that write into the residual stream (o, down) scaled by 1/√(2L) so the
    /// stream's variance does not grow with depth. Deterministic in `seed`.
    public func initialValues<S: TrainScalar>(into p: UnsafeMutablePointer<S>, seed: UInt64) {
        var rng = CounterRNG(seed: seed, stream: 0x1417)
        let residualScale = 1 / Double(2 * config.layerCount).squareRoot()
        for e in entries {
            if e.shape.count == 1 {
                for i in 0..<e.count { p[e.offset + i] = 1 }
                continue
            }
            let isResidualWriter = e.name.hasSuffix("o_proj.weight") || e.name.hasSuffix("down_proj.weight")
            let std = 0.02 * (isResidualWriter ? residualScale : 1)
            for i in 0..<e.count { p[e.offset + i] = S(rng.nextNormal() * std) }
        }
    }
}
