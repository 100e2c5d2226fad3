import CKernels
import Foundation

/// A quantised copy of a weight matrix: the weights of an `.int8` or `.q4` model, or the cheaper
/// copy a speculative draft reads (a draft only proposes tokens that the model's own weights then
/// verify, so it may read fewer bytes).
// `@unchecked Sendable`: written once in init, read-only afterwards (shared by every job on the model).
public final class QuantizedMatrix: @unchecked Sendable {
    /// `.int8` or `.q4` (never `.stored`).
    public let format: WeightFormat
    public let rows: Int
    public let cols: Int
    /// `.int8`: (rows, cols) int8, row-major (ck_q8.h). `.q4`: (rows, ⌈cols / 64⌉ · 32) bytes of
    /// nibbles (ck_q4.h's layout). 64-byte aligned.
    let values: UnsafeMutableRawPointer
    /// `.int8`: (rows) f32, row r ≈ scales[r] · values[r]. `.q4`: (rows, blocks) f16 block scales.
    let scales: UnsafeMutableRawPointer
    let valueBytes: Int
    let scaleBytes: Int

    public var byteCount: Int { valueBytes + scaleBytes }

    /// Bytes of values and of scales of a (rows, cols) matrix in `format`, and the shapes a
    /// quantised folder stores them in (values, scales).
    static func layout(_ format: WeightFormat, rows: Int, cols: Int) -> (valueShape: [Int], scaleShape: [Int], valueBytes: Int, scaleBytes: Int) {
        switch format {
        case .q4:
            let blocks = (cols + Int(CK_Q4_BLOCK) - 1) / Int(CK_Q4_BLOCK)
            let rowBytes = (cols + Int(CK_Q4_GROUP) - 1) / Int(CK_Q4_GROUP) * Int(CK_Q4_GROUP_BYTES)
            return ([rows, rowBytes], [rows, blocks], rows * rowBytes, rows * blocks * 2)
        default:
            precondition(format == .int8, "no quantised layout for \(format)")
            return ([rows, cols], [rows], rows * cols, rows * 4)
        }
    }

    private init(format: WeightFormat, rows: Int, cols: Int) {
        self.format = format
        self.rows = rows
        self.cols = cols
        let l = Self.layout(format, rows: rows, cols: cols)
        (valueBytes, scaleBytes) = (l.valueBytes, l.scaleBytes)
        values = .allocate(byteCount: max(1, valueBytes), alignment: 64)
        scales = .allocate(byteCount: max(1, scaleBytes), alignment: 64)
    }

    /// A matrix of a quantised folder, copied out of its mapping (whose pages are released after),
    /// so that a quantised folder and quantise-on-load hold the same anonymous memory, which the
    /// model budget counts, and a rewritten model file cannot pull pages from under a running
    /// model. The copy costs little: 0.56 s to load the 1.24 GB of the 1B stand-in from the page
    /// cache, against 2.5 s to quantise it. `source`: the mapped values tensor, whose pages are
    /// released band by band as they are copied (so the copy never holds both of a large matrix at
    /// once); `scales` the mapped scales, `layout(format, …).scaleBytes` of them.
    convenience init(format: WeightFormat, rows: Int, cols: Int, copying source: WeightMatrix, scales: UnsafeRawPointer) {
        self.init(format: format, rows: rows, cols: cols)
        let rowBytes = valueBytes / max(1, rows)
        let band = max(1, (16 << 20) / max(1, rowBytes))
        for start in stride(from: 0, to: rows, by: band) {
            let end = min(rows, start + band)
            (values + start * rowBytes).copyMemory(from: source.data + start * rowBytes, byteCount: (end - start) * rowBytes)
            source.releasePages(rows: start..<end)
        }
        self.scales.copyMemory(from: scales, byteCount: scaleBytes)
    }

