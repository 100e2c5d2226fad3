import CKernels
import Foundation

/// One sequence's rows in a pass: `count` consecutive positions of one KV cache, run through one
/// range of layers. A pass carries any number of segments (decode rows, drafts, verification rows,
/// prefill chunks of different sequences) and reads each weight matrix once for all the rows that
/// need it.
public struct RowSegment {
    /// nil only for a segment of no layers (the exit head alone).
    public let cache: KVCache?
    /// (count, hidden) f32, row-major, owned by the sequence: the input of `layers.lowerBound`
    /// (embeddings when that is 0) before the pass, the state leaving `layers.upperBound − 1`
    /// after it. Two segments may share rows (a verification continuing from the rows a draft
    /// segment just produced) as long as no layer runs both.
    public let hidden: UnsafeMutablePointer<Float>
    public let count: Int
    /// Position of row 0; every layer of `layers` must hold exactly this many positions.
    public let firstPosition: Int
    public let layers: Range<Int>
    public let precision: WeightPrecision
    /// CALM's fill: only the K/V projections of `hidden` (an exited state, left unchanged) are
    /// written for `layers`; no attention, no MLP.
    public let keysAndValuesOnly: Bool
    /// Rows of this segment whose exit-head logits the pass computes, after every layer has run.
    public let headRows: Range<Int>
    public let headPrecision: WeightPrecision
    /// nil: the head scores every token. Otherwise only these (a pruned draft head): their logits
    /// come from the copy of their head rows in `headPrecision`'s format, and every other entry of
    /// the segment's logits rows is −infinity.
    public let headVocabulary: DraftVocabulary?
    /// The pass logits row of `headRows.lowerBound`.
    public let firstLogitsRow: Int

    var positions: Range<Int> { firstPosition..<(firstPosition + count) }
}

/// The segments of the next pass, built by the decode loop step by step. Made once and reused:
/// `reset` keeps the storage, so planning a pass allocates nothing.
public final class PassPlan {
    public private(set) var segments: [RowSegment] = []
    /// Rows over all segments (rows shared by two segments count twice).
    public private(set) var rowCount = 0
    /// Logits rows the pass writes: head rows in segment order.
    public private(set) var logitsRowCount = 0
    public let maxRows: Int
    public let maxLogitsRows: Int

    public init(maxRows: Int, maxLogitsRows: Int, maxSegments: Int = 64) {
        precondition(maxRows > 0 && maxLogitsRows > 0)
        self.maxRows = maxRows
        self.maxLogitsRows = maxLogitsRows
        segments.reserveCapacity(maxSegments)
    }

    public func reset() {
        segments.removeAll(keepingCapacity: true)
        rowCount = 0
        logitsRowCount = 0
    }

    public var isEmpty: Bool { segments.isEmpty }

    /// Starts the next segment's head rows `k` logits rows further on (a caller that fills the
    /// logits in several runs).
    public func skipLogitsRows(_ k: Int) {
        precondition(k >= 0 && k <= freeLogitsRows)
        logitsRowCount += k
    }

    /// Rows the plan can still take.
    public var freeRows: Int { maxRows - rowCount }
    public var freeLogitsRows: Int { maxLogitsRows - logitsRowCount }

    /// Adds a segment; returns the pass logits row of its first head row.
    @discardableResult
    public func add(cache: KVCache?, hidden: UnsafeMutablePointer<Float>, count: Int, firstPosition: Int, layers: Range<Int>,
                    precision: WeightPrecision = .exact, keysAndValuesOnly: Bool = false,
                    headRows: Range<Int> = 0..<0, headPrecision: WeightPrecision = .exact,
                    headVocabulary: DraftVocabulary? = nil) -> Int {
        precondition(count > 0 && count <= freeRows, "segment of \(count) rows for a plan with \(freeRows) free")
        precondition(headRows.isEmpty || (headRows.lowerBound >= 0 && headRows.upperBound <= count), "head rows \(headRows) outside 0..<\(count)")
        precondition(headRows.count <= freeLogitsRows, "\(headRows.count) head rows for a plan with \(freeLogitsRows) free")
        precondition(!(keysAndValuesOnly && !headRows.isEmpty), "a K/V fill has no head rows")
        precondition(cache != nil || layers.isEmpty, "a segment that runs layers needs a cache")
        precondition(headVocabulary == nil || !headRows.isEmpty, "a head vocabulary without head rows")
        let first = logitsRowCount
        segments.append(RowSegment(cache: cache, hidden: hidden, count: count, firstPosition: firstPosition, layers: layers,
                                   precision: precision, keysAndValuesOnly: keysAndValuesOnly, headRows: headRows,
                                   headPrecision: headPrecision, headVocabulary: headVocabulary, firstLogitsRow: first))
        rowCount += count
        logitsRowCount += headRows.count
        return first
    }
}

