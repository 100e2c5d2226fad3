import CKernels
import Foundation
import Synchronization

/// A Llama-architecture decoder that runs any range of its layers and applies the exit head
/// (final RMSNorm + LM head) after any layer. Immutable after loading and shared by every job:
/// all per-sequence state lives in `KVCache` and `Activations`.
public final class LlamaModel: @unchecked Sendable {
    public let config: ModelConfig
    public let weights: ModelWeights
    public let directory: URL
    let rope: RoPETable
    let derived = DerivedWeights()
    let derivedLock = NSLock()

    public var layerCount: Int { config.layerCount }
    /// Positions a cache may hold: the RoPE table is precomputed for this many.
    public let maxPositions: Int

    /// Loads `config.json` and the safetensors weights of a Hugging Face model folder.
    /// `maxPositions` caps the context (default: the config's max_position_embeddings, at most 8192).
    public init(directory: URL, maxPositions: Int? = nil) throws {
        self.directory = directory
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.missingFile, file: directory.path, "model folder not found (expected a directory with config.json and safetensors weights)")
        }
        config = try ModelConfig.load(from: directory.appendingPathComponent("config.json"))
        weights = try ModelWeights.load(directory: directory, config: config)
        self.maxPositions = maxPositions ?? min(config.maxPositionEmbeddings, 8192)
        rope = RoPETable(parameters: config.rope, headDim: config.headDim, maxPositions: self.maxPositions)
    }

    public func makeCache(capacity: Int? = nil) -> KVCache {
        KVCache(config: config, capacity: min(capacity ?? maxPositions, maxPositions))
    }

    /// Scratch for passes of up to `capacity` positions at once.
    public func makeActivations(capacity: Int) -> Activations {
        Activations(config: config, capacity: capacity, maxPositions: maxPositions)
    }

    public func makeLogits(capacity: Int = 1) -> Logits {
        Logits(capacity: capacity, vocabSize: config.vocabSize)
    }

    // MARK: - Forward

    /// Writes the embeddings of `tokens` into rows startRow..<startRow + tokens.count of `h`.
    public func embed<C: Collection>(_ tokens: C, into h: Activations, at startRow: Int = 0) where C.Element == Int {
        precondition(startRow + tokens.count <= h.capacity, "more tokens than the activations hold")
        for (r, token) in tokens.enumerated() {
            precondition(token >= 0 && token < config.vocabSize, "token id \(token) outside the vocabulary")
            weights.embedding.copyRow(token, into: h.row(startRow + r))
        }
    }

    /// Runs `layers` over rows 0..<positions.count of `h`, which hold the sequence positions
    /// `positions` (one pass: prefill, a single decode step, or multi-token verification).
    /// Each layer's cache must hold exactly `positions.lowerBound` positions; afterwards it holds
    /// `positions.upperBound`. Weights are read once per pass whatever the number of positions.
    ///
    /// `precision: .int8` reads int8 copies of the layers' matrices (speculative drafts only): the
    /// K/V it writes are approximations that verification must overwrite.
    public func forward(_ h: Activations, layers: Range<Int>, positions: Range<Int>, cache: KVCache,
                        precision: WeightPrecision = .exact) {
        let n = positions.count
        let start = positions.lowerBound
        precondition(n > 0 && n <= h.capacity, "pass of \(n) positions for activations of \(h.capacity)")
        precondition(layers.lowerBound >= 0 && layers.upperBound <= config.layerCount, "layers \(layers) outside 0..<\(config.layerCount)")
        precondition(positions.upperBound <= cache.capacity && positions.upperBound <= maxPositions, "position \(positions.upperBound) beyond the cache")
        let c = config
        let hd = c.hiddenSize
        for l in layers {
            EngineProgress.layerRan()
            precondition(cache.lengths[l] == start, "layer \(l) cache holds \(cache.lengths[l]) positions, pass starts at \(start)")
            let w = weights.layers[l]
            let q8 = precision == .int8 ? int8Layer(l) : nil
            /// y = x·Wᵀ with the stored or the int8 copy of one of this layer's matrices.
            func product(_ m: WeightMatrix, _ quantized: QuantizedMatrix?, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, ldy: Int) {
                if let quantized {
                    ck_matmul_q8(quantized.values, quantized.scales.pointer, Int32(m.rows), Int32(m.cols), x, Int32(m.cols), Int32(n), y, Int32(ldy))
                } else {
                    matmul(m, x, n, y, ldy: ldy)
                }
            }

            // Attention block: x = h + o(attn(rmsnorm(h)))
            ck_rmsnorm(h.hidden.pointer, w.inputNorm.data, w.inputNorm.dtype.kernelType, c.rmsNormEps, Int32(hd), Int32(n), h.normed.pointer)
            product(w.q, q8?.q, h.normed.pointer, h.query.pointer, ldy: c.qDim)
            // K and V go straight into the cache rows of these positions.
            product(w.k, q8?.k, h.normed.pointer, cache.keyRow(layer: l, position: start), ldy: c.kvDim)
            product(w.v, q8?.v, h.normed.pointer, cache.valueRow(layer: l, position: start), ldy: c.kvDim)
            for r in 0..<n {
                let p = start + r
                ck_rope(h.query.pointer + r * c.qDim, Int32(c.headCount), Int32(c.headDim), rope.cosRow(p), rope.sinRow(p))
                ck_rope(cache.keyRow(layer: l, position: p), Int32(c.kvHeadCount), Int32(c.headDim), rope.cosRow(p), rope.sinRow(p))
            }
            for r in 0..<n {
                ck_attention(h.query.pointer + r * c.qDim, Int32(c.headCount), Int32(c.kvHeadCount), Int32(c.headDim),
                             cache.keyRow(layer: l, position: 0), cache.valueRow(layer: l, position: 0), Int32(c.kvDim),
                             Int32(start + r + 1), h.attention.pointer + r * c.qDim, h.scores.pointer)
            }
            product(w.o, q8?.o, h.attention.pointer, h.normed.pointer, ldy: hd)
            ck_add(h.hidden.pointer, h.normed.pointer, n * hd)

            // MLP block: x = x + down(silu(gate(rmsnorm(x))) * up(rmsnorm(x)))
            ck_rmsnorm(h.hidden.pointer, w.postAttentionNorm.data, w.postAttentionNorm.dtype.kernelType, c.rmsNormEps, Int32(hd), Int32(n), h.normed.pointer)
            product(w.gate, q8?.gate, h.normed.pointer, h.gate.pointer, ldy: c.intermediateSize)
            product(w.up, q8?.up, h.normed.pointer, h.up.pointer, ldy: c.intermediateSize)
            ck_silu_mul(h.gate.pointer, h.up.pointer, n * c.intermediateSize)
            product(w.down, q8?.down, h.gate.pointer, h.normed.pointer, ldy: hd)
            ck_add(h.hidden.pointer, h.normed.pointer, n * hd)

            cache.setLength(start + n, layer: l)
        }
    }

    /// The exit head on rows `rows` of `h`: final RMSNorm, then the LM head, into logits rows
    /// firstRow..<firstRow + rows.count. The same head serves every exit layer (LayerSkip shares it). `h` is not
    /// modified, so the pass can continue through deeper layers afterwards.
    public func exitLogits(_ h: Activations, rows: Range<Int>, into logits: Logits, at firstRow: Int = 0) {
        let n = rows.count
        precondition(n > 0 && rows.upperBound <= h.capacity && firstRow + n <= logits.capacity)
        let hd = config.hiddenSize
        let normed = h.normed.pointer
        ck_rmsnorm(h.hidden.pointer + rows.lowerBound * hd, weights.finalNorm.data, weights.finalNorm.dtype.kernelType,
                   config.rmsNormEps, Int32(hd), Int32(n), normed)
        matmul(weights.lmHead, normed, n, logits.values.pointer + firstRow * config.vocabSize, ldy: config.vocabSize)
    }

    @inline(__always)
    private func matmul(_ w: WeightMatrix, _ x: UnsafePointer<Float>, _ n: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        ck_matmul(w.dtype.kernelType, w.data, Int32(w.rows), Int32(w.cols), x, Int32(w.cols), Int32(n), y, Int32(ldy))
    }
}