    /// Quantises `w` (ck_q8.h or ck_q4.h). `releasingSource`: drop the stored pages of each band
    /// of rows once it is quantised, so that a model quantised at load never holds much more than
    /// its quantised copy (the 128k-row head alone is half a gigabyte of bf16).
    convenience init(_ w: WeightMatrix, format: WeightFormat, releasingSource: Bool = false) {
        self.init(format: format, rows: w.rows, cols: w.cols)
        struct Job { let w: WeightMatrix; let q4: Bool; let q: UnsafeMutableRawPointer; let s: UnsafeMutableRawPointer; var r0: Int; var r1: Int }
        // Bands of about 16 MiB of stored rows, each split over the kernel threads.
        let band = max(1, (16 << 20) / max(1, cols * w.dtype.byteSize))
        var job = Job(w: w, q4: format == .q4, q: values, s: scales, r0: 0, r1: 0)
        for start in stride(from: 0, to: rows, by: band) {
            job.r0 = start
            job.r1 = min(rows, start + band)
            withUnsafeMutablePointer(to: &job) { ptr in
                ck_parallel({ ctx, tid, nth in
                    let job = ctx!.assumingMemoryBound(to: Job.self).pointee
                    let n = job.r1 - job.r0
                    let r0 = Int32(job.r0 + n * Int(tid) / Int(nth)), r1 = Int32(job.r0 + n * Int(tid + 1) / Int(nth))
                    if job.q4 {
                        ck_q4_quantize_rows(job.w.dtype.kernelType, job.w.data, Int32(job.w.cols), job.q.assumingMemoryBound(to: UInt8.self),
                                            job.s.assumingMemoryBound(to: UInt16.self), r0, r1)
                    } else {
                        ck_q8_quantize_rows(job.w.dtype.kernelType, job.w.data, Int32(job.w.cols), job.q.assumingMemoryBound(to: Int8.self),
                                            job.s.assumingMemoryBound(to: Float.self), r0, r1)
                    }
                }, ptr)
            }
            if releasingSource { w.releasePages(rows: job.r0..<job.r1) }
        }
    }

    /// `source` requantised into `format`: the draft copies of a quantised folder, whose stored
    /// matrices are the quantised values themselves (no 16-bit weights to start from). Rows are
    /// dequantised to f32 a band at a time (int8: q · scale; q4: d · (nibble − 8)), then quantised
    /// as stored weights are. Drafts only propose, so starting from the folder's values rather than
    /// the original weights changes what they propose, never the output.
    convenience init(requantizing source: QuantizedMatrix, format: WeightFormat) {
        self.init(format: format, rows: source.rows, cols: source.cols)
        let cols = source.cols, band = max(1, (16 << 20) / max(1, cols * 4))
        let f = UnsafeMutablePointer<Float>.allocate(capacity: band * cols)
        defer { f.deallocate() }
        let sourceRowBytes = source.valueBytes / max(1, rows), rowBytes = valueBytes / max(1, rows)
        let blocks = (cols + 31) / 32
        for start in stride(from: 0, to: rows, by: band) {
            let n = min(band, rows - start)
            if source.format == .q4 {
                ck_q4_dequantize_rows((source.values + start * sourceRowBytes).assumingMemoryBound(to: UInt8.self),
                                      source.scales.assumingMemoryBound(to: UInt16.self) + start * blocks, Int32(cols), f, 0, Int32(n))
            } else {
                for r in 0..<n {
                    let q = (source.values + (start + r) * sourceRowBytes).assumingMemoryBound(to: Int8.self)
                    let scale = source.scales.assumingMemoryBound(to: Float.self)[start + r]
                    for k in 0..<cols { f[r * cols + k] = Float(q[k]) * scale }
                }
            }
            if format == .q4 {
                ck_q4_quantize_rows(CK_F32, f, Int32(cols), (values + start * rowBytes).assumingMemoryBound(to: UInt8.self),
                                    scales.assumingMemoryBound(to: UInt16.self) + start * blocks, 0, Int32(n))
            } else {
                ck_q8_quantize_rows(CK_F32, f, Int32(cols), (values + start * rowBytes).assumingMemoryBound(to: Int8.self),
                                    scales.assumingMemoryBound(to: Float.self) + start, 0, Int32(n))
            }
        }
    }

