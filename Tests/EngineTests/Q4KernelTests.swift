import CKernels
import Engine
import Foundation
import XCTest

/// The 4-bit kernels against ck_q4.h's description, re-derived here in Swift: the quantiser's
/// nibbles (in the two-blocks-per-group byte layout) and scales exactly (candidate scales,
/// least-squares refit, tie rule), its error bound, and the product tightly against a Double sum
/// over the dequantised blocks and the int8 activation blocks, for every row count the engine's calls form (1...16), shapes with a partial
/// last block, fewer rows than threads, scalar and vector kernels, one and two threads. Mutation
/// checks while writing it: storing d1 unconditionally (no refit) fails the nibble comparison;
/// a wrong "- 8" correction term (xc built from one xq twice) fails the product cases.
final class Q4KernelTests: XCTestCase {
    /// h() of the header: nearest-even f16 (saturated) and back.
    private func half(_ v: Float) -> Float { Float(Float16(min(65504, max(-65504, v)))) }
    private func level(_ x: Float, _ d: Float) -> Float {
        let t = (x / d).rounded(.toNearestOrEven) + 8
        return t >= 0 ? min(t, 15) : 0
    }
    /// A block's sum in the header's lane order.
    private func sum(_ t: [Float]) -> Float {
        var s = [Float](repeating: 0, count: 8)
        for j in 0..<8 {
            let a: Float = t[j] + t[j + 8]
            let b: Float = a + t[j + 16]
            s[j] = b + t[j + 24]
        }
        let lo: Float = (s[0] + s[4]) + (s[2] + s[6])
        let hi: Float = (s[1] + s[5]) + (s[3] + s[7])
        return lo + hi
    }
    private func error(_ x: ArraySlice<Float>, _ d: Float) -> Float {
        sum(x.map { v in let r = v - d * (level(v, d) - 8); return r * r })
    }

    /// The block rule of ck_q4.h: (scale, the 32 levels).
    private func referenceBlock(_ x: ArraySlice<Float>) -> (Float, [Float]) {
        var m: Float = 0
        for v in x where abs(v) > abs(m) { m = v }
        let d1 = half(m / -8)
        guard d1 != 0, d1.isFinite else { return (0, [Float](repeating: 8, count: 32)) }
        var best = d1
        let sxq = sum(x.map { $0 * (level($0, d1) - 8) }), sqq = sum(x.map { (level($0, d1) - 8) * (level($0, d1) - 8) })
        if sqq > 0 {
            let d2 = half(sxq / sqq)
            if d2 != 0, d2.isFinite, error(x, d2) < error(x, d1) { best = d2 }
        }
        return (best, x.map { level($0, best) })
    }

    private struct Quantized {
        let rows: Int, cols: Int, blocks: Int
        var q: [UInt8]
        var d: [UInt16]
        var rowBytes: Int { (cols + 63) / 64 * 32 }
        /// Byte k % 32 of group k / 64; the low nibble for an even block, the high one for an odd.
        func nibble(_ r: Int, _ k: Int) -> UInt8 {
            let byte = q[r * rowBytes + (k / 64) * 32 + k % 32]
            return (k / 32) % 2 == 0 ? byte & 15 : byte >> 4
        }
        func weight(_ r: Int, _ k: Int) -> Double {
            Double(Float(Float16(bitPattern: d[r * blocks + k / 32]))) * (Double(nibble(r, k)) - 8)
        }
    }

    private func quantize(_ w: [Float], rows: Int, cols: Int, scalar: Bool = false) -> Quantized {
        let blocks = (cols + 31) / 32
        var m = Quantized(rows: rows, cols: cols, blocks: blocks, q: [UInt8](repeating: 0, count: rows * (cols + 63) / 64 * 32),
                          d: [UInt16](repeating: 0, count: rows * blocks))
        ck_force_scalar(scalar ? 1 : 0)
        ck_q4_quantize_rows(CK_F32, w, Int32(cols), &m.q, &m.d, 0, Int32(rows))
        ck_force_scalar(0)
        return m
    }

