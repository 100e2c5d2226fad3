// kernel-bench: throughput of the CKernels matrix kernels on the Llama-3.2-1B shapes.
//
//   swift run -c release kernel-bench [--quick] [--dtype bf16|f16|f32]... [--threads N] [--reps N]
//
// Decode / verification numbers cycle through the matrices of all 16 layers (about 2 GB of bf16
// weights, far larger than the L3), as a real decode does, with the plain streaming read measured
// over the same matrices in the same rotation, interleaved matrix by matrix so that drifts of the
// machine's memory bandwidth affect every column alike. Every figure is the median of the
// repetitions (each repetition is one pass over all the matrices).
import CKernels
import COpenBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - options

var quick = false
var dtypeNames: [String] = []
var threads = 0
var reps = 5
do {
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        switch a {
        case "--quick": quick = true
        case "--dtype": if let v = args.popFirst() { dtypeNames.append(v) }
        case "--threads": threads = Int(args.popFirst() ?? "") ?? 0
        case "--reps": reps = max(1, Int(args.popFirst() ?? "") ?? reps)
        default:
            print("usage: kernel-bench [--quick] [--dtype bf16|f16|f32]... [--threads N] [--reps N]")
            exit(a == "--help" || a == "-h" ? 0 : 2)
        }
    }
}
if dtypeNames.isEmpty { dtypeNames = ["bf16", "f16", "f32"] }
if threads > 0 { ck_set_threads(Int32(threads)) }
let layers = quick ? 4 : 16
if quick { reps = min(reps, 3) }

// MARK: - helpers

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// CPU seconds used by other processes since the start (Linux: /proc/stat minus our rusage), to
/// tell a quiet run from a contended one.
func foreignCPUSeconds() -> Double? {
    #if os(Linux)
    guard let f = fopen("/proc/stat", "r") else { return nil }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 512)
    guard fgets(&line, 512, f) != nil else { return nil }
    let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: " ").dropFirst().compactMap { Double($0) }
    guard fields.count >= 7 else { return nil }
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] // user nice system irq softirq
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    let own = Double(ru.ru_utime.tv_sec) + Double(ru.ru_utime.tv_usec) * 1e-6
        + Double(ru.ru_stime.tv_sec) + Double(ru.ru_stime.tv_usec) * 1e-6
    return busy / Double(sysconf(Int32(_SC_CLK_TCK))) - own
    #else
    return nil
    #endif
}
let foreignAtStart = foreignCPUSeconds()
let startTime = now()

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

func fmt(_ v: Double, _ decimals: Int = 1) -> String {
    var p = 1.0
    for _ in 0..<decimals { p *= 10 }
    let r = (v * p).rounded() / p
    var s = "\(r)"
    if decimals == 0, s.hasSuffix(".0") { s.removeLast(2) }
    return s
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

struct Rng {
    var s: UInt64 = 0x1234_5678_9ABC_DEF1
    mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
}

/// 64-byte aligned buffer filled with random finite normal values of the dtype.
func makeWeights(_ dt: ck_dtype, count: Int, rng: inout Rng) -> UnsafeMutableRawPointer {
    let bytes = count * (dt == CK_F32 ? 4 : 2)
    let p = UnsafeMutableRawPointer.allocate(byteCount: (bytes + 63) / 64 * 64, alignment: 64)
    let words = p.bindMemory(to: UInt64.self, capacity: (bytes + 7) / 8)
    let (mask, bits): (UInt64, UInt64)
    switch dt {
    case CK_F32: (mask, bits) = (0x807F_FFFF_807F_FFFF, 0x3C00_0000_3C00_0000)       // |w| ~ 2^-7
    case CK_F16: (mask, bits) = (0x83FF_83FF_83FF_83FF, 0x2000_2000_2000_2000)       // |w| ~ 2^-7
    default: (mask, bits) = (0x807F_807F_807F_807F, 0x3C00_3C00_3C00_3C00)           // |w| ~ 2^-7
    }
    for i in 0..<(bytes / 8) { words[i] = (rng.next() & mask) | bits }
    return p
}

// MARK: - plain streaming read (same pool as the kernels)

struct SumJob {
    var base: UnsafeRawPointer
    var bytes: Int
    var sink: UInt32 = 0
}

/// Wrapping integer sum of every 32-bit word of the slice for this thread.
// nonisolated: a C callback of the kernel pool, run on its worker threads; it captures nothing.
nonisolated let sumTask: @convention(c) (UnsafeMutableRawPointer?, Int32, Int32) -> Void = { ctx, tid, nth in
    let job = ctx!.assumingMemoryBound(to: SumJob.self)
    let total = job.pointee.bytes, chunk = (total / Int(nth)) / 256 * 256
    let start = chunk * Int(tid)
    let end = tid == nth - 1 ? total : start + chunk
    let p = job.pointee.base
    var a0 = SIMD16<UInt32>(), a1 = a0, a2 = a0, a3 = a0
    var i = start
    while i + 256 <= end {
        a0 &+= p.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt32>.self)
        a1 &+= p.loadUnaligned(fromByteOffset: i + 64, as: SIMD16<UInt32>.self)
        a2 &+= p.loadUnaligned(fromByteOffset: i + 128, as: SIMD16<UInt32>.self)
        a3 &+= p.loadUnaligned(fromByteOffset: i + 192, as: SIMD16<UInt32>.self)
        i += 256
    }
    let s = (a0 &+ a1 &+ a2 &+ a3).wrappedSum()
    if tid == 0 { job.pointee.sink = s }
}

