import CKernels
import Foundation
import XCTest

/// Tests of the CKernels matrix kernels and conversions against an independent double-precision
/// reference written here (the 16-bit formats are decoded in Swift, not through the library).
final class KernelTests: XCTestCase {
    // MARK: - helpers

    /// Deterministic generator (xorshift64*), so failures reproduce.
    struct Rng {
        var s: UInt64
        init(_ seed: UInt64) { s = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
        mutating func next() -> UInt64 {
            s ^= s >> 12; s ^= s << 25; s ^= s >> 27
            return s &* 0x2545_F491_4F6C_DD1D
        }
        /// Uniform in [-1, 1).
        mutating func unit() -> Float { Float(Double(next() >> 11) / Double(1 << 53) * 2 - 1) }
        mutating func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(next() % UInt64(hi - lo + 1)) }
    }

    static func f16ToDouble(_ h: UInt16) -> Double {
        let sign: Double = (h & 0x8000) != 0 ? -1 : 1
        let e = Int((h >> 10) & 0x1f), m = Double(h & 0x3ff)
        if e == 0x1f { return m == 0 ? sign * .infinity : .nan }
        if e == 0 { return sign * m * 0x1p-24 }
        return sign * (1 + m / 1024) * pow(2, Double(e - 15))
    }

    static func bf16ToDouble(_ h: UInt16) -> Double { Double(Float(bitPattern: UInt32(h) << 16)) }

    static func elementBytes(_ dt: ck_dtype) -> Int { dt == CK_F32 ? 4 : 2 }

    /// A weight matrix in `dt` together with the exact value of every element.
    struct Weights {
        var raw: [UInt8]
        var values: [Double]
    }

    /// Random weights of magnitude ~[2^-3, 2) (or small integers when `integers`), encoded directly
    /// as bit patterns so that the reference values are exact.
    static func makeWeights(_ dt: ck_dtype, count: Int, rng: inout Rng, integers: Bool) -> Weights {
        var values = [Double](repeating: 0, count: count)
        var raw = [UInt8](repeating: 0, count: count * elementBytes(dt))
        for i in 0..<count {
            let v: Float
            if integers {
                v = Float(rng.int(-8, 8))
            } else {
                v = Float(rng.int(0, 1) == 0 ? -1 : 1) * (1 + abs(rng.unit())) * Float(pow(2.0, Double(rng.int(-3, 0))))
            }
            switch dt {
            case CK_F32:
                values[i] = Double(v)
                withUnsafeBytes(of: v.bitPattern.littleEndian) { b in for j in 0..<4 { raw[4 * i + j] = b[j] } }
            case CK_F16:
                // Truncate the f32 to a half bit pattern (exact for these magnitudes), decode in Swift.
                let u = v.bitPattern
                let sign = UInt16((u >> 16) & 0x8000)
                let exp = Int((u >> 23) & 0xff) - 127 + 15
                let h: UInt16 = v == 0 ? sign : sign | UInt16(exp << 10) | UInt16((u >> 13) & 0x3ff)
                values[i] = f16ToDouble(h)
                raw[2 * i] = UInt8(h & 0xff); raw[2 * i + 1] = UInt8(h >> 8)
            default:
                let h = UInt16(v.bitPattern >> 16)
                values[i] = bf16ToDouble(h)
                raw[2 * i] = UInt8(h & 0xff); raw[2 * i + 1] = UInt8(h >> 8)
            }
        }
        return Weights(raw: raw, values: values)
    }

    struct Problem {
        var out: Int, inDim: Int, n: Int, ldx: Int, ldy: Int
    }

    /// A problem with its double-precision reference (computed once, checked under every config).
    struct Case {
        var dt: ck_dtype, p: Problem, integers: Bool
        var w: Weights, x: [Float]
        var ref: [Double], absSum: [Double] // [t * out + o]
    }