/// Scratch of the passes of one plan size: the packed rows of the segments a layer runs.
/// Made once per decode loop (or per `Activations`), never per step.
public final class PassScratch {
    public let maxRows: Int
    /// (maxRows, hidden): normalised input of the current sub-layer, then its output; packed rows.
    let normed: FloatBuffer
    /// (maxRows, heads·headDim): queries, then the attention output; packed rows.
    let query: FloatBuffer
    let attention: FloatBuffer
    /// (maxRows, kvHeads·headDim) each: the K/V projections before they are copied into each cache.
    let keys: FloatBuffer
    let values: FloatBuffer
    /// (maxRows, intermediate) each: SwiGLU gate and up projections.
    let gate: FloatBuffer
    let up: FloatBuffer
    /// Up to maxRows entries: the query rows of the current layer's attention call, one per full
    /// row (pointers into `query`, `attention` and the caches); refilled each layer, never regrown.
    var attentionRows: [ck_attention_row] = []
    /// Per active segment of the current layer: its index in the plan and its first packed row.
    var active: [(segment: Int, row: Int)] = []

    public init(config: ModelConfig, maxRows: Int, maxPositions: Int) {
        precondition(maxRows > 0)
        self.maxRows = maxRows
        normed = FloatBuffer(count: maxRows * config.hiddenSize)
        query = FloatBuffer(count: maxRows * config.qDim)
        attention = FloatBuffer(count: maxRows * config.qDim)
        keys = FloatBuffer(count: maxRows * config.kvDim)
        values = FloatBuffer(count: maxRows * config.kvDim)
        gate = FloatBuffer(count: maxRows * config.intermediateSize)
        up = FloatBuffer(count: maxRows * config.intermediateSize)
        attentionRows.reserveCapacity(maxRows)
        active.reserveCapacity(64)
    }

    public static func byteCount(config: ModelConfig, maxRows: Int, maxPositions: Int) -> Int {
        4 * maxRows * (config.hiddenSize + 2 * config.qDim + 2 * config.kvDim + 2 * config.intermediateSize)
            + maxRows * MemoryLayout<ck_attention_row>.stride
    }
}

extension LlamaModel {
    public func makePassScratch(maxRows: Int) -> PassScratch {
        PassScratch(config: config, maxRows: maxRows, maxPositions: maxPositions)
    }

    /// Runs a plan: layer by layer, every segment whose layer range holds the layer, then the exit
    /// head on every head row. Each weight matrix is read once per call of the matrix product, and
    /// the calls are formed so that a segment's numbers are those of a pass of its own:
    /// segments of at most `ck_matmul_row_independent_max()` rows are packed together (in plan
    /// order, same weight copy, up to that many rows per call), a larger segment (a prefill
    /// chunk) gets calls of its own. So a sequence's output never depends on its batch-mates.
    /// Planning larger segments last keeps the small ones in one call.
    public func run(_ plan: PassPlan, scratch s: PassScratch, logits: Logits?) {
        precondition(plan.rowCount <= s.maxRows, "plan of \(plan.rowCount) rows for scratch of \(s.maxRows)")
        precondition(plan.logitsRowCount == 0 || (logits?.capacity ?? 0) >= plan.logitsRowCount, "logits too small for the plan")
        let segments = plan.segments
        guard !segments.isEmpty else { return }
        var lowest = Int.max, highest = 0
        for seg in segments {
            precondition(seg.layers.lowerBound >= 0 && seg.layers.upperBound <= config.layerCount, "layers \(seg.layers) outside 0..<\(config.layerCount)")
            if let cache = seg.cache {
                precondition(seg.positions.upperBound <= cache.capacity && seg.positions.upperBound <= maxPositions,
                             "position \(seg.positions.upperBound) beyond the cache")
            }
            if !seg.layers.isEmpty {
                lowest = min(lowest, seg.layers.lowerBound)
                highest = max(highest, seg.layers.upperBound)
            }
        }
        let uniformMax = Int(ck_matmul_row_independent_max())
        if lowest < highest {
            for l in lowest..<highest { runLayer(l, segments, s, uniformMax: uniformMax) }
        }
        if plan.logitsRowCount > 0, let logits { runHead(segments, s, logits, uniformMax: uniformMax) }
    }