    /// Rows `tokens` of `source`, in that order, byte for byte (values and scales): a pruned head
    /// of a quantised folder, whose rows are then exactly its full head's.
    convenience init(rows tokens: [Int], of source: QuantizedMatrix) {
        self.init(format: source.format, rows: tokens.count, cols: source.cols)
        let valueRow = source.valueBytes / max(1, source.rows), scaleRow = source.scaleBytes / max(1, source.rows)
        for (j, t) in tokens.enumerated() {
            precondition(t >= 0 && t < source.rows)
            (values + j * valueRow).copyMemory(from: source.values + t * valueRow, byteCount: valueRow)
            (scales + j * scaleRow).copyMemory(from: source.scales + t * scaleRow, byteCount: scaleRow)
        }
    }

    /// y[t·ldy + o] = row t of x times row o of this matrix, t < n (ck_matmul_q8 / ck_matmul_q4).
    func multiply(_ x: UnsafePointer<Float>, ldx: Int, n: Int, into y: UnsafeMutablePointer<Float>, ldy: Int) {
        if format == .q4 {
            ck_matmul_q4(values.assumingMemoryBound(to: UInt8.self), scales.assumingMemoryBound(to: UInt16.self), Int32(rows), Int32(cols),
                         x, Int32(ldx), Int32(n), y, Int32(ldy))
        } else {
            ck_matmul_q8(values.assumingMemoryBound(to: Int8.self), scales.assumingMemoryBound(to: Float.self), Int32(rows), Int32(cols),
                         x, Int32(ldx), Int32(n), y, Int32(ldy))
        }
    }

    deinit {
        values.deallocate()
        scales.deallocate()
    }
}

/// Which copy of the weights a pass reads.
public enum WeightPrecision: String, Sendable, CaseIterable {
    /// The model's own weights (its `WeightFormat`): what verification and every non-draft use
    /// must apply.
    case exact
    /// int8 copies (built on first use, shared by every job on the model): for drafts only.
    case int8
    /// 4-bit copies (ck_q4.h), likewise for drafts only.
    case q4
}

/// The weights a model's passes read as its own (`WeightPrecision.exact`): what autoregressive
/// decoding and verification apply, so self-speculation reproduces decoding with these weights.
/// Every matrix of the decoder layers and the LM head is quantised at load time (`.int8`, `.q4`)
/// and the stored pages of those matrices released once quantised; the embedding table stays as
/// stored (a lookup reads one row).
public enum WeightFormat: String, Sendable, CaseIterable {
    /// As stored in the safetensors files (bf16, f16 or f32).
    case stored
    /// int8 with one f32 scale per row (the arithmetic of `ck_q8.h`). Per row rather than per
    /// block of 32: the decode kernel then needs one multiply per row instead of one per block, and
    /// last-layer accuracy moved by 0.01 points only (model card).
    case int8
    /// 4-bit blocks of 32 weights with an f16 scale each, 4.5 bits a weight (`ck_q4.h`).
    /// Activations are quantised to int8 per block of 32 for its products.
    case q4

    /// Bytes per weight, for ordering: a draft never reads more than the model's own weights.
    var cost: Int { self == .stored ? 16 : self == .int8 ? 8 : 4 }
}

/// Quantised copies of one decoder layer's matrices, all in one format (norm weights stay as stored).
// `@unchecked Sendable`: immutable `let`s of read-only matrices.
public final class QuantizedLayer: @unchecked Sendable {
    let q, k, v, o, gate, up, down: QuantizedMatrix
    init(q: QuantizedMatrix, k: QuantizedMatrix, v: QuantizedMatrix, o: QuantizedMatrix, gate: QuantizedMatrix,
         up: QuantizedMatrix, down: QuantizedMatrix) {
        (self.q, self.k, self.v, self.o, self.gate, self.up, self.down) = (q, k, v, o, gate, up, down)
    }
    init(requantizing source: QuantizedLayer, format: WeightFormat) {
        func make(_ m: QuantizedMatrix) -> QuantizedMatrix { QuantizedMatrix(requantizing: m, format: format) }
        (q, k, v, o, gate, up, down) = (make(source.q), make(source.k), make(source.v), make(source.o), make(source.gate),
                                        make(source.up), make(source.down))
    }
    init(_ w: LayerWeights, format: WeightFormat, releasingSource: Bool = false) {
        func make(_ m: WeightMatrix) -> QuantizedMatrix { QuantizedMatrix(m, format: format, releasingSource: releasingSource) }
        (q, k, v, o, gate, up, down) = (make(w.q), make(w.k), make(w.v), make(w.o), make(w.gate), make(w.up), make(w.down))
    }
    public var byteCount: Int { [q, k, v, o, gate, up, down].reduce(0) { $0 + $1.byteCount } }
}