    static func makeCase(_ dt: ck_dtype, _ p: Problem, integers: Bool, seed: UInt64) -> Case {
        var rng = Rng(seed)
        let w = makeWeights(dt, count: p.out * p.inDim, rng: &rng, integers: integers)
        var x = [Float](repeating: .nan, count: p.n * p.ldx + 1)
        for t in 0..<p.n {
            for k in 0..<p.inDim { x[t * p.ldx + k] = integers ? Float(rng.int(-8, 8)) : rng.unit() }
        }
        var ref = [Double](repeating: 0, count: p.n * p.out), absSum = ref
        w.values.withUnsafeBufferPointer { wv in
            x.withUnsafeBufferPointer { xv in
                for t in 0..<p.n {
                    for o in 0..<p.out {
                        var s = 0.0, a = 0.0
                        let row = o * p.inDim, xr = t * p.ldx
                        for k in 0..<p.inDim {
                            let prod = Double(xv[xr + k]) * wv[row + k]
                            s += prod; a += abs(prod)
                        }
                        ref[t * p.out + o] = s; absSum[t * p.out + o] = a
                    }
                }
            }
        }
        return Case(dt: dt, p: p, integers: integers, w: w, x: x, ref: ref, absSum: absSum)
    }

    /// Runs ck_matmul (or ck_matmul_range over [o0, o1)) and checks every output against the double
    /// reference: exactly for integer data, within the f32 accumulation bound otherwise; outputs
    /// that must not be written keep their sentinel.
    func check(_ c: Case, range: (Int, Int)? = nil, context: String, file: StaticString = #filePath, line: UInt = #line) {
        let p = c.p
        let sentinel: Float = 12345.5
        var y = [Float](repeating: sentinel, count: p.n * p.ldy + 1)
        c.w.raw.withUnsafeBytes { wb in
            c.x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    if let (o0, o1) = range {
                        ck_matmul_range(c.dt, wb.baseAddress, Int32(p.out), Int32(p.inDim), xb.baseAddress,
                                        Int32(p.ldx), Int32(p.n), yb.baseAddress, Int32(p.ldy), Int32(o0), Int32(o1))
                    } else {
                        ck_matmul(c.dt, wb.baseAddress, Int32(p.out), Int32(p.inDim), xb.baseAddress,
                                  Int32(p.ldx), Int32(p.n), yb.baseAddress, Int32(p.ldy))
                    }
                }
            }
        }
        let (o0, o1) = range ?? (0, p.out)
        let u = 0x1p-24
        var failures = 0
        for t in 0..<p.n {
            for o in 0..<p.ldy {
                let got = y[t * p.ldy + o]
                if o < o0 || o >= o1 {
                    if got != sentinel && failures < 5 {
                        XCTFail("\(context): y[\(t),\(o)] written outside [\(o0),\(o1))", file: file, line: line)
                        failures += 1
                    }
                    continue
                }
                let s = c.ref[t * p.out + o]
                let err = abs(Double(got) - s)
                // Any order of f32 summation of `in` products: |err| <= ~in * u * sum |x w|.
                let tol = c.integers ? 0 : Double(p.inDim + 8) * u * c.absSum[t * p.out + o] * 1.01 + 1e-30
                if !(err <= tol) && failures < 5 {
                    XCTFail("\(context): y[\(t),\(o)] = \(got), expected \(s) (err \(err), tol \(tol))",
                            file: file, line: line)
                    failures += 1
                }
            }
        }
    }

    func check(_ dt: ck_dtype, _ p: Problem, integers: Bool, seed: UInt64, range: (Int, Int)? = nil,
               context: String, file: StaticString = #filePath, line: UInt = #line) {
        check(Self.makeCase(dt, p, integers: integers, seed: seed), range: range, context: context, file: file, line: line)
    }

    static let dtypes: [(ck_dtype, String)] = [(CK_F32, "f32"), (CK_F16, "f16"), (CK_BF16, "bf16")]

    /// Every combination of kernel set (SIMD when the CPU has it — AVX-512 and AVX2 where it has
    /// both — and forced scalar) and 1 or 2 threads.
    func forEachConfig(_ body: (String) -> Void) {
        let savedThreads = ck_get_threads()
        defer { ck_force_scalar(0); ck_force_avx2(0); ck_set_threads(savedThreads) }
        let avx512 = ck_simd_level() == 2
        for (scalar, avx2) in [(false, false), (false, true), (true, false)] where !avx2 || avx512 {
            ck_force_scalar(scalar ? 1 : 0)
            ck_force_avx2(avx2 ? 1 : 0)
            for threads in [1, 2] {
                ck_set_threads(Int32(threads))
                XCTAssertEqual(ck_get_threads(), Int32(threads))
                body("\(String(cString: ck_simd_name())) threads=\(threads)")
            }
        }
    }

    // MARK: - matrix products

    func testSimdSelection() {
        let level = ck_simd_level()
        XCTAssert((0...2).contains(level))
        XCTAssertEqual(String(cString: ck_simd_name()), ["scalar", "avx2-fma-f16c", "avx512-avx2-fma-f16c"][Int(level)])
        let features = ck_cpu_features()
        let has512 = [CK_CPU_AVX512F, CK_CPU_AVX512BW, CK_CPU_AVX512VL, CK_CPU_AVX512DQ].allSatisfy { features & Int32($0) != 0 }
        let amd = features & Int32(CK_CPU_AMD) != 0
        if level >= 1 && ProcessInfo.processInfo.environment["CK_AVX512"] == nil {
            XCTAssertEqual(level == 2, has512 && amd, "AVX-512 kernels by default exactly on AMD CPUs with AVX-512 F/BW/VL/DQ")
        }
        ck_force_avx2(1)
        XCTAssertEqual(ck_simd_level(), min(level, 1))
        ck_force_avx2(0)
        ck_force_scalar(1)
        XCTAssertEqual(ck_simd_level(), 0)
        XCTAssertEqual(String(cString: ck_simd_name()), "scalar")
        ck_force_scalar(0)
        XCTAssertEqual(ck_simd_level(), level)
        XCTAssertGreaterThanOrEqual(ck_get_threads(), 1)
    }

    /// Odd shapes for every n class: decode (1), verification (2..17), prefill (64, 65).
    func testMatmulOddShapes() {
        let outs = [1, 5, 13, 37, 100]
        let ins = [1, 3, 17, 100, 2049]
        let smallN = [1, 2, 3, 7, 8, 9, 17]
        for (dt, name) in Self.dtypes {
            var cases: [(Case, String)] = []
            var seed: UInt64 = 1
            for out in outs {
                for inDim in ins {
                    for n in smallN {
                        seed += 1
                        let p = Problem(out: out, inDim: inDim, n: n, ldx: inDim + Int(seed % 3) * 5,
                                        ldy: out + Int(seed % 2) * 3)
                        cases.append((Self.makeCase(dt, p, integers: seed % 4 == 0, seed: seed),
                                      "\(name) out=\(out) in=\(inDim) n=\(n)"))
                    }
                }
            }
            for (out, inDim) in [(13, 17), (37, 100), (100, 3), (5, 2049), (37, 2049)] {
                for n in [64, 65] {
                    seed += 1
                    let p = Problem(out: out, inDim: inDim, n: n, ldx: inDim + 7, ldy: out + 2)
                    cases.append((Self.makeCase(dt, p, integers: seed % 2 == 0, seed: seed),
                                  "\(name) out=\(out) in=\(inDim) n=\(n)"))
                }
            }
            forEachConfig { cfg in
                for (c, label) in cases { check(c, context: "\(cfg) \(label)") }
            }
        }
    }

    /// Shapes large enough to be split over threads and to use every kernel variant: multiple row
    /// blocks, 16-token groups plus a narrow remainder group, k-blocks of the prefill kernel, and the
    /// k-blocked small-n path (n * in * 4 bytes above 1 MiB).
    func testMatmulLargerShapes() {
        let shapes: [(Int, Int, Int)] = [
            (200, 300, 1), (200, 300, 4), (97, 515, 12), (130, 260, 33), (150, 257, 40),
            (101, 300, 41), (99, 520, 72), (61, 1000, 130), (30, 8200, 33),
        ]
        for (dt, name) in Self.dtypes {
            let cases = shapes.enumerated().map { i, c in
                (Self.makeCase(dt, Problem(out: c.0, inDim: c.1, n: c.2, ldx: c.1 + 1, ldy: c.0 + 4),
                               integers: i % 2 == 1, seed: UInt64(100 + i)),
                 "\(name) out=\(c.0) in=\(c.1) n=\(c.2)")
            }
            forEachConfig { cfg in
                for (c, label) in cases { check(c, context: "\(cfg) \(label)") }
            }
        }
    }

    func testMatmulRange() {
        for (dt, name) in Self.dtypes {
            let cases = [(1, (3, 40)), (5, (0, 17)), (9, (25, 61)), (70, (7, 50))].map { n, r in
                (Self.makeCase(dt, Problem(out: 61, inDim: 133, n: n, ldx: 140, ldy: 64), integers: false,
                               seed: UInt64(n)), r, n)
            }
            forEachConfig { cfg in
                for (c, r, n) in cases { check(c, range: r, context: "\(cfg) \(name) range \(r) n=\(n)") }
            }
        }
    }

    func testMatmulEmptyInputDimension() {
        var y = [Float](repeating: 7, count: 6)
        let x = [Float](repeating: 1, count: 2)
        let w = [UInt16](repeating: 0x3f80, count: 1)
        ck_matmul(CK_BF16, w, 3, 0, x, 1, 2, &y, 3)
        XCTAssertEqual(y, [0, 0, 0, 0, 0, 0])
    }

    /// Weights in memory that is only 2-byte aligned (as in an mmap'd safetensors file).
    func testMatmulUnalignedWeights() {
        forEachConfig { cfg in
            for (dt, name) in [(CK_F16, "f16"), (CK_BF16, "bf16")] {
                var rng = Rng(77)
                let out = 29, inDim = 301, n = 6
                let w = Self.makeWeights(dt, count: out * inDim, rng: &rng, integers: true)
                let shifted = [UInt8](repeating: 0, count: 2) + w.raw
                let x = (0..<(n * inDim)).map { _ in Float(rng.int(-8, 8)) }
                var y = [Float](repeating: 0, count: n * out)
                shifted.withUnsafeBytes { wb in
                    ck_matmul(dt, wb.baseAddress! + 2, Int32(out), Int32(inDim), x, Int32(inDim), Int32(n), &y, Int32(out))
                }
                for t in 0..<n {
                    for o in 0..<out {
                        var s = 0.0
                        for k in 0..<inDim { s += Double(x[t * inDim + k]) * w.values[o * inDim + k] }
                        XCTAssertEqual(Double(y[t * out + o]), s, "\(cfg) \(name) t=\(t) o=\(o)")
                    }
                }
            }
        }
    }

    /// Verification passes (n <= 40) reproduce one-token calls bit for bit, whatever the thread
    /// count: speculative decoding then accepts exactly what plain decoding would produce.
    func testSmallBatchesMatchSingleTokenCallsExactly() {
        let out = 203, inDim = 2063
        var firstThreadCount = [String: [Float]]() // one-token results per kernel set and dtype
        forEachConfig { cfg in
            for (dt, name) in Self.dtypes {
                var rng = Rng(9)
                let w = Self.makeWeights(dt, count: out * inDim, rng: &rng, integers: false)
                let x = (0..<(40 * inDim)).map { _ in rng.unit() }
                var single = [Float](repeating: 0, count: 40 * out)
                w.raw.withUnsafeBytes { wb in
                    for t in 0..<40 {
                        x.withUnsafeBufferPointer { xb in
                            single.withUnsafeMutableBufferPointer { yb in
                                ck_matmul(dt, wb.baseAddress, Int32(out), Int32(inDim), xb.baseAddress! + t * inDim,
                                          Int32(inDim), 1, yb.baseAddress! + t * out, Int32(out))
                            }
                        }
                    }
                    let key = "\(String(cString: ck_simd_name())) \(name)"
                    if let earlier = firstThreadCount[key] {
                        XCTAssert(earlier.elementsEqual(single) { $0.bitPattern == $1.bitPattern },
                                  "\(cfg) \(name): results depend on the thread count")
                    } else {
                        firstThreadCount[key] = single
                    }
                    for n in [2, 3, 5, 8, 12, 16, 17, 33, 40] {
                        var y = [Float](repeating: 0, count: n * out)
                        ck_matmul(dt, wb.baseAddress, Int32(out), Int32(inDim), x, Int32(inDim), Int32(n), &y, Int32(out))
                        let same = (0..<(n * out)).allSatisfy { y[$0].bitPattern == single[$0].bitPattern }
                        XCTAssert(same, "\(cfg) \(name) n=\(n): rows differ from one-token calls")
                    }
                }
            }
        }
    }

    /// bf16 activations (opt-in, CPUs with AVX512_BF16): every row of an n-row call equals a
    /// one-row call bit for bit (any n: past the small path's 40 rows, as in a prefill, the call
    /// is cut into calls of it; 1 and 2 threads), and equals the exact sum of
    /// bf16(x)·w (x rounded to bf16, nearest even) up to f32 accumulation, while it differs from
    /// the f32-activation product by the rounding of x (so the mode is really on). bf16 weights
    /// only: f32 weights keep f32 activations.
    func testBF16ActivationsAreRowIndependentAndRoundOnlyTheActivations() throws {
        defer { ck_set_bf16_activations(0); ck_set_threads(0) }
        guard ck_set_bf16_activations(1) != 0 else {
            ck_set_bf16_activations(0)
            throw XCTSkip("needs AVX-512 with AVX512_BF16 (kernel set \(String(cString: ck_simd_name())))")
        }
        XCTAssertEqual(String(cString: ck_simd_name()), "avx512-bf16-activations-avx2-fma-f16c")
        let out = 203, inDim = 2063 // a k tail of 15
        var rng = Rng(21)
        let w = Self.makeWeights(CK_BF16, count: out * inDim, rng: &rng, integers: false)
        let rows = 100
        let x = (0..<(rows * inDim)).map { _ in rng.unit() }
        func bf16(_ v: Float) -> Double {
            let u = v.bitPattern
            return Double(Float(bitPattern: (u &+ 0x7fff &+ ((u >> 16) & 1)) & 0xffff_0000))
        }
        func call(_ rows: Int, from t0: Int = 0) -> [Float] {
            var y = [Float](repeating: .nan, count: rows * out)
            w.raw.withUnsafeBytes { wb in
                x.withUnsafeBufferPointer { xb in
                    ck_matmul(CK_BF16, wb.baseAddress, Int32(out), Int32(inDim), xb.baseAddress! + t0 * inDim, Int32(inDim), Int32(rows), &y, Int32(out))
                }
            }
            return y
        }
        for threads in [1, 2] {
            ck_set_threads(Int32(threads))
            let single = (0..<rows).flatMap { call(1, from: $0) }
            for t in stride(from: 0, to: rows, by: 3) {
                for o in stride(from: 0, to: out, by: 7) {
                    var exact = 0.0, magnitude = 0.0
                    for k in 0..<inDim {
                        exact += bf16(x[t * inDim + k]) * w.values[o * inDim + k]
                        magnitude += abs(Double(x[t * inDim + k]) * w.values[o * inDim + k])
                    }
                    XCTAssertEqual(Double(single[t * out + o]), exact, accuracy: 1e-5 * magnitude, "row \(t), output \(o)")
                }
            }
            for n in [2, 3, 5, 8, 12, 16, 17, 33, 40, 41, 64, 100] {
                let y = call(n)
                XCTAssert((0..<(n * out)).allSatisfy { y[$0].bitPattern == single[$0].bitPattern },
                          "threads=\(threads) n=\(n): rows differ from one-row calls")
            }
        }
        // Switched off, the f32-activation kernels are back, and give other numbers.
        let rounded = call(1)
        ck_set_bf16_activations(0)
        XCTAssertEqual(String(cString: ck_simd_name()), "avx512-avx2-fma-f16c")
        let f32 = call(1)
        XCTAssertGreaterThan((0..<out).filter { rounded[$0] != f32[$0] }.count, out / 2)
    }

    func testThreadSettings() {
        let saved = ck_get_threads()
        defer { ck_set_threads(saved) }
        for t: Int32 in [3, 1, 2, 4, 1] {
            ck_set_threads(t)
            XCTAssertEqual(ck_get_threads(), t)
            check(CK_BF16, Problem(out: 300, inDim: 256, n: 3, ldx: 256, ldy: 300), integers: true,
                  seed: UInt64(t), context: "threads=\(t)")
        }
    }

    // MARK: - conversions

    func convert(_ dt: ck_dtype, _ values: [Float]) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in ck_from_f32(dt, src.baseAddress, dst.baseAddress, values.count) }
        }
        return out
    }

    func widen(_ dt: ck_dtype, _ bits: [UInt16]) -> [Float] {
        var out = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in ck_to_f32(dt, src.baseAddress, dst.baseAddress, bits.count) }
        }
        return out
    }

    /// ck_argmax on both kernel sets against the loop its header states (the first index of the
    /// largest value; NaNs never win unless at index 0; -0 and +0 tie): random rows of several
    /// lengths around the vector widths and of the 128256-token vocabulary, with the maximum
    /// repeated, in the tail, at index 0, NaNs at index 0 and elsewhere, signed zeros and infinities.
    func testArgmaxIsTheFirstLargestOnEveryKernelSet() {
        func reference(_ x: [Float]) -> Int {
            var best = 0
            for i in 1..<x.count where x[i] > x[best] { best = i }
            return best
        }
        var state: UInt64 = 21
        func uniform() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Double(state >> 33 % 2_000_001) / 1_000_000 - 1)
        }
        var rows: [[Float]] = []
        for count in [1, 2, 7, 8, 31, 32, 33, 63, 64, 100, 1000, 128_256] {
            var x = (0..<count).map { _ in uniform() }
            rows.append(x)
            if count > 3 {
                let top = x.max()! + 1
                x[count / 3] = top
                x[count - 1] = top  // repeated: the first one wins
                rows.append(x)
                x[count - 1] = top + 1  // only in the tail past the vector loop
                rows.append(x)
                x[0] = top + 2
                rows.append(x)
                var nans = x
                nans[1] = .nan
                nans[count / 2] = .nan
                rows.append(nans)
                nans[0] = .nan  // a NaN at index 0 stays the answer
                rows.append(nans)
            }
            rows.append([Float](repeating: -.infinity, count: count))
            rows.append((0..<count).map { $0 % 3 == 0 ? -0.0 : ($0 % 3 == 1 ? 0.0 : -1) })
            rows.append((0..<count).map { $0 % 5 == 4 ? .infinity : uniform() })
            rows.append([Float](repeating: .nan, count: count))
        }
        defer { ck_force_scalar(0) }
        for scalar in [false, true] {
            ck_force_scalar(scalar ? 1 : 0)
            for (i, x) in rows.enumerated() {
                XCTAssertEqual(Int(ck_argmax(x, Int32(x.count))), reference(x), "row \(i) of \(x.count), \(String(cString: ck_simd_name()))")
            }
        }
    }

    /// ck_silu_mul splits long inputs over the pool: every element is still g / (1 + expf(−g)) · u,
    /// bit for bit, on one thread and on two, below and above the split threshold.
    func testSiluMulIsElementwiseOnAnyThreadCount() {
        let saved = ck_get_threads()
        defer { ck_set_threads(saved) }
        var state: UInt64 = 5
        func uniform() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Double(state >> 33 % 2_000_001) / 100_000 - 10)
        }
        for count in [7, 8192, 16_384, 3 * 8192 + 5] {
            let gate = (0..<count).map { _ in uniform() }, up = (0..<count).map { _ in uniform() }
            let expected = (0..<count).map { gate[$0] / (1 + expf(-gate[$0])) * up[$0] }
            for threads in [1, 2] {
                ck_set_threads(Int32(threads))
                var g = gate
                ck_silu_mul(&g, up, count)
                XCTAssert((0..<count).allSatisfy { g[$0].bitPattern == expected[$0].bitPattern }, "\(count) elements, \(threads) threads")
            }
        }
    }

    /// Runs body once with the SIMD conversions and once with the scalar ones.
    func bothPaths(_ body: (String) -> Void) {
        defer { ck_force_scalar(0) }
        for scalar in [false, true] {
            ck_force_scalar(scalar ? 1 : 0)
            body(String(cString: ck_simd_name()))
        }
    }

    func testBF16Conversion() {
        let f = { (u: UInt32) in Float(bitPattern: u) }
        // (input bits, expected bf16)
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80),           // 1.0
            (0x3F80_8000, 0x3F80),           // tie, even below -> down
            (0x3F81_8000, 0x3F82),           // tie, odd below -> up
            (0x3F80_8001, 0x3F81),           // just above the tie
            (0x3F80_7FFF, 0x3F80),           // just below the tie
            (0xBF81_8000, 0xBF82),           // negative tie
            (0x8000_0000, 0x8000),           // -0
            (0x7F80_0000, 0x7F80),           // inf
            (0xFF80_0000, 0xFF80),           // -inf
            (0x7F7F_FFFF, 0x7F80),           // largest float rounds to inf
            (0x7F7F_7FFF, 0x7F7F),           // stays finite
            (0x0000_8000, 0x0000),           // subnormal tie to even (0)
            (0x0001_8000, 0x0002),           // subnormal tie to even (up)
            (0x0000_0001, 0x0000),           // smallest subnormal
            (0x0040_0000, 0x0040),           // subnormal, exact
        ]
        bothPaths { path in
            let got = convert(CK_BF16, cases.map { f($0.0) })
            for (i, c) in cases.enumerated() {
                XCTAssertEqual(got[i], c.1, "\(path): bf16(\(String(c.0, radix: 16)))")
            }
            for nan in [0x7FC0_0000, 0x7F80_0001, 0xFFFF_FFFF, 0x7FFF_FFFF] as [UInt32] {
                let h = convert(CK_BF16, [f(nan)])[0]
                XCTAssert((h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0, "\(path): NaN \(String(nan, radix: 16)) -> \(String(h, radix: 16))")
            }
            // Round trip of every bf16 pattern, in odd-sized batches (vector bodies and tails).
            let all = (0...0xFFFF).map { UInt16($0) }
            let widened = widen(CK_BF16, all)
            for i in 0..<all.count where i % 97 == 0 || all[i] & 0x7F80 != 0x7F80 {
                XCTAssertEqual(widened[i].bitPattern, UInt32(all[i]) << 16)
            }
            let back = convert(CK_BF16, widened)
            for i in 0..<all.count {
                let isNaN = all[i] & 0x7F80 == 0x7F80 && all[i] & 0x7F != 0
                if isNaN { XCTAssert(widened[i].isNaN && back[i] & 0x7F != 0) } else { XCTAssertEqual(back[i], all[i]) }
            }
            for count in [1, 7, 15, 16, 17, 33] {
                var rng = Rng(UInt64(count))
                let v = (0..<count).map { _ in rng.unit() * 1000 }
                let h = convert(CK_BF16, v)
                for i in 0..<count {
                    // Independent RNE check: the result is the nearer of the two bf16 neighbours.
                    let d = Double(v[i])
                    let r = Self.bf16ToDouble(h[i])
                    let lo = Self.bf16ToDouble(UInt16(v[i].bitPattern >> 16))
                    let hi = Self.bf16ToDouble(UInt16(v[i].bitPattern >> 16) + 1)
                    XCTAssert(r == lo || r == hi)
                    XCTAssertLessThanOrEqual(abs(r - d), min(abs(lo - d), abs(hi - d)), "\(path) count=\(count) i=\(i)")
                }
            }
        }
    }

    func testF16Conversion() {
        let cases: [(Float, UInt16)] = [
            (1.0, 0x3C00), (-2.0, 0xC000), (0.0, 0x0000), (-0.0, 0x8000),
            (65504, 0x7BFF),                   // largest half
            (65519.99, 0x7BFF),                // below the rounding boundary
            (65520, 0x7C00),                   // tie at the top: rounds to even = inf
            (1e6, 0x7C00), (-1e6, 0xFC00),     // overflow to inf
            (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (0x1p-14, 0x0400),                 // smallest normal
            (0x1p-24, 0x0001),                 // smallest subnormal
            (0x1p-25, 0x0000),                 // tie between 0 and 2^-24: even = 0
            (0x1.8p-24, 0x0002),               // 1.5 ulp: tie -> even (2)
            (0x1.4p-24, 0x0001),               // 1.25 ulp -> 1
            (0x1.0000_02p-25, 0x0001),         // just above the tie
            (0x1.ff8p-15, 0x03FF),             // largest subnormal, exact
            (0x1.ffcp-15, 0x0400),             // tie above it: even = the smallest normal
            (0x1.ffep-15, 0x0400),             // rounds up to the smallest normal
            (1 + 0x1p-11, 0x3C00),             // tie at 1: even (down)
            (1 + 0x1.8p-10, 0x3C02),           // tie, odd below: up
            (-0x1p-26, 0x8000),                // underflow keeps the sign
        ]
        bothPaths { path in
            let got = convert(CK_F16, cases.map { $0.0 })
            for (i, c) in cases.enumerated() {
                XCTAssertEqual(got[i], c.1, "\(path): f16(\(c.0)) = \(String(got[i], radix: 16))")
            }
            let nans = convert(CK_F16, [.nan, -.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0x7FBF_FFFF)])
            for h in nans { XCTAssert(h & 0x7C00 == 0x7C00 && h & 0x3FF != 0, "\(path): NaN -> \(String(h, radix: 16))") }

            // Every half pattern widens exactly (checked against the Swift decoder) and round-trips.
            let all = (0...0xFFFF).map { UInt16($0) }
            let widened = widen(CK_F16, all)
            let back = convert(CK_F16, widened)
            for i in 0..<all.count {
                let ref = Self.f16ToDouble(all[i])
                if ref.isNaN {
                    XCTAssert(widened[i].isNaN, "\(path): \(i)")
                    XCTAssert(back[i] & 0x7C00 == 0x7C00 && back[i] & 0x3FF != 0)
                } else {
                    XCTAssertEqual(Double(widened[i]), ref, "\(path): half \(String(i, radix: 16))")
                    XCTAssertEqual(back[i], all[i], "\(path): round trip \(String(i, radix: 16))")
                }
            }
            // Random values: the result is a nearest half (ties to even), in odd-sized batches.
            for count in [1, 5, 8, 9, 23] {
                var rng = Rng(UInt64(100 + count))
                let v = (0..<count).map { _ in rng.unit() * Float(pow(2.0, Double(rng.int(-26, 17)))) }
                let h = convert(CK_F16, v)
                for i in 0..<count {
                    let d = Double(v[i]), r = Self.f16ToDouble(h[i])
                    if abs(d) >= 65520 { XCTAssert(r.isInfinite); continue }
                    // Compare with the neighbours of r.
                    let up = Self.f16ToDouble(h[i] & 0x7FFF == 0x7BFF ? h[i] : h[i] + 1)
                    let down = h[i] & 0x7FFF == 0 ? r : Self.f16ToDouble(h[i] - 1)
                    XCTAssertLessThanOrEqual(abs(r - d), abs(up - d), "\(path) \(v[i])")
                    XCTAssertLessThanOrEqual(abs(r - d), abs(down - d), "\(path) \(v[i])")
                }
            }
        }
    }

    func testF32Conversion() {
        let v: [Float] = [1, -2.5, .infinity, Float(bitPattern: 0x0000_0859), 0x1p100]
        var out = [Float](repeating: 0, count: v.count)
        bothPaths { _ in
            v.withUnsafeBufferPointer { s in out.withUnsafeMutableBytes { d in ck_from_f32(CK_F32, s.baseAddress, d.baseAddress, v.count) } }
            XCTAssertEqual(out, v)
            var back = [Float](repeating: 0, count: v.count)
            out.withUnsafeBytes { s in back.withUnsafeMutableBufferPointer { d in ck_to_f32(CK_F32, s.baseAddress, d.baseAddress, v.count) } }
            XCTAssertEqual(back, v)
        }
    }

    /// SIMD and scalar conversions agree bit for bit on a large sample of f32 patterns (NaNs too).
    func testConversionPathsAgree() throws {
        try XCTSkipIf(ck_simd_level() == 0, "no SIMD kernels on this CPU")
        var rng = Rng(5)
        var v = (0..<100_003).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        v += [0x7F7F_FFFF, 0x477F_F000, 0x477F_EFFF, 0x3880_0000, 0x337F_FFFF, 0x3300_0000, 0x3300_0001]
            .map { Float(bitPattern: $0) }
        for dt in [CK_F16, CK_BF16] {
            let simd = convert(dt, v)
            ck_force_scalar(1)
            let scalar = convert(dt, v)
            ck_force_scalar(0)
            XCTAssertEqual(simd, scalar, "dtype \(dt)")
        }
    }
}
