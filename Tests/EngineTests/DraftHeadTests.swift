import TestFixtures
import Engine
import Foundation
import CKernels
import XCTest

/// The int8 LM-head copy: close to the exact head (per-row max error bounded by the quantisation
/// step times the activations' L1 norm) and usually with the same argmax.
final class DraftHeadTests: XCTestCase {
    func testInt8HeadApproximatesTheExactHead() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let expected = try Fixtures.expected(name)
            var sameArgmax = 0
            for prompt in expected.prompts {
                let n = prompt.ids.count
                let h = model.makeActivations(capacity: n)
                let cache = model.makeCache(capacity: n)
                model.embed(prompt.ids, into: h)
                model.forward(h, layers: 0..<model.layerCount, positions: 0..<n, cache: cache)
                let exact = model.makeLogits(), approx = model.makeLogits()
                model.exitLogits(h, rows: (n - 1)..<n, into: exact)
                model.exitLogits(h, rows: (n - 1)..<n, into: approx, head: .int8)
                let e = Array(exact.row(0)), a = Array(approx.row(0))
                let spread = (e.max()! - e.min()!)
                let worst = zip(e, a).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(worst, 0.02 * spread, "\(name): int8 head error \(worst) vs logit spread \(spread)")
                if e.firstIndex(of: e.max()!) == a.firstIndex(of: a.max()!) { sameArgmax += 1 }
            }
            XCTAssertGreaterThanOrEqual(sameArgmax, expected.prompts.count - 1, name)
            XCTAssertEqual(model.quantizedHead(.int8).byteCount, model.config.vocabSize * (model.config.hiddenSize + 4))
        }
    }
}

