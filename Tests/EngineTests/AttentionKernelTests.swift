import CKernels
import XCTest

/// `ck_attention_rows` against a double-precision two-pass softmax written here, and the
/// properties self-speculation relies on: a row's output is bit-identical whatever other rows share
/// the call and whatever the thread count.
final class AttentionKernelTests: XCTestCase {
    typealias Rng = KernelTests.Rng

    /// Keys, values and queries of a grouped-query layer with `len` cached positions.
    struct Layer {
        let heads: Int, kvHeads: Int, headDim: Int, len: Int
        var K: [Float], V: [Float], q: [Float]
        var kvStride: Int { kvHeads * headDim }

        init(heads: Int, kvHeads: Int, headDim: Int, len: Int, rows: Int, seed: UInt64, spread: Float = 3) {
            self.heads = heads; self.kvHeads = kvHeads; self.headDim = headDim; self.len = len
            var rng = Rng(seed)
            K = (0..<(len * kvHeads * headDim)).map { _ in rng.unit() * spread }
            V = (0..<(len * kvHeads * headDim)).map { _ in rng.unit() }
            q = (0..<(rows * heads * headDim)).map { _ in rng.unit() * spread }
        }

        /// Softmax attention of query row r attending positions 0..<attended, in f64.
        func reference(row r: Int, attended: Int) -> [Double] {
            var out = [Double](repeating: 0, count: heads * headDim)
            let group = heads / kvHeads
            for h in 0..<heads {
                let g = h / group
                let qh = (0..<headDim).map { Double(q[(r * heads + h) * headDim + $0]) }
                let scores = (0..<attended).map { t in
                    (0..<headDim).reduce(0.0) { $0 + qh[$1] * Double(K[t * kvStride + g * headDim + $1]) } / Double(headDim).squareRoot()
                }
                let m = scores.max()!
                let e = scores.map { Foundation.exp($0 - m) }
                let sum = e.reduce(0, +)
                for t in 0..<attended {
                    for i in 0..<headDim { out[h * headDim + i] += e[t] / sum * Double(V[t * kvStride + g * headDim + i]) }
                }
            }
            return out
        }

        /// Runs `ck_attention_rows` on query rows `rows`, row j attending `lens[j]` positions.
        func run(rows: [Int], lens: [Int]) -> [[Float]] {
            var out = [Float](repeating: .nan, count: rows.count * heads * headDim)
            K.withUnsafeBufferPointer { k in
                V.withUnsafeBufferPointer { v in
                    q.withUnsafeBufferPointer { qp in
                        out.withUnsafeMutableBufferPointer { o in
                            let entries = rows.indices.map { j in
                                ck_attention_row(q: qp.baseAddress! + rows[j] * heads * headDim, K: k.baseAddress!, V: v.baseAddress!,
                                                 len: Int32(lens[j]), out: o.baseAddress! + j * heads * headDim)
                            }
                            ck_attention_rows(entries, Int32(entries.count), Int32(heads), Int32(kvHeads), Int32(headDim), Int32(kvStride))
                        }
                    }
                }
            }
            return rows.indices.map { Array(out[($0 * heads * headDim)..<(($0 + 1) * heads * headDim)]) }
        }
    }

    private func assertClose(_ got: [Float], _ want: [Double], tolerance: Double, _ what: String) {
        XCTAssertEqual(got.count, want.count)
        var worst = 0.0
        for (g, w) in zip(got, want) { worst = max(worst, abs(Double(g) - w)) }
        XCTAssertLessThan(worst, tolerance, "\(what): largest difference \(worst)")
    }

    /// Lengths on both sides of the 128-position chunk (the online softmax's rescaling), head
    /// dimensions the AVX2 kernels take (multiples of 8, with and without a 32-wide block) and ones
    /// only the scalar kernels take, plain and grouped-query heads, on both kernel sets.
    func testMatchesDoublePrecisionSoftmax() {
        defer { ck_force_scalar(0) }
        let shapes: [(heads: Int, kvHeads: Int, headDim: Int)] = [(5, 1, 64), (4, 2, 8), (2, 2, 40), (3, 1, 6), (8, 8, 128)]
        for scalar in [false, true] {
            ck_force_scalar(scalar ? 1 : 0)
            for (s, shape) in shapes.enumerated() {
                let layer = Layer(heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim, len: 300, rows: 3, seed: UInt64(s + 1))
                let lens = [1, 128, 300]
                let got = layer.run(rows: [0, 1, 2], lens: lens)
                for j in 0..<3 {
                    assertClose(got[j], layer.reference(row: j, attended: lens[j]), tolerance: 2e-5,
                                "scalar \(scalar), shape \(shape), row \(j) over \(lens[j]) positions")
                }
            }
        }
    }

    /// Scores far apart (a sharply peaked softmax whose maximum arrives in a later chunk) stay finite and exact.
    func testLaterChunkMaximumRescalesEarlierOnes() {
        var layer = Layer(heads: 1, kvHeads: 1, headDim: 16, len: 260, rows: 1, seed: 9, spread: 1)
        for i in 0..<16 { layer.K[200 * 16 + i] = 8 * layer.q[i] }
        let got = layer.run(rows: [0], lens: [260])[0]
        assertClose(got, layer.reference(row: 0, attended: 260), tolerance: 1e-5, "peak at position 200")
        XCTAssertTrue(got.allSatisfy(\.isFinite))
    }

    /// A row's output is bit-identical alone, among other rows of the call, and with 1 or 2 threads
    /// (the call is large enough to be split over the pool).
    func testRowsAreIndependentOfTheirCallAndOfTheThreadCount() {
        let saved = ck_get_threads()
        defer { ck_set_threads(saved) }
        let layer = Layer(heads: 5, kvHeads: 1, headDim: 64, len: 700, rows: 6, seed: 4)
        let lens = [700, 650, 3, 699, 128, 129]
        ck_set_threads(1)
        let alone = (0..<6).map { layer.run(rows: [$0], lens: [lens[$0]])[0] }
        for threads: Int32 in [1, 2] {
            ck_set_threads(threads)
            let together = layer.run(rows: Array(0..<6), lens: lens)
            let reversed = layer.run(rows: Array((0..<6).reversed()), lens: Array(lens.reversed()))
            for j in 0..<6 {
                XCTAssertEqual(together[j], alone[j], "row \(j), \(threads) threads, in a call of 6")
                XCTAssertEqual(reversed[5 - j], alone[j], "row \(j), \(threads) threads, in a reversed call")
            }
        }
    }
}