    func testQuantisationIsTheHeadersRuleAndWithinItsBound() {
        var rng = SplitMix64(seed: 21)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        var refitted = 0, blocksSeen = 0
        for (rows, cols) in [(7, 77), (3, 2048), (5, 33), (2, 16), (3, 100)] {
            // Some rows with outliers (where the refit matters), one all-zero row.
            var w = (0..<(rows * cols)).map { _ in uniform() * 0.05 }
            for r in 0..<rows where r % 2 == 1 { w[r * cols + r % cols] = 0.9 }
            for k in 0..<cols { w[(rows - 1) * cols + k] = 0 }
            let m = quantize(w, rows: rows, cols: cols)
            let scalar = quantize(w, rows: rows, cols: cols, scalar: true)
            XCTAssertEqual(scalar.q, m.q, "the scalar and vector quantisers write the same nibbles")
            XCTAssertEqual(scalar.d, m.d, "and the same scales")
            var dequantised = [Float](repeating: .nan, count: rows * cols)
            ck_q4_dequantize_rows(m.q, m.d, Int32(cols), &dequantised, 0, Int32(rows))
            for r in 0..<rows {
                for k in 0..<cols { XCTAssertEqual(Double(dequantised[r * cols + k]), m.weight(r, k), "dequantised \(r), \(k)") }
            }
            for r in 0..<rows {
                for b in 0..<m.blocks {
                    var x = [Float](repeating: 0, count: 32)
                    for j in 0..<32 where b * 32 + j < cols { x[j] = w[r * cols + b * 32 + j] }
                    let (d, levels) = referenceBlock(x[...])
                    let label = "\(rows)x\(cols) row \(r) block \(b)"
                    XCTAssertEqual(Float(Float16(bitPattern: m.d[r * m.blocks + b])), d, label)
                    for j in 0..<32 {
                        XCTAssertEqual(Float(m.nibble(r, b * 32 + j)), levels[j], "\(label) element \(j)")
                    }
                    // Never worse than Q4_0's d1, and every element within one step of d1.
                    var mx: Float = 0
                    for v in x where abs(v) > abs(mx) { mx = v }
                    let d1 = half(mx / -8)
                    XCTAssertLessThanOrEqual(error(x[...], d), d1 == 0 ? 0 : error(x[...], d1), label)
                    XCTAssertLessThanOrEqual(error(x[...], d), 32 * d1 * d1 * 1.0001, label)
                    blocksSeen += 1
                    if d != d1 { refitted += 1 }
                }
            }
        }
        XCTAssertGreaterThan(refitted, blocksSeen / 10, "the least-squares candidate is taken for a share of the blocks")
    }