    private func runLayer(_ l: Int, _ segments: [RowSegment], _ s: PassScratch, uniformMax: Int) {
        let c = config
        let hd = c.hiddenSize
        // Packed order: segments that run the whole layer first (plan order), then K/V fills, so
        // the Q/O/MLP products read one prefix of the packed rows and the K/V products all of them.
        s.active.removeAll(keepingCapacity: true)
        var rows = 0
        for pass in 0..<2 {
            for (i, seg) in segments.enumerated() where seg.layers.contains(l) && seg.keysAndValuesOnly == (pass == 1) {
                precondition(seg.cache!.lengths[l] == seg.firstPosition,
                             "layer \(l) cache holds \(seg.cache!.lengths[l]) positions, segment starts at \(seg.firstPosition)")
                s.active.append((i, rows))
                rows += seg.count
            }
        }
        guard rows > 0 else { return }
        EngineProgress.layerRan()
        let fullCount = s.active.firstIndex { segments[$0.segment].keysAndValuesOnly } ?? s.active.count
        let fullRows = fullCount < s.active.count ? s.active[fullCount].row : rows
        let w = weights.layers[l]
        // The quantised copies this layer's segments read, by format (at most two: a quantised
        // model's own and a cheaper draft copy).
        var quantized = ByFormat<QuantizedLayer>()
        for (i, _) in s.active {
            let f = weightsRead(by: segments[i].precision)
            if f != .stored, quantized[f] == nil { quantized[f] = quantizedLayer(l, f) }
        }

        /// y = x·Wᵀ over the packed rows of active[0..<upTo], in calls formed by the rule above.
        func product(_ m: WeightMatrix, _ pick: (QuantizedLayer) -> QuantizedMatrix, upTo: Int, _ x: UnsafePointer<Float>, ldx: Int,
                     _ y: UnsafeMutablePointer<Float>, ldy: Int) {
            var a = 0
            while a < upTo {
                let first = segments[s.active[a].segment]
                var b = a + 1
                var n = first.count
                if first.count <= uniformMax {
                    while b < upTo {
                        let next = segments[s.active[b].segment]
                        guard next.count <= uniformMax, weightsRead(by: next.precision) == weightsRead(by: first.precision),
                              n + next.count <= uniformMax else { break }
                        n += next.count
                        b += 1
                    }
                }
                let row = s.active[a].row
                if let layer = quantized[weightsRead(by: first.precision)] {
                    pick(layer).multiply(x + row * ldx, ldx: ldx, n: n, into: y + row * ldy, ldy: ldy)
                } else {
                    ck_matmul(m.dtype.kernelType, m.data, Int32(m.rows), Int32(m.cols), x + row * ldx, Int32(ldx), Int32(n),
                              y + row * ldy, Int32(ldy))
                }
                a = b
            }
        }

        // Attention block: x = h + o(attn(rmsnorm(h))).
        for (i, row) in s.active {
            let seg = segments[i]
            ck_rmsnorm(seg.hidden, w.inputNorm.data, w.inputNorm.dtype.kernelType, c.rmsNormEps, Int32(hd), Int32(seg.count),
                       s.normed.pointer + row * hd)
        }
        product(w.k, \.k, upTo: s.active.count, s.normed.pointer, ldx: hd, s.keys.pointer, ldy: c.kvDim)
        product(w.v, \.v, upTo: s.active.count, s.normed.pointer, ldx: hd, s.values.pointer, ldy: c.kvDim)
        for (i, row) in s.active {
            let seg = segments[i]
            let cache = seg.cache!
            let start = seg.firstPosition
            cache.keyRow(layer: l, position: start).update(from: s.keys.pointer + row * c.kvDim, count: seg.count * c.kvDim)
            cache.valueRow(layer: l, position: start).update(from: s.values.pointer + row * c.kvDim, count: seg.count * c.kvDim)
            for r in 0..<seg.count {
                let p = start + r
                ck_rope(cache.keyRow(layer: l, position: p), Int32(c.kvHeadCount), Int32(c.headDim), rope.cosRow(p), rope.sinRow(p))
            }
        }
        if fullCount > 0 {
            product(w.q, \.q, upTo: fullCount, s.normed.pointer, ldx: hd, s.query.pointer, ldy: c.qDim)
            s.attentionRows.removeAll(keepingCapacity: true)
            for (i, row) in s.active[0..<fullCount] {
                let seg = segments[i]
                let cache = seg.cache!
                for r in 0..<seg.count {
                    let p = seg.firstPosition + r
                    let q = s.query.pointer + (row + r) * c.qDim
                    ck_rope(q, Int32(c.headCount), Int32(c.headDim), rope.cosRow(p), rope.sinRow(p))
                    s.attentionRows.append(ck_attention_row(q: q, K: cache.keyRow(layer: l, position: 0),
                                                            V: cache.valueRow(layer: l, position: 0), len: Int32(p + 1),
                                                            out: s.attention.pointer + (row + r) * c.qDim))
                }
            }
            s.attentionRows.withUnsafeBufferPointer {
                ck_attention_rows($0.baseAddress, Int32($0.count), Int32(c.headCount), Int32(c.kvHeadCount), Int32(c.headDim),
                                  Int32(c.kvDim))
            }
            product(w.o, \.o, upTo: fullCount, s.attention.pointer, ldx: c.qDim, s.normed.pointer, ldy: hd)
            for (i, row) in s.active[0..<fullCount] {
                let seg = segments[i]
                ck_add(seg.hidden, s.normed.pointer + row * hd, seg.count * hd)
            }

            // MLP block: x = x + down(silu(gate(rmsnorm(x))) · up(rmsnorm(x))).
            for (i, row) in s.active[0..<fullCount] {
                let seg = segments[i]
                ck_rmsnorm(seg.hidden, w.postAttentionNorm.data, w.postAttentionNorm.dtype.kernelType, c.rmsNormEps, Int32(hd),
                           Int32(seg.count), s.normed.pointer + row * hd)
            }
            product(w.gate, \.gate, upTo: fullCount, s.normed.pointer, ldx: hd, s.gate.pointer, ldy: c.intermediateSize)
            product(w.up, \.up, upTo: fullCount, s.normed.pointer, ldx: hd, s.up.pointer, ldy: c.intermediateSize)
            ck_silu_mul(s.gate.pointer, s.up.pointer, fullRows * c.intermediateSize)
            product(w.down, \.down, upTo: fullCount, s.gate.pointer, ldx: c.intermediateSize, s.normed.pointer, ldy: hd)
            for (i, row) in s.active[0..<fullCount] {
                let seg = segments[i]
                ck_add(seg.hidden, s.normed.pointer + row * hd, seg.count * hd)
            }
        }
        for (i, _) in s.active {
            let seg = segments[i]
            seg.cache!.setLength(seg.firstPosition + seg.count, layer: l)
        }
    }