func streamRead(_ p: UnsafeRawPointer, bytes: Int) {
    var job = SumJob(base: p, bytes: bytes)
    withUnsafeMutablePointer(to: &job) { ck_parallel(sumTask, UnsafeMutableRawPointer($0)) }
}

// MARK: - model shapes

struct Shape { var name: String; var out: Int; var inDim: Int }
let layerShapes = [
    Shape(name: "q", out: 2048, inDim: 2048), Shape(name: "k", out: 512, inDim: 2048),
    Shape(name: "v", out: 512, inDim: 2048), Shape(name: "o", out: 2048, inDim: 2048),
    Shape(name: "gate", out: 8192, inDim: 2048), Shape(name: "up", out: 8192, inDim: 2048),
    Shape(name: "down", out: 2048, inDim: 8192),
]
let head = Shape(name: "lm_head", out: 128_256, inDim: 2048)

struct Matrix { var shape: Shape; var w: UnsafeMutableRawPointer }

let maxN = 128, maxIn = 8192, maxOut = 128_256
// The benchmark's activation and output buffers, written once at start and then only by ck_matmul
// calls made one at a time from the main thread: no concurrent access to guard.
nonisolated(unsafe) let xbuf = UnsafeMutablePointer<Float>.allocate(capacity: maxN * maxIn)
nonisolated(unsafe) let ybuf = UnsafeMutablePointer<Float>.allocate(capacity: maxN * maxOut)
do {
    var r = Rng()
    for i in 0..<(maxN * maxIn) { xbuf[i] = Float(Int(r.next() % 2001) - 1000) / 1000 }
}

func matmul(_ dt: ck_dtype, _ m: Matrix, n: Int) {
    ck_matmul(dt, m.w, Int32(m.shape.out), Int32(m.shape.inDim), xbuf, Int32(maxIn), Int32(n), ybuf,
              Int32(maxOut))
}

// MARK: - header

let coreName = openblas_get_corename().map { String(cString: $0) } ?? "?"
print("kernel-bench: kernels \(String(cString: ck_simd_name())), \(ck_get_threads()) threads; "
      + "OpenBLAS \(coreName), \(openblas_get_num_threads()) threads; \(layers) layers, \(reps) repetitions (medians)")

// MARK: - OpenBLAS reference

func sgemmGflops(m: Int, n: Int, k: Int, transB: Bool, reps: Int) -> Double {
    let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
    let b = UnsafeMutablePointer<Float>.allocate(capacity: k * n)
    let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    for i in 0..<(m * k) { a[i] = Float(i % 7) * 0.1 }
    for i in 0..<(k * n) { b[i] = Float(i % 5) * 0.1 }
    var times: [Double] = []
    for r in 0...reps {
        let t = now()
        cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, a, Int32(k), b, transB ? Int32(k) : Int32(n), 0, c, Int32(n))
        if r > 0 { times.append(now() - t) } // the first call warms up OpenBLAS's threads
    }
    return 2.0 * Double(m * n * k) / median(times) / 1e9
}

print("OpenBLAS sgemm 1024^3: \(fmt(sgemmGflops(m: 1024, n: 1024, k: 1024, transB: false, reps: 5))) GFLOP/s;  "
      + "Y(64x2048) = X W^T, W 8192x2048: \(fmt(sgemmGflops(m: 64, n: 8192, k: 2048, transB: true, reps: 5))) GFLOP/s")

