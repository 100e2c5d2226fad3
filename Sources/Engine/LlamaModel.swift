import CKernels
import Foundation
import Synchronization

/// A Llama-architecture decoder that runs any range of its layers and applies the exit head
/// (final RMSNorm + LM head) after any layer. Immutable after loading and shared by every job:
/// all per-sequence state lives in `KVCache` and `Activations`.
// `@unchecked Sendable`: weights, config and RoPE tables are read-only after init; the lazily made
// int8 copies are guarded by `derivedLock`. All per-sequence state lives outside (KVCache, rows).
public final class LlamaModel: @unchecked Sendable {
    public let config: ModelConfig
    public let weights: ModelWeights
    public let directory: URL
    /// The weights the model's own passes read (see `WeightFormat`).
    public let format: WeightFormat
    let rope: RoPETable
    let derived = DerivedWeights()
    let derivedLock = NSLock()

    public var layerCount: Int { config.layerCount }
    /// Positions a cache may hold: the RoPE table is precomputed for this many.
    public let maxPositions: Int

    /// Loads `config.json` and the safetensors weights of a Hugging Face model folder.
    /// `maxPositions` caps the context (default: the config's max_position_embeddings, at most 8192).
    /// `format: .int8` or `.q4` quantises every matrix here, before returning. A folder written by
    /// `layerskip quantize` (config `layerskip_weights`) is mapped as it is, in its own format.
    public init(directory: URL, format: WeightFormat = .stored, maxPositions: Int? = nil) throws {
        self.directory = directory
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ModelError(.missingFile, file: directory.path, "model folder not found (expected a directory with config.json and safetensors weights)")
        }
        config = try ModelConfig.load(from: directory.appendingPathComponent("config.json"))
        // A quantised folder's weights are its format whatever was asked: they are what is stored.
        self.format = config.storedFormat == .stored ? format : config.storedFormat
        weights = try ModelWeights.load(directory: directory, config: config)
        self.maxPositions = maxPositions ?? min(config.maxPositionEmbeddings, 8192)
        rope = RoPETable(parameters: config.rope, headDim: config.headDim, maxPositions: self.maxPositions)
        if self.format != .stored { quantizeAll() }
    }

    /// Bytes of weights the passes read and keep resident: the stored tensors, or for an int8
    /// model its quantised copies and scales plus the stored norms (the embedding rows a lookup
    /// faults in are not counted).
    public var weightBytes: Int {
        switch format {
        case .stored: return weights.byteCount
        case .int8, .q4:
            let norms = weights.finalNorm.byteCount + weights.layers.reduce(0) { $0 + $1.inputNorm.byteCount + $1.postAttentionNorm.byteCount }
            return derivedByteCount + norms
        }
    }

    /// Identifies the model and its format (measured pass-cost curves are kept per key).
    public var cacheKey: String { format == .stored ? directory.path : directory.path + "#" + format.rawValue }

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

    /// Writes the embedding of `token` into one (hidden) row.
    public func embed(_ token: Int, into row: UnsafeMutablePointer<Float>) {
        precondition(token >= 0 && token < config.vocabSize, "token id \(token) outside the vocabulary")
        weights.embedding.copyRow(token, into: row)
    }

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
    /// A one-segment `run(_:scratch:logits:)`: the same forward loop as a batched pass.
    ///
    /// `precision: .int8` / `.q4` reads quantised copies of the layers' matrices (speculative
    /// drafts only, `weightsRead(by:)`): the K/V it writes are approximations that verification
    /// must overwrite.
    public func forward(_ h: Activations, layers: Range<Int>, positions: Range<Int>, cache: KVCache,
                        precision: WeightPrecision = .exact) {
        let n = positions.count
        precondition(n > 0 && n <= h.capacity, "pass of \(n) positions for activations of \(h.capacity)")
        h.plan.reset()
        h.plan.add(cache: cache, hidden: h.hidden.pointer, count: n, firstPosition: positions.lowerBound, layers: layers, precision: precision)
        run(h.plan, scratch: h.scratch, logits: nil)
    }

    /// The exit head on rows `rows` of `h`: final RMSNorm, then the LM head, into logits rows
    /// firstRow..<firstRow + rows.count. The same head serves every exit layer (LayerSkip shares it). `h` is not
    /// modified, so the pass can continue through deeper layers afterwards. `vocabulary`: score
    /// only its tokens (−infinity elsewhere), through its copy of their head rows.
    public func exitLogits(_ h: Activations, rows: Range<Int>, into logits: Logits, at firstRow: Int = 0,
                           head: WeightPrecision = .exact, vocabulary: DraftVocabulary? = nil) {
        let n = rows.count
        precondition(n > 0 && rows.upperBound <= h.capacity && firstRow + n <= logits.capacity)
        h.plan.reset()
        h.plan.skipLogitsRows(firstRow)
        h.plan.add(cache: nil, hidden: h.hidden.pointer + rows.lowerBound * config.hiddenSize, count: n,
                   firstPosition: 0, layers: 0..<0, headRows: 0..<n, headPrecision: head, headVocabulary: vocabulary)
        run(h.plan, scratch: h.scratch, logits: logits)
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
        h.plan.reset()
        h.plan.add(cache: cache, hidden: h.hidden.pointer + rows.lowerBound * config.hiddenSize, count: n,
                   firstPosition: positions.lowerBound, layers: layers, keysAndValuesOnly: true)
        run(h.plan, scratch: h.scratch, logits: nil)
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
