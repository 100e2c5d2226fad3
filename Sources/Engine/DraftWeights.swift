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

    init(_ w: WeightMatrix) {
        rows = w.rows
        cols = w.cols
        values = UnsafeMutablePointer<Int8>.allocate(capacity: rows * cols)
        scales = FloatBuffer(count: rows)
        struct Job { let w: WeightMatrix; let q: UnsafeMutablePointer<Int8>; let s: UnsafeMutablePointer<Float> }
        var job = Job(w: w, q: values, s: scales.pointer)
        withUnsafeMutablePointer(to: &job) { ptr in
            ck_parallel({ ctx, tid, nth in
                let job = ctx!.assumingMemoryBound(to: Job.self).pointee
                let r0 = Int32(Int(job.w.rows) * Int(tid) / Int(nth)), r1 = Int32(Int(job.w.rows) * Int(tid + 1) / Int(nth))
                ck_q8_quantize_rows(job.w.dtype.kernelType, job.w.data, Int32(job.w.cols), job.q, job.s, r0, r1)
            }, ptr)
        }
    }

    deinit { values.deallocate() }
}

/// Which copy of the weights a pass reads.
public enum WeightPrecision: String, Sendable, CaseIterable {
    /// The stored weights: what verification and every non-draft use must apply.
    case exact
    /// int8 copies (built on first use, shared by every job on the model): for drafts only.
    case int8
}

/// int8 copies of one decoder layer's matrices (norm weights stay as stored).
// `@unchecked Sendable`: immutable `let`s of read-only matrices.
public final class QuantizedLayer: @unchecked Sendable {
    let q, k, v, o, gate, up, down: QuantizedMatrix
    init(_ w: LayerWeights) {
        q = QuantizedMatrix(w.q)
        k = QuantizedMatrix(w.k)
        v = QuantizedMatrix(w.v)
        o = QuantizedMatrix(w.o)
        gate = QuantizedMatrix(w.gate)
        up = QuantizedMatrix(w.up)
        down = QuantizedMatrix(w.down)
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
