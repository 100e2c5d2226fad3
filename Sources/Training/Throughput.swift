import Foundation

/// The machine's measured sgemm rate, the yardstick for training throughput
/// (fraction = 6 × parameters × tokens/s ÷ sgemm FLOP/s).
public enum Throughput {
    /// GFLOP/s of f32 sgemm at a training-like shape (m rows of activations × n outputs × k inputs),
    /// best of a few repetitions after a warm-up.
    public static func sgemmGFLOPS(m: Int = 2048, n: Int = 1024, k: Int = 1024, repetitions: Int = 5) -> Double {
        let a = Tensor<Float>(count: m * k), b = Tensor<Float>(count: n * k), c = Tensor<Float>(count: m * n)
        for i in 0..<a.count { a[i] = Float(i % 7) * 0.01 }
        for i in 0..<b.count { b[i] = Float(i % 5) * 0.01 }
        var best = Double.infinity
        for rep in 0...repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            Float.gemm(false, true, m, n, k, 1, a.pointer, k, b.pointer, k, 0, c.pointer, n)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if rep > 0 { best = min(best, seconds) }
        }
        return 2 * Double(m * n * k) / best / 1e9
    }

    /// 6 × parameters × tokens/s ÷ sgemm FLOP/s.
    public static func fraction(parameters: Int, tokensPerSecond: Double, sgemmGFLOPS: Double) -> Double {
        6 * Double(parameters) * tokensPerSecond / (sgemmGFLOPS * 1e9)
    }
}
