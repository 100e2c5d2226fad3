import CKernels
import Foundation

/// An int8 copy of a weight matrix with one f32 scale per row, for speculative drafting: a draft
/// only proposes tokens that the exact weights then verify, so it may read half the bytes.
// `@unchecked Sendable`: written once in init, read-only afterwards (shared by every job on the model).
public final class QuantizedMatrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    /// (rows, cols) int8, row-major.
    let values: UnsafeMutablePointer<Int8>
    /// (rows) f32: row r of the matrix ≈ scales[r] · values[r].
    let scales: FloatBuffer

    public var byteCount: Int { rows * cols + rows * 4 }

    /// A matrix of a quantised folder, copied out of its mapping (whose pages are released after),
    /// so that a quantised folder and quantise-on-load hold the same anonymous memory, which the
    /// model budget counts, and a rewritten model file cannot pull pages from under a running
    /// model. The copy costs little: 0.56 s to load the 1.24 GB of the 1B stand-in from the page
    /// cache, against 2.5 s to quantise it. `source`: the mapped I8 tensor `values` points into,
    /// whose pages are released band by band as they are copied (so the copy never holds both of a
    /// large matrix at once).
    init(rows: Int, cols: Int, copying values: UnsafePointer<Int8>, scales: UnsafePointer<Float>, source: WeightMatrix) {
        self.rows = rows
        self.cols = cols
        self.values = UnsafeMutablePointer<Int8>.allocate(capacity: rows * cols)
        let band = max(1, (16 << 20) / max(1, cols))
        for start in stride(from: 0, to: rows, by: band) {
            let end = min(rows, start + band)
            (self.values + start * cols).update(from: values + start * cols, count: (end - start) * cols)
            source.releasePages(rows: start..<end)
        }
        self.scales = FloatBuffer(count: rows)
        self.scales.pointer.update(from: scales, count: rows)
    }

    /// `releasingSource`: drop the stored pages of each band of rows once it is quantised, so that a
    /// model quantised at load never holds much more than its int8 copy (the 128k-row head alone is
    /// half a gigabyte of bf16).
    init(_ w: WeightMatrix, releasingSource: Bool = false) {
        rows = w.rows
        cols = w.cols
        values = UnsafeMutablePointer<Int8>.allocate(capacity: rows * cols)
        scales = FloatBuffer(count: rows)
        struct Job { let w: WeightMatrix; let q: UnsafeMutablePointer<Int8>; let s: UnsafeMutablePointer<Float>; var r0: Int; var r1: Int }
        // Bands of about 16 MiB of stored rows, each split over the kernel threads.
        let band = max(1, (16 << 20) / max(1, cols * w.dtype.byteSize))
        var job = Job(w: w, q: values, s: scales.pointer, r0: 0, r1: 0)
        for start in stride(from: 0, to: rows, by: band) {
            job.r0 = start
            job.r1 = min(rows, start + band)
            withUnsafeMutablePointer(to: &job) { ptr in
                ck_parallel({ ctx, tid, nth in
                    let job = ctx!.assumingMemoryBound(to: Job.self).pointee
                    let n = job.r1 - job.r0
                    let r0 = Int32(job.r0 + n * Int(tid) / Int(nth)), r1 = Int32(job.r0 + n * Int(tid + 1) / Int(nth))
                    ck_q8_quantize_rows(job.w.dtype.kernelType, job.w.data, Int32(job.w.cols), job.q, job.s, r0, r1)
                }, ptr)
            }
            if releasingSource { w.releasePages(rows: job.r0..<job.r1) }
        }
    }

    deinit { values.deallocate() }
}

/// Which copy of the weights a pass reads.
public enum WeightPrecision: String, Sendable, CaseIterable {
    /// The model's own weights (its `WeightFormat`): what verification and every non-draft use
    /// must apply.
    case exact
    /// int8 copies (built on first use, shared by every job on the model): for drafts only. On a
    /// model loaded as `.int8` these are the model's own weights, so `.exact` and `.int8` agree.
    case int8
}

