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
        let avx512 = ck_simd_level() == 2
        for (rows, cols, n) in [(37, 77, 1), (64, 2048, 1), (13, 33, 5), (256, 320, 3), (9, 16, 8), (1, 200, 2), (24, 8192, 2),
                                (11, 1000, 7), (5, 4096, 13),
                                // Walked in chunks of k (q8.c): groups of 8 rows and a remainder, a
                                // partial last block after the chunks, tiles of 4 and 3 rows.
                                (19, 8192 + 100, 4), (10, 5000, 3)] {
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
            // Every kernel set the CPU has (AVX-512 and AVX2 where it has both, and scalar).
            for (scalar, avx2) in [(false, false), (false, true), (true, false)] where !avx2 || avx512 {
                for threads in [1, 2] {
                    ck_force_scalar(scalar ? 1 : 0)
                    ck_force_avx2(avx2 ? 1 : 0)
                    ck_set_threads(Int32(threads))
                    var y = [Float](repeating: .nan, count: n * rows)
                    ck_matmul_q8(q, scales, Int32(rows), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(rows))
                    // Row t of an n-row call is a one-row call on row t, bit for bit (drafts of a batch).
                    for t in 0..<n {
                        var y1 = [Float](repeating: .nan, count: rows)
                        x.withUnsafeBufferPointer { xb in
                            ck_matmul_q8(q, scales, Int32(rows), Int32(cols), xb.baseAddress! + t * cols, Int32(cols), 1, &y1, Int32(rows))
                        }
                        XCTAssert((0..<rows).allSatisfy { y1[$0].bitPattern == y[t * rows + $0].bitPattern },
                                  "\(rows)x\(cols), n \(n), row \(t), \(String(cString: ck_simd_name())): differs from a one-row call")
                    }
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
                            let label = "\(rows)x\(cols), n \(n), row \(t), output \(r), \(String(cString: ck_simd_name())), threads \(threads)"
                            XCTAssertEqual(got, tight, accuracy: 1e-5 * max(1, magnitude), label)
                            XCTAssertLessThanOrEqual(abs(got - loose), bound * 1.001 + 1e-5 * max(1, magnitude), label)
                        }
                    }
                }
            }
            ck_force_scalar(0)
            ck_force_avx2(0)
            ck_set_threads(0)
        }
    }

    /// Past ck_matmul_row_independent_max() rows (prefill) the vector kernels widen the int8 rows to
    /// f32 (q · scale, rounded once) and run the f32 GEMM: checked against a Double sum of exactly
    /// those products with the unquantised activations, for shapes with k tails, row counts that are
    /// no multiple of the GEMM's tiles, several token groups, on one and two threads; and row t of an
    /// n-row call does not depend on the other rows. (Mutation check while writing it: widening
    /// without the scale fails every case.)
    /// The activation quantisation itself, bit for bit: the vector kernels quantise whole blocks
    /// with vector code, the scalar kernel element by element. Through an identity matrix (every
    /// row one weight of 127, scale 1/127) each output is 127 · xq[k] · d_x rounded once, then
    /// scaled, on every kernel set alike, so any difference in xq or d_x shows. Each block's largest
    /// magnitude is 32767 (d_x = 1, xq = x rounded), so the half-integers test the rounding rule
    /// (to nearest even: 2.5 → 2, −3.5 → −4), and one partial block takes the scalar path.
    func testInt8ActivationQuantisationIsTheSameOnEveryKernelSet() {
        let xBlock = Int(CK_Q8_XBLOCK), cols = 2 * xBlock + 40, n = 3
        var rng = SplitMix64(seed: 11)
        var x = [Float](repeating: 0, count: n * cols)
        for t in 0..<n {
            for k in 0..<cols {
                let r = rng.next()
                x[t * cols + k] = r % 3 == 0 ? Float(Int(r >> 8 % 60_000) - 30_000) + 0.5 : Float(Int(r >> 8 % 2_000_001) - 1_000_000) / 61
            }
            for b in stride(from: 0, to: cols, by: xBlock) { x[t * cols + b + (t + b / xBlock) % 7] = (t + b) % 2 == 0 ? 32767 : -32767 }
        }
        var q = [Int8](repeating: 0, count: cols * cols)
        for k in 0..<cols { q[k * cols + k] = 127 }
        let scales = [Float](repeating: 1.0 / 127, count: cols)
        func product(scalar: Bool, avx2: Bool) -> [Float] {
            ck_force_scalar(scalar ? 1 : 0)
            ck_force_avx2(avx2 ? 1 : 0)
            defer { ck_force_scalar(0); ck_force_avx2(0) }
            var y = [Float](repeating: .nan, count: n * cols)
            ck_matmul_q8(q, scales, Int32(cols), Int32(cols), x, Int32(cols), Int32(n), &y, Int32(cols))
            return y
        }
        let scalar = product(scalar: true, avx2: false)
        for k in 0..<cols where x[k] == x[k].rounded(.down) + 0.5 && abs(x[k]) < 32767 {
            XCTAssertEqual(scalar[k], (x[k].rounded(.toNearestOrEven) * 127 * scales[k]), "element \(k): \(x[k])")
        }
        for (name, avx2) in [("the machine's", false), ("AVX2", true)] {
            let vector = product(scalar: false, avx2: avx2)
            for i in 0..<(n * cols) where vector[i].bitPattern != scalar[i].bitPattern {
                XCTFail("\(name) kernels, row \(i / cols), element \(i % cols) (x = \(x[i])): \(vector[i]) against \(scalar[i]) on the scalar kernel")
                break
            }
        }
    }

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