extension LlamaModel {
    /// Fills the K/V of `layers` at `positions` from hidden states that did not go through those
    /// layers (CALM's state propagation for early-exited tokens): each layer projects the given
    /// state with its own input norm and K/V weights, so later tokens have something to attend to
    /// at these positions. Costs the K/V projections only (about 1/6 of a layer's weights for
    /// Llama-3-style GQA), not the attention or the MLP.
    public func fillKeysAndValues(from h: Activations, rows: Range<Int>, layers: Range<Int>, positions: Range<Int>, cache: KVCache) {
        let n = rows.count
        precondition(n == positions.count && n > 0 && rows.upperBound <= h.capacity)
        let c = config
        let hd = c.hiddenSize
        let start = positions.lowerBound
        for l in layers {
            precondition(cache.lengths[l] == start, "layer \(l) cache holds \(cache.lengths[l]) positions, fill starts at \(start)")
            let w = weights.layers[l]
            ck_rmsnorm(h.hidden.pointer + rows.lowerBound * hd, w.inputNorm.data, w.inputNorm.dtype.kernelType, c.rmsNormEps,
                       Int32(hd), Int32(n), h.normed.pointer)
            ck_matmul(w.k.dtype.kernelType, w.k.data, Int32(w.k.rows), Int32(w.k.cols), h.normed.pointer, Int32(hd), Int32(n),
                      cache.keyRow(layer: l, position: start), Int32(c.kvDim))
            ck_matmul(w.v.dtype.kernelType, w.v.data, Int32(w.v.rows), Int32(w.v.cols), h.normed.pointer, Int32(hd), Int32(n),
                      cache.valueRow(layer: l, position: start), Int32(c.kvDim))
            for r in 0..<n {
                let p = start + r
                ck_rope(cache.keyRow(layer: l, position: p), Int32(c.kvHeadCount), Int32(c.headDim), rope.cosRow(p), rope.sinRow(p))
            }
            cache.setLength(start + n, layer: l)
        }
    }
}

/// A process-wide count of the decoder layers run, so that a supervisor (the daemon's watchdog)
/// can tell a long pass that is advancing from one that is stuck. One relaxed atomic add per
/// layer: nothing next to the layer's matrix products.
public enum EngineProgress {
    private static let counter = Atomic<Int>(0)
    static func layerRan() { counter.add(1, ordering: .relaxed) }
    public static var layersRun: Int { counter.load(ordering: .relaxed) }
}