/// The weights a model's passes read as its own (`WeightPrecision.exact`): what autoregressive
/// decoding and verification apply, so self-speculation reproduces decoding with these weights.
public enum WeightFormat: String, Sendable, CaseIterable {
    /// As stored in the safetensors files (bf16, f16 or f32).
    case stored
    /// Every matrix of the decoder layers and the LM head quantised at load time to int8 with one
    /// f32 scale per row (`QuantizedMatrix`, the arithmetic of `ck_q8.h`); the stored pages of
    /// those matrices are released once quantised. The embedding table stays as stored (a lookup
    /// reads one row).
    case int8
}

/// int8 copies of one decoder layer's matrices (norm weights stay as stored).
// `@unchecked Sendable`: immutable `let`s of read-only matrices.
public final class QuantizedLayer: @unchecked Sendable {
    let q, k, v, o, gate, up, down: QuantizedMatrix
    init(q: QuantizedMatrix, k: QuantizedMatrix, v: QuantizedMatrix, o: QuantizedMatrix, gate: QuantizedMatrix,
         up: QuantizedMatrix, down: QuantizedMatrix) {
        (self.q, self.k, self.v, self.o, self.gate, self.up, self.down) = (q, k, v, o, gate, up, down)
    }
    init(_ w: LayerWeights, releasingSource: Bool = false) {
        q = QuantizedMatrix(w.q, releasingSource: releasingSource)
        k = QuantizedMatrix(w.k, releasingSource: releasingSource)
        v = QuantizedMatrix(w.v, releasingSource: releasingSource)
        o = QuantizedMatrix(w.o, releasingSource: releasingSource)
        gate = QuantizedMatrix(w.gate, releasingSource: releasingSource)
        up = QuantizedMatrix(w.up, releasingSource: releasingSource)
        down = QuantizedMatrix(w.down, releasingSource: releasingSource)
    }
    public var byteCount: Int { [q, k, v, o, gate, up, down].reduce(0) { $0 + $1.byteCount } }
}

extension LlamaModel {
    /// The LM head's int8 copy, made once per model on first use.
    public var int8Head: QuantizedMatrix {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let head = derived.int8Head { return head }
        let head = QuantizedMatrix(weights.lmHead)
        derived.int8Head = head
        return head
    }

    /// int8 copies of layer l's matrices, made once per model on first use.
    public func int8Layer(_ l: Int) -> QuantizedLayer {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let layer = derived.int8Layers[l] { return layer }
        let layer = QuantizedLayer(weights.layers[l])
        derived.int8Layers[l] = layer
        return layer
    }

    /// Bytes held by the int8 copies made so far (memory a draft precision costs).
    /// The format's precision for a pass that asks for `p`: on an int8 model every pass reads the
    /// int8 weights.
    func resolved(_ p: WeightPrecision) -> WeightPrecision { format == .int8 ? .int8 : p }

    /// Quantises every layer and the head (an `.int8` model, at load): rows split over the kernel
    /// threads, one matrix at a time, each matrix's stored pages released right after, so the
    /// resident set never holds much more than the int8 copy.
    func quantizeAll() {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let stored = weights.quantized { // a quantised folder: its matrices, as loaded
            for (l, layer) in stored.layers.enumerated() { derived.int8Layers[l] = layer }
            derived.int8Head = stored.head
            return
        }
        for l in 0..<config.layerCount where derived.int8Layers[l] == nil {
            derived.int8Layers[l] = QuantizedLayer(weights.layers[l], releasingSource: true)
        }
        if derived.int8Head == nil {
            derived.int8Head = QuantizedMatrix(weights.lmHead, releasingSource: true)
        }
    }

    public var derivedByteCount: Int {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        return (derived.int8Head?.byteCount ?? 0) + derived.int8Layers.values.reduce(0) { $0 + $1.byteCount }
    }
}

/// Weight copies derived from the stored ones on demand (guarded by LlamaModel.derivedLock).
// `@unchecked Sendable`: both fields are read and written under LlamaModel.derivedLock only.
final class DerivedWeights: @unchecked Sendable {
    var int8Head: QuantizedMatrix?
    var int8Layers: [Int: QuantizedLayer] = [:]
}