/// A pruned draft head (`DraftVocabulary`): its logits for its K tokens are the full head's
/// logits for those tokens, bit for bit, in every head format, and −infinity for every other
/// token. Bit for bit because each kernel's output row is one weight row's dot products with x, in
/// an order that depends on neither the row's index nor the matrix's row count (ckernels.h: n ≤
/// ck_matmul_row_independent_max(); ck_q8.h, ck_q4.h likewise), and the pruned copy's rows are the
/// full copy's rows (the same stored rows, quantised by the same per-row rule).
final class PrunedHeadTests: XCTestCase {
    /// Rows leaving layer E−1 of every prompt position, as a draft's head sees them.
    func draftStates(_ model: LlamaModel, _ ids: [Int], exit: Int) -> Activations {
        let h = model.makeActivations(capacity: ids.count)
        let cache = model.makeCache(capacity: ids.count)
        model.embed(ids, into: h)
        model.forward(h, layers: 0..<exit, positions: 0..<ids.count, cache: cache)
        return h
    }

    /// Stored weights, int8 quantised at load, and a q4 folder as `layerskip quantize` writes it
    /// (whose pruned copies are its own head's rows, or those requantised).
    func testPrunedLogitsAreTheFullHeadsForItsTokensAndMinusInfinityElsewhere() throws {
        var rng = SplitMix64(seed: 3)
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-pruned-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: temp) }
        for name in Fixtures.models {
            let folder = temp.appendingPathComponent(name)
            try LlamaModel(directory: Fixtures.directory(name), format: .q4).writeQuantizedFolder(to: folder)
            for format in ["stored", "int8", "q4 folder"] {
                let model = format == "q4 folder" ? try LlamaModel(directory: folder)
                    : try LlamaModel(directory: Fixtures.directory(name), format: WeightFormat(rawValue: format)!)
                let V = model.config.vocabSize
                let ids = Array(try Fixtures.expected(name).prompts[0].ids.prefix(3))
                let n = ids.count
                // A random subset, the first and the last id alone, a set with a gap at each end, every id.
                let random = (0..<V).filter { _ in rng.next() % 5 == 0 }
                for tokens in [random, [0], [V - 1], Array(1..<(V - 1)), Array(0..<V)] {
                    let vocabulary = model.draftVocabulary(tokens)
                    let inSet = Set(tokens)
                    for precision in WeightPrecision.allCases {
                        let h = draftStates(model, ids, exit: 2)
                        let full = model.makeLogits(capacity: n), pruned = model.makeLogits(capacity: n)
                        model.exitLogits(h, rows: 0..<n, into: full, head: precision)
                        model.exitLogits(h, rows: 0..<n, into: pruned, head: precision, vocabulary: vocabulary)
                        for r in 0..<n {
                            let f = full.row(r), p = pruned.row(r)
                            var mismatches = 0, leaks = 0
                            for t in 0..<V {
                                if inSet.contains(t) {
                                    if p[t].bitPattern != f[t].bitPattern { mismatches += 1 }
                                } else if p[t] != -.infinity {
                                    leaks += 1
                                }
                            }
                            let label = "\(name) \(format) head \(precision), K \(tokens.count), row \(r)"
                            XCTAssertEqual(mismatches, 0, "\(label): logits that differ from the full head's")
                            XCTAssertEqual(leaks, 0, "\(label): tokens outside the set that are not −infinity")
                            XCTAssertTrue(f.allSatisfy(\.isFinite), label)
                        }
                    }
                }
            }
        }
    }

    /// One object per token set (so jobs share its copies), and each copy costs its K rows only.
    func testVocabulariesAreSharedAndCopiesCostTheirRows() throws {
        let name = "tiny-spm-mha-bf16-sharded"
        let model = try LlamaModel(directory: Fixtures.directory(name))
        let c = model.config
        let tokens = [2, 5, 40, 41, 599]
        let a = model.draftVocabulary(tokens), b = model.draftVocabulary(tokens)
        XCTAssertTrue(a === b)
        XCTAssertFalse(a === model.draftVocabulary([2, 5, 40, 41]))
        let before = model.derivedByteCount
        let h = draftStates(model, Array(try Fixtures.expected(name).prompts[0].ids.prefix(1)), exit: 1)
        let logits = model.makeLogits()
        model.exitLogits(h, rows: 0..<1, into: logits, vocabulary: a)
        // bf16 rows: 2 bytes a weight.
        XCTAssertEqual(model.derivedByteCount - before, tokens.count * c.hiddenSize * 2)
        model.exitLogits(h, rows: 0..<1, into: logits, head: .int8, vocabulary: a)
        XCTAssertEqual(model.derivedByteCount - before, tokens.count * c.hiddenSize * 2 + tokens.count * (c.hiddenSize + 4))
        model.exitLogits(h, rows: 0..<1, into: logits, head: .int8, vocabulary: b)
        XCTAssertEqual(model.derivedByteCount - before, tokens.count * c.hiddenSize * 2 + tokens.count * (c.hiddenSize + 4), "made once")
    }

    /// The ranking's choice of K tokens: the end-of-sequence ids always, counted in K, the best-ranked
    /// others after them, ids the ranking leaves out by id; and a bad explicit ranking names its entry.
    func testTopKOfARanking() throws {
        let ranking = try TokenRanking([7, 3, 9, 1], vocabularySize: 10)
        XCTAssertEqual(ranking.top(3, always: [5]), [3, 5, 7])
        XCTAssertEqual(ranking.top(2, always: [3]), [3, 7], "an end-of-sequence id already ranked is not counted twice")
        XCTAssertEqual(ranking.top(6, always: []), [0, 1, 2, 3, 7, 9], "unranked ids follow, by id")
        XCTAssertEqual(ranking.top(1, always: [4, 8]), [4, 7, 8], "one token beyond the end-of-sequence ids whatever K")
        XCTAssertEqual(ranking.top(10, always: [4]), Array(0..<10))
        XCTAssertThrowsError(try TokenRanking([1, 2, 1], vocabularySize: 10)) { error in
            XCTAssertEqual("\(error)", "ranking[2]: token id 1 listed twice")
        }
        XCTAssertThrowsError(try TokenRanking([1, 10], vocabularySize: 10)) { error in
            XCTAssertEqual("\(error)", "ranking[1]: token id 10 outside the vocabulary (expected 0..<10)")
        }
    }
}