    func testQ4ProductMatchesTheDequantisedReference() {
        var rng = SplitMix64(seed: 23)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        let maxRows = Int(ck_matmul_row_independent_max())
        for (rows, cols, ns) in [(37, 77, Array(1...16)), (64, 2048, [1, 3, 8]), (13, 33, [5]), (1, 200, [2]), (24, 8192, [1, 2]), (9, 480, [1, 4]), (5, 600, [2])] {
            let w = (0..<(rows * cols)).map { _ in uniform() }
            let m = quantize(w, rows: rows, cols: cols)
            for n in ns where n <= maxRows {
                let x = (0..<(n * cols)).map { _ in uniform() * 3 }
                // The int8 activation blocks as ck_q4.h describes them (zero past cols).
                var xq = [Double](repeating: 0, count: n * m.blocks * 32), xd = [Double](repeating: 0, count: n * m.blocks)
                for t in 0..<n {
                    for b in 0..<m.blocks {
                        let k0 = b * 32, k1 = min(cols, k0 + 32)
                        let mx = x[(t * cols + k0)..<(t * cols + k1)].map(abs).max()!
                        xd[t * m.blocks + b] = Double(mx / 127)
                        for k in k0..<k1 { xq[t * m.blocks * 32 + k] = Double((x[t * cols + k] * (127 / mx)).rounded(.toNearestOrEven)) }
                    }
                }
                var single: [Float] = []
                for scalar in [false, true] {
                    for threads in [1, 2] {
                        ck_force_scalar(scalar ? 1 : 0)
                        ck_set_threads(Int32(threads))
                        var y = [Float](repeating: .nan, count: n * rows)
                        ck_matmul_q4(m.q, m.d, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                        for t in 0..<n {
                            for r in 0..<rows {
                                var tight = 0.0, magnitude = 0.0
                                for b in 0..<m.blocks {
                                    var dot = 0.0
                                    for k in (b * 32)..<min(cols, (b + 1) * 32) {
                                        dot += m.weight(r, k) * xq[t * m.blocks * 32 + k]
                                        magnitude += abs(m.weight(r, k) * Double(x[t * cols + k]))
                                    }
                                    tight += dot * xd[t * m.blocks + b]
                                }
                                XCTAssertEqual(Double(y[t * rows + r]), tight, accuracy: 1e-5 * max(1, magnitude),
                                               "\(rows)x\(cols), n \(n), row \(t), output \(r), scalar \(scalar), threads \(threads)")
                            }
                        }
                        // Row-independence: each row equals a one-row call on it, bit for bit.
                        if !scalar, threads == 2 {
                            for t in 0..<n {
                                var y1 = [Float](repeating: .nan, count: rows)
                                Array(x[(t * cols)..<((t + 1) * cols)]).withUnsafeBufferPointer { xt in
                                    ck_matmul_q4(m.q, m.d, Int32(rows), Int32(cols), xt.baseAddress, Int32(cols), 1, &y1, Int32(rows))
                                }
                                XCTAssertEqual(Array(y[(t * rows)..<((t + 1) * rows)]), y1, "\(rows)x\(cols): row \(t) of \(n) vs alone")
                            }
                            single = y
                        }
                    }
                }
                XCTAssertFalse(single.isEmpty)
                ck_force_scalar(0)
                ck_set_threads(0)
            }
        }
    }

    /// Past ck_matmul_row_independent_max() rows (prefill) the vector kernels dequantise the blocks
    /// to f32 (exact) and run the f32 GEMM: checked against a Double sum of exactly those weights
    /// with the unquantised activations, for k tails, row counts that are no multiple of the GEMM's
    /// tiles, several token groups, on one and two threads; and other rows of x change nothing in
    /// row 0's outputs.
    func testQ4PrefillProductIsTheDequantisedGEMM() {
        var rng = SplitMix64(seed: 29)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        let nMin = Int(ck_matmul_row_independent_max()) + 1
        guard ck_simd_level() > 0, nMin < 1000 else { return }
        for (rows, cols, n) in [(50, 300, nMin), (130, 77, 64), (24, 2048, 70), (7, 520, 45)] {
            let w = (0..<(rows * cols)).map { _ in uniform() }
            let m = quantize(w, rows: rows, cols: cols)
            var x = (0..<(n * cols)).map { _ in uniform() * 3 }
            var first: [Float] = []
            for threads in [1, 2] {
                ck_set_threads(Int32(threads))
                var y = [Float](repeating: .nan, count: n * rows)
                ck_matmul_q4(m.q, m.d, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                for t in 0..<n {
                    for r in 0..<rows {
                        var sum = 0.0, magnitude = 0.0
                        for k in 0..<cols {
                            sum += m.weight(r, k) * Double(x[t * cols + k])
                            magnitude += abs(m.weight(r, k) * Double(x[t * cols + k]))
                        }
                        XCTAssertEqual(Double(y[t * rows + r]), sum, accuracy: 1e-5 * max(1, magnitude),
                                       "\(rows)x\(cols), n \(n), row \(t), output \(r), threads \(threads)")
                    }
                }
                if first.isEmpty { first = y } else { XCTAssertEqual(y, first, "the thread count changes nothing") }
            }
            for k in cols..<(n * cols) { x[k] = -x[k] }
            var y2 = [Float](repeating: .nan, count: n * rows)
            ck_matmul_q4(m.q, m.d, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y2, Int32(rows))
            XCTAssertEqual(Array(y2[0..<rows]), Array(first[0..<rows]))
            ck_set_threads(0)
        }
    }
}