    /// The exit head (final RMSNorm + LM head) on every head row, into the logits rows the plan
    /// assigned (head rows in segment order, so consecutive segments' rows are consecutive).
    /// Segments of one head copy (format and vocabulary) are packed into one product by the rule of
    /// `run`; a pruned copy's K logits land in the first K entries of each row, then spread out.
    private func runHead(_ segments: [RowSegment], _ s: PassScratch, _ logits: Logits, uniformMax: Int) {
        let hd = config.hiddenSize
        let V = config.vocabSize
        for seg in segments where !seg.headRows.isEmpty {
            ck_rmsnorm(seg.hidden + seg.headRows.lowerBound * hd, weights.finalNorm.data, weights.finalNorm.dtype.kernelType,
                       config.rmsNormEps, Int32(hd), Int32(seg.headRows.count), s.normed.pointer + seg.firstLogitsRow * hd)
        }
        var heads = ByFormat<QuantizedMatrix>()
        for seg in segments where !seg.headRows.isEmpty && seg.headVocabulary == nil {
            let f = weightsRead(by: seg.headPrecision)
            if f != .stored, heads[f] == nil { heads[f] = quantizedHead(f) }
        }
        var a = 0
        while a < segments.count {
            let first = segments[a]
            let n0 = first.headRows.count
            guard n0 > 0 else { a += 1; continue }
            var b = a + 1, n = n0
            if n0 <= uniformMax {
                while b < segments.count {
                    let next = segments[b]
                    if next.headRows.isEmpty { b += 1; continue }
                    guard next.headRows.count <= uniformMax, weightsRead(by: next.headPrecision) == weightsRead(by: first.headPrecision),
                          next.headVocabulary === first.headVocabulary, n + next.headRows.count <= uniformMax else { break }
                    n += next.headRows.count
                    b += 1
                }
            }
            let row = first.firstLogitsRow
            let x = s.normed.pointer + row * hd
            let y = logits.values.pointer + row * V
            if let vocabulary = first.headVocabulary {
                prunedHead(vocabulary, weightsRead(by: first.headPrecision)).multiply(x, ldx: hd, n: n, into: y, ldy: V)
                for r in 0..<n { vocabulary.scatter(y + r * V, vocabularySize: V) }
            } else if let q = heads[weightsRead(by: first.headPrecision)] {
                q.multiply(x, ldx: hd, n: n, into: y, ldy: V)
            } else {
                let m = weights.lmHead
                ck_matmul(m.dtype.kernelType, m.data, Int32(m.rows), Int32(m.cols), x, Int32(hd), Int32(n), y, Int32(V))
            }
            a = b
        }
    }
}

/// The quantised copies a layer's or the head's products read, one per quantised format, in
/// fields rather than a dictionary: a pass allocates nothing.
struct ByFormat<T> {
    private var int8: T?
    private var q4: T?
    subscript(format: WeightFormat) -> T? {
        get { format == .int8 ? int8 : format == .q4 ? q4 : nil }
        set {
            switch format {
            case .int8: int8 = newValue
            case .q4: q4 = newValue
            case .stored: precondition(newValue == nil, "the stored weights have no quantised copy")
            }
        }
    }
}