/// The int8 matrix kernel. Quantisation: each row's scale is its largest magnitude / 127 and every
/// weight dequantises to within half a step. The product is checked twice: tightly against a
/// Double sum that re-derives the int16 activation blocks from ck_q8.h's description (catches any
/// indexing, block or scale mistake), and loosely against the unquantised activations, within the
/// error that block quantisation of x allows (Σ_k |ŵ_k| · d_x/2 per block). Shapes exercise every
/// path: a partial last block (cols not a multiple of 32), fewer rows than threads, several
/// activation rows, the vector and the scalar kernels, on one thread and on the pool.
final class Int8KernelTests: XCTestCase {
    func testInt8ProductMatchesTheDequantisedReference() {
        var rng = SplitMix64(seed: 7)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        let xBlock = Int(CK_Q8_XBLOCK)
        for (rows, cols, n) in [(37, 77, 1), (64, 2048, 1), (13, 33, 5), (256, 320, 3), (9, 16, 8), (1, 200, 2), (24, 8192, 2)] {
            let w = (0..<(rows * cols)).map { _ in uniform() }
            let x = (0..<(n * cols)).map { _ in uniform() * 3 }
            var q = [Int8](repeating: 0, count: rows * cols)
            var scales = [Float](repeating: 0, count: rows)
            ck_q8_quantize_rows(CK_F32, w, Int32(cols), &q, &scales, 0, Int32(rows))
            for r in 0..<rows {
                let maxAbs = w[(r * cols)..<((r + 1) * cols)].map(abs).max()!
                XCTAssertEqual(scales[r], maxAbs / 127, accuracy: 1e-7)
                for k in 0..<cols {
                    // Rounding to the nearest step: the dequantised weight is within half a step.
                    XCTAssertLessThanOrEqual(abs(Float(q[r * cols + k]) * scales[r] - w[r * cols + k]), scales[r] * 0.5001)
                }
            }
            // The activation blocks as the header describes them.
            let blocks = (cols + xBlock - 1) / xBlock
            var xq = [Double](repeating: 0, count: n * cols), xd = [Double](repeating: 0, count: n * blocks)
            for t in 0..<n {
                for b in 0..<blocks {
                    let k0 = b * xBlock, k1 = min(cols, k0 + xBlock)
                    let m = x[(t * cols + k0)..<(t * cols + k1)].map(abs).max()!
                    xd[t * blocks + b] = Double(m / 32767)
                    for k in k0..<k1 { xq[t * cols + k] = Double((x[t * cols + k] * (32767 / m)).rounded(.toNearestOrEven)) }
                }
            }
            for scalar in [false, true] {
                for threads in [1, 2] {
                    ck_force_scalar(scalar ? 1 : 0)
                    ck_set_threads(Int32(threads))
                    var y = [Float](repeating: .nan, count: n * rows)
                    ck_matmul_q8(q, scales, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                    for t in 0..<n {
                        for r in 0..<rows {
                            var tight = 0.0, loose = 0.0, bound = 0.0, magnitude = 0.0
                            let scale = Double(scales[r])
                            for b in 0..<blocks {
                                var dot = 0.0, absW = 0.0
                                for k in (b * xBlock)..<min(cols, (b + 1) * xBlock) {
                                    let wv = Double(q[r * cols + k]) * scale
                                    dot += wv * xq[t * cols + k]
                                    loose += wv * Double(x[t * cols + k])
                                    absW += abs(wv)
                                }
                                tight += dot * xd[t * blocks + b]
                                bound += absW * xd[t * blocks + b] / 2
                                magnitude += absW * xd[t * blocks + b] * 32767
                            }
                            let got = Double(y[t * rows + r])
                            let label = "\(rows)x\(cols), n \(n), row \(t), output \(r), scalar \(scalar), threads \(threads)"
                            XCTAssertEqual(got, tight, accuracy: 1e-5 * max(1, magnitude), label)
                            XCTAssertLessThanOrEqual(abs(got - loose), bound * 1.001 + 1e-5 * max(1, magnitude), label)
                        }
                    }
                }
            }
            ck_force_scalar(0)
            ck_set_threads(0)
        }
    }

    /// Past ck_matmul_row_independent_max() rows (prefill) the vector kernels widen the int8 rows to
    /// f32 (q · scale, rounded once) and run the f32 GEMM: checked against a Double sum of exactly
    /// those products with the unquantised activations, for shapes with k tails, row counts that are
    /// no multiple of the GEMM's tiles, several token groups, on one and two threads; and row t of an
    /// n-row call does not depend on the other rows. (Mutation check while writing it: widening
    /// without the scale fails every case.)
    func testInt8PrefillProductIsTheWidenedGEMM() {
        var rng = SplitMix64(seed: 9)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        let nMin = Int(ck_matmul_row_independent_max()) + 1
        guard ck_simd_level() > 0, nMin < 1000 else { return }
        for (rows, cols, n) in [(50, 300, nMin), (130, 77, 64), (24, 2048, 70)] {
            let w = (0..<(rows * cols)).map { _ in uniform() }
            var x = (0..<(n * cols)).map { _ in uniform() * 3 }
            var q = [Int8](repeating: 0, count: rows * cols)
            var scales = [Float](repeating: 0, count: rows)
            ck_q8_quantize_rows(CK_F32, w, Int32(cols), &q, &scales, 0, Int32(rows))
            var first: [Float] = []
            for threads in [1, 2] {
                ck_set_threads(Int32(threads))
                var y = [Float](repeating: .nan, count: n * rows)
                ck_matmul_q8(q, scales, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                for t in 0..<n {
                    for r in 0..<rows {
                        var sum = 0.0, magnitude = 0.0
                        for k in 0..<cols {
                            let wv = Double(Float(q[r * cols + k]) * scales[r])
                            sum += wv * Double(x[t * cols + k])
                            magnitude += abs(wv * Double(x[t * cols + k]))
                        }
                        XCTAssertEqual(Double(y[t * rows + r]), sum, accuracy: 1e-5 * max(1, magnitude),
                                       "\(rows)x\(cols), n \(n), row \(t), output \(r), threads \(threads)")
                    }
                }
                if first.isEmpty { first = y } else { XCTAssertEqual(y, first, "the thread count changes nothing") }
            }
            // Other rows of x changed: row 0's outputs stay bit-identical.
            for k in cols..<(n * cols) { x[k] = -x[k] }
            var y2 = [Float](repeating: .nan, count: n * rows)
            ck_matmul_q8(q, scales, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y2, Int32(rows))
            XCTAssertEqual(Array(y2[0..<rows]), Array(first[0..<rows]))
            ck_set_threads(0)
        }
    }
}
