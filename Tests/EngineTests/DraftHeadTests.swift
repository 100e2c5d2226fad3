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
            XCTAssertEqual(model.int8Head.byteCount, model.config.vocabSize * (model.config.hiddenSize + 4))
        }
    }
}

/// The int8 matrix kernel against a Double-precision sum over the dequantised weights, for shapes
/// that exercise every path: row counts that are not a multiple of the 4-row tile, column counts
/// with a tail after the 16-wide steps, several activation rows (each reusing the tile) and both
/// the vector and the scalar kernels, on one thread and on the pool.
final class Int8KernelTests: XCTestCase {
    func testInt8ProductMatchesTheDequantisedReference() {
        var rng = SplitMix64(seed: 7)
        func uniform() -> Float { Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }
        for (rows, cols, n) in [(37, 77, 1), (64, 2048, 1), (13, 33, 5), (256, 320, 3), (9, 16, 8)] {
            let w = (0..<(rows * cols)).map { _ in uniform() }
            let x = (0..<(n * cols)).map { _ in uniform() }
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
            for scalar in [false, true] {
                for threads in [1, 2] {
                    ck_force_scalar(scalar ? 1 : 0)
                    ck_set_threads(Int32(threads))
                    var y = [Float](repeating: .nan, count: n * rows)
                    ck_matmul_q8(q, scales, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                    for t in 0..<n {
                        for r in 0..<rows {
                            var expected = 0.0
                            for k in 0..<cols { expected += Double(x[t * cols + k]) * Double(q[r * cols + k]) }
                            expected *= Double(scales[r])
                            XCTAssertEqual(Double(y[t * rows + r]), expected, accuracy: 1e-4 * max(1, abs(expected)),
                                           "\(rows)x\(cols), n \(n), row \(t), output \(r), scalar \(scalar), threads \(threads)")
                        }
                    }
                }
            }
            ck_force_scalar(0)
            ck_set_threads(0)
        }
    }
}