extension LlamaModel {
    /// The LM head's copy in `format` (`.int8` or `.q4`), made once per model on first use (on a
    /// model of that format: its own head, made at load).
    public func quantizedHead(_ format: WeightFormat) -> QuantizedMatrix {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let head = derived.heads[format] { return head }
        let head = weights.lmHead.dtype.isFloat ? QuantizedMatrix(weights.lmHead, format: format)
            : QuantizedMatrix(requantizing: derived.heads[self.format]!, format: format)
        derived.heads[format] = head
        return head
    }

    /// Layer l's matrices in `format`, made once per model on first use.
    public func quantizedLayer(_ l: Int, _ format: WeightFormat) -> QuantizedLayer {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let layer = derived.layers[format]?[l] { return layer }
        let layer = weights.layers[l].q.dtype.isFloat ? QuantizedLayer(weights.layers[l], format: format)
            : QuantizedLayer(requantizing: derived.layers[self.format]![l]!, format: format)
        derived.layers[format, default: [:]][l] = layer
        return layer
    }

    /// The weights a pass that asks for `p` reads: `.exact` is the model's format; a draft
    /// precision is honoured unless it would read more bytes than the model's own weights (int8
    /// drafts on a q4 model read the q4 weights).
    public func weightsRead(by p: WeightPrecision) -> WeightFormat {
        let asked: WeightFormat = p == .exact ? format : p == .int8 ? .int8 : .q4
        return asked.cost < format.cost ? asked : format
    }

    /// Quantises every layer and the head into the model's format (at load): rows split over the
    /// kernel threads, one matrix at a time, each matrix's stored pages released right after, so
    /// the resident set never holds much more than the quantised copy.
    func quantizeAll() {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        if let stored = weights.quantized { // a quantised folder: its matrices, as loaded
            for (l, layer) in stored.layers.enumerated() { derived.layers[format, default: [:]][l] = layer }
            derived.heads[format] = stored.head
            return
        }
        for l in 0..<config.layerCount where derived.layers[format]?[l] == nil {
            derived.layers[format, default: [:]][l] = QuantizedLayer(weights.layers[l], format: format, releasingSource: true)
        }
        if derived.heads[format] == nil {
            derived.heads[format] = QuantizedMatrix(weights.lmHead, format: format, releasingSource: true)
        }
    }

    /// Bytes held by the quantised copies made so far: a quantised model's own weights, plus what
    /// draft precisions and pruned draft heads cost.
    public var derivedByteCount: Int {
        derivedLock.lock()
        defer { derivedLock.unlock() }
        return derived.heads.values.reduce(0) { $0 + $1.byteCount }
            + derived.layers.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.byteCount } }
            + derived.vocabularies.values.reduce(0) { $0 + $1.heads.values.reduce(0) { $0 + $1.byteCount } }
    }
}

/// Weight copies derived from the stored ones on demand (guarded by LlamaModel.derivedLock).
// `@unchecked Sendable`: both fields are read and written under LlamaModel.derivedLock only.
final class DerivedWeights: @unchecked Sendable {
    var heads: [WeightFormat: QuantizedMatrix] = [:]
    var layers: [WeightFormat: [Int: QuantizedLayer]] = [:]
    /// Draft vocabularies by their (ascending) token ids, each holding its pruned head copies.
    var vocabularies: [[Int]: DraftVocabulary] = [:]
}