// MARK: - per dtype

for name in dtypeNames {
    let dt: ck_dtype
    switch name {
    case "bf16": dt = CK_BF16
    case "f16": dt = CK_F16
    case "f32": dt = CK_F32
    default: print("unknown dtype \(name)"); continue
    }
    let es = dt == CK_F32 ? 4 : 2
    var rng = Rng()
    var mats: [Matrix] = []
    for _ in 0..<layers {
        for s in layerShapes { mats.append(Matrix(shape: s, w: makeWeights(dt, count: s.out * s.inDim, rng: &rng))) }
    }
    let headM = Matrix(shape: head, w: makeWeights(dt, count: head.out * head.inDim, rng: &rng))
    defer {
        for m in mats { m.w.deallocate() }
        headM.w.deallocate()
    }
    let bytesOf = { (m: Matrix) in Double(m.shape.out * m.shape.inDim * es) }
    let totalBytes = mats.reduce(0) { $0 + bytesOf($1) }
    print("")
    print("== \(name): \(layers) layers, \(fmt(totalBytes / 1e9, 2)) GB of weights (+ lm_head \(fmt(bytesOf(headM) / 1e9, 2)) GB) ==")

    // Decode and verification: columns = streaming read, n = 1, 2, 4, 8, 12, 16.
    let ns = [1, 2, 4, 8, 12, 16]
    let cols = ns.count + 1
    var perRep = [[Double]](repeating: [], count: cols)
    for _ in 0..<reps {
        var t = [Double](repeating: 0, count: cols)
        for i in 0..<mats.count {
            for c in 0..<cols {
                // Column c works on a different matrix than column c-1 did just before, so nothing
                // is reused from the caches.
                let m = mats[(i + c * (mats.count / cols + 1)) % mats.count]
                let t0 = now()
                if c == 0 { streamRead(m.w, bytes: Int(bytesOf(m))) } else { matmul(dt, m, n: ns[c - 1]) }
                t[c] += now() - t0
            }
        }
        for c in 0..<cols { perRep[c].append(t[c]) }
    }
    let tStream = median(perRep[0]), t1 = median(perRep[1])
    print("memory read (streaming sum, \(ck_get_threads()) threads): \(fmt(totalBytes / tStream / 1e9)) GB/s")
    print("decode  n=1:  \(fmt(totalBytes / t1 / 1e9)) GB/s of weights = \(fmt(tStream / t1, 2)) x streaming read;  "
          + "\(fmt(t1 * 1e3)) ms per pass over the \(layers) layers")
    for (j, n) in ns.enumerated() where n > 1 {
        let tn = median(perRep[j + 1])
        print("verify  n=\(pad("\(n):", 3)) time \(fmt(tn / t1, 2)) x n=1   (\(fmt(totalBytes / tn / 1e9)) GB/s, "
              + "\(fmt(2.0 * Double(n) * totalBytes / Double(es) / tn / 1e9)) GFLOP/s)")
    }

    // LM head (one matrix, 263 MB in bf16): decode and an 8-token verification.
    do {
        var h1: [Double] = [], h8: [Double] = []
        for _ in 0..<reps {
            var t0 = now(); matmul(dt, headM, n: 1); h1.append(now() - t0)
            t0 = now(); matmul(dt, headM, n: 8); h8.append(now() - t0)
        }
        print("lm_head n=1:  \(fmt(bytesOf(headM) / median(h1) / 1e9)) GB/s;  n=8: \(fmt(median(h8) / median(h1), 2)) x n=1")
    }

    // A pruned draft head (`draft_vocab: K`): one E = layers/2 draft row through the layers and
    // the full head, against the same layers and a contiguous copy of K head rows, for K =
    // vocab/16 and vocab/8; the three orders rotate repetition by repetition. The cut is the
    // median over repetitions of (full head − pruned head) ÷ (layers + full head).
    do {
        let draftLayers = layers / 2
        let ks = [head.out / 16, head.out / 8]
        let pruned = ks.map { k -> Matrix in
            let w = UnsafeMutableRawPointer.allocate(byteCount: k * head.inDim * es, alignment: 64)
            w.copyMemory(from: headM.w, byteCount: k * head.inDim * es)
            return Matrix(shape: Shape(name: "head[0..<\(k)]", out: k, inDim: head.inDim), w: w)
        }
        defer { for m in pruned { m.w.deallocate() } }
        var tLayers: [Double] = [], tHead: [Double] = [], tPruned = [[Double]](repeating: [], count: ks.count)
        var cuts = [[Double]](repeating: [], count: ks.count)
        for r in 0..<(3 * reps) {
            var t0 = now()
            for m in mats.prefix(draftLayers * layerShapes.count) { matmul(dt, m, n: 1) }
            let layerTime = now() - t0
            var heads = [Double](repeating: 0, count: ks.count + 1)
            for j in 0...ks.count {
                let which = (j + r) % (ks.count + 1)
                t0 = now()
                matmul(dt, which == 0 ? headM : pruned[which - 1], n: 1)
                heads[which] = now() - t0
            }
            tLayers.append(layerTime)
            tHead.append(heads[0])
            for i in ks.indices {
                tPruned[i].append(heads[i + 1])
                cuts[i].append((heads[0] - heads[i + 1]) / (layerTime + heads[0]))
            }
        }
        let sorted = cuts.map { $0.sorted() }
        print("pruned draft head (layers 0..<\(draftLayers) + head, one row): layers \(fmt(median(tLayers) * 1e3)) ms, full head "
              + "\(fmt(median(tHead) * 1e3)) ms; "
              + ks.indices.map { i in
                  "K=\(ks[i]): head \(fmt(median(tPruned[i]) * 1e3, 2)) ms, the draft -\(fmt(100 * median(cuts[i])))% "
                      + "(p10-p90 \(fmt(100 * sorted[i][sorted[i].count / 10]))-\(fmt(100 * sorted[i][sorted[i].count * 9 / 10]))%)"
              }.joined(separator: "; "))
    }

    // int8 draft copies (bf16 only): what a self-speculative draft with `draft_precision: int8`
    // and E = layers/2 reads — int8 copies of the first half of the layers and of the head —
    // against a bf16 decode pass over all layers and the head, interleaved matrix by matrix.
    if dt == CK_BF16 {
        struct Q8 { var shape: Shape; var q: UnsafeMutablePointer<Int8>; var scales: UnsafeMutablePointer<Float> }
        func quantize(_ m: Matrix) -> Q8 {
            let q = Q8(shape: m.shape, q: .allocate(capacity: m.shape.out * m.shape.inDim), scales: .allocate(capacity: m.shape.out))
            ck_q8_quantize_rows(dt, m.w, Int32(m.shape.inDim), q.q, q.scales, 0, Int32(m.shape.out))
            return q
        }
        let draftLayers = layers / 2
        let drafts = mats.prefix(draftLayers * layerShapes.count).map(quantize) + [quantize(headM)]
        defer { for d in drafts { d.q.deallocate(); d.scales.deallocate() } }
        let draftBytes = drafts.reduce(0.0) { $0 + Double($1.shape.out * ($1.shape.inDim + 4)) }
        let fullBytes = totalBytes + bytesOf(headM)
        var tDraft: [Double] = [], tFull: [Double] = []
        for _ in 0..<reps {
            var a = 0.0, b = 0.0
            for (i, m) in (mats + [headM]).enumerated() {
                var t0 = now()
                matmul(dt, m, n: 1)
                b += now() - t0
                if i < drafts.count {
                    let d = drafts[(i + drafts.count / 2) % drafts.count]
                    t0 = now()
                    ck_matmul_q8(d.q, d.scales, Int32(d.shape.out), Int32(d.shape.inDim), xbuf, Int32(maxIn), 1, ybuf, Int32(maxOut))
                    a += now() - t0
                }
            }
            tDraft.append(a)
            tFull.append(b)
        }
        print("int8 draft (layers 0..<\(draftLayers) + lm_head, \(fmt(draftBytes / 1e9, 2)) GB): \(fmt(draftBytes / median(tDraft) / 1e9)) GB/s, "
              + "\(fmt(median(tDraft) * 1e3)) ms = \(fmt(median(tDraft) / median(tFull), 2)) x a bf16 decode pass over all layers + lm_head "
              + "(\(fmt(median(tFull) * 1e3)) ms, \(fmt(fullBytes / median(tFull) / 1e9)) GB/s)")
        // The drafts of a batch: several rows through the same copies, row counts interleaved.
        let counts = [1, 2, 4, 8].filter { $0 <= maxN }
        var times: [Int: [Double]] = [:]
        for _ in 0..<reps {
            for n in counts {
                let t0 = now()
                for d in drafts {
                    ck_matmul_q8(d.q, d.scales, Int32(d.shape.out), Int32(d.shape.inDim), xbuf, Int32(maxIn), Int32(n), ybuf, Int32(maxOut))
                }
                times[n, default: []].append(now() - t0)
            }
        }
        let one = median(times[1]!)
        print("int8 draft rows: n=1 \(fmt(one * 1e3)) ms; "
              + counts.dropFirst().map { "n=\($0) \(fmt(median(times[$0]!) / one, 2)) x" }.joined(separator: ", "))
    }

    // 4-bit copies of every layer and the head (a `--weights q4` model): the decode kernel's
    // streaming rate at one row, and what 2-16 rows (verification, batches) cost against one, all
    // row counts interleaved repetition by repetition.
    if dt == CK_BF16 {
        struct Q4 { var shape: Shape; var q: UnsafeMutablePointer<UInt8>; var d: UnsafeMutablePointer<UInt16>; var bytes: Int }
        func quantize4(_ m: Matrix) -> Q4 {
            let rowBytes = (m.shape.inDim + 63) / 64 * 32, blocks = (m.shape.inDim + 31) / 32
            let q = Q4(shape: m.shape, q: .allocate(capacity: m.shape.out * rowBytes), d: .allocate(capacity: m.shape.out * blocks),
                       bytes: m.shape.out * (rowBytes + 2 * blocks))
            ck_q4_quantize_rows(dt, m.w, Int32(m.shape.inDim), q.q, q.d, 0, Int32(m.shape.out))
            return q
        }
        let q4s = (mats + [headM]).map(quantize4)
        defer { for m in q4s { m.q.deallocate(); m.d.deallocate() } }
        let q4Bytes = Double(q4s.reduce(0) { $0 + $1.bytes })
        let counts = [1, 2, 4, 8, 16].filter { $0 <= maxN }
        var times: [Int: [Double]] = [:]
        for _ in 0..<reps {
            for n in counts {
                var a = 0.0
                for m in q4s {
                    let t0 = now()
                    ck_matmul_q4(m.q, m.d, Int32(m.shape.out), Int32(m.shape.inDim), xbuf, Int32(maxIn), Int32(n), ybuf, Int32(maxOut))
                    a += now() - t0
                }
                times[n, default: []].append(a)
            }
        }
        let one = median(times[1]!)
        print("q4 (all layers + lm_head, \(fmt(q4Bytes / 1e9, 2)) GB): n=1 \(fmt(q4Bytes / one / 1e9)) GB/s, \(fmt(one * 1e3)) ms; "
              + counts.dropFirst().map { "n=\($0) \(fmt(median(times[$0]!) / one, 2)) x" }.joined(separator: ", "))
    }

    // Prefill: n = 64, 128 over all layers; GFLOP/s per shape and overall.
    for n in [64, 128] {
        var perShape = [String: [Double]]()
        var overall: [Double] = []
        let flopsPerPass = mats.reduce(0.0) { $0 + 2.0 * Double(n * $1.shape.out * $1.shape.inDim) }
        for _ in 0..<max(1, reps - 2) {
            var byShape = [String: Double]()
            var total = 0.0
            for m in mats {
                let t0 = now()
                matmul(dt, m, n: n)
                let dtm = now() - t0
                byShape[m.shape.name, default: 0] += dtm
                total += dtm
            }
            for (k, v) in byShape { perShape[k, default: []].append(v) }
            overall.append(total)
        }
        var line = "prefill n=\(n): \(fmt(flopsPerPass / median(overall) / 1e9)) GFLOP/s overall;"
        for s in layerShapes where s.name != "v" && s.name != "up" {
            let fl = 2.0 * Double(n * s.out * s.inDim * layers)
            line += "  \(s.name) \(s.out)x\(s.inDim): \(fmt(fl / median(perShape[s.name]!) / 1e9))"
        }
        print(line)
    }
}

if let a = foreignAtStart, let b = foreignCPUSeconds() {
    print("")
    print("other processes used \(fmt(b - a)) CPU-seconds during this \(fmt(now() - startTime, 0)) s run "
          + "(non-zero: the numbers above are disturbed)")
}
