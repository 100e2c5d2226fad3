import COpenBLAS
import CTrainingKernels
import Foundation

/// The element type of the trainer's arithmetic. Training runs in f32; the gradient check runs the
/// very same code in f64 so that finite differences are not drowned in rounding noise.
public protocol TrainScalar: BinaryFloatingPoint, Sendable {
    /// Row-major C(m×n) = alpha·op(A)·op(B) + beta·C, op(X) = Xᵀ when the flag is set.
    static func gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Self,
                     _ a: UnsafePointer<Self>, _ lda: Int, _ b: UnsafePointer<Self>, _ ldb: Int,
                     _ beta: Self, _ c: UnsafeMutablePointer<Self>, _ ldc: Int)
    static func exponential(_ x: Self) -> Self
    static func logarithm(_ x: Self) -> Self
    /// In place: x ← scale·softmax(x) over n values; returns log Σ exp(x) of the input.
    static func softmax(_ x: UnsafeMutablePointer<Self>, _ n: Int, scale: Self) -> Self
    /// act = silu(gate)·up over n elements.
    static func swigluForward(_ gate: UnsafePointer<Self>, _ up: UnsafePointer<Self>, _ act: UnsafeMutablePointer<Self>, _ n: Int)
    /// dGate = dAct·up·silu'(gate), dUp = dAct·silu(gate) over n elements.
    static func swigluBackward(_ gate: UnsafePointer<Self>, _ up: UnsafePointer<Self>, _ dAct: UnsafePointer<Self>,
                               _ dGate: UnsafeMutablePointer<Self>, _ dUp: UnsafeMutablePointer<Self>, _ n: Int)
}

extension TrainScalar {
    // Plain loops: the reference the vectorised f32 kernels are checked against, and the f64 path.
    public static func softmax(_ x: UnsafeMutablePointer<Self>, _ n: Int, scale: Self) -> Self {
        var mx = x[0]
        for i in 1..<max(n, 1) where x[i] > mx { mx = x[i] }
        var sum: Self = 0
        for i in 0..<n {
            x[i] = exponential(x[i] - mx)
            sum += x[i]
        }
        let inv = scale / sum
        for i in 0..<n { x[i] *= inv }
        return mx + logarithm(sum)
    }

    public static func swigluForward(_ gate: UnsafePointer<Self>, _ up: UnsafePointer<Self>, _ act: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n { act[i] = gate[i] / (1 + exponential(-gate[i])) * up[i] }
    }

    public static func swigluBackward(_ gate: UnsafePointer<Self>, _ up: UnsafePointer<Self>, _ dAct: UnsafePointer<Self>,
                                      _ dGate: UnsafeMutablePointer<Self>, _ dUp: UnsafeMutablePointer<Self>, _ n: Int) {
        for i in 0..<n {
            let g = gate[i], s = 1 / (1 + exponential(-g))
            dGate[i] = dAct[i] * up[i] * s * (1 + g * (1 - s))
            dUp[i] = dAct[i] * g * s
        }
    }
}

extension Float: TrainScalar {
    public static func gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                            _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                            _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inline(__always) public static func exponential(_ x: Float) -> Float { Foundation.exp(x) }
    @inline(__always) public static func logarithm(_ x: Float) -> Float { Foundation.log(x) }
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int, scale: Float) -> Float { ct_softmax(x, n, scale) }
    public static func swigluForward(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ act: UnsafeMutablePointer<Float>, _ n: Int) {
        ct_swiglu_forward(gate, up, act, n)
    }
    public static func swigluBackward(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ dAct: UnsafePointer<Float>,
                                      _ dGate: UnsafeMutablePointer<Float>, _ dUp: UnsafeMutablePointer<Float>, _ n: Int) {
        ct_swiglu_backward(gate, up, dAct, dGate, dUp, n)
    }
}

extension Double: TrainScalar {
    public static func gemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Double,
                            _ a: UnsafePointer<Double>, _ lda: Int, _ b: UnsafePointer<Double>, _ ldb: Int,
                            _ beta: Double, _ c: UnsafeMutablePointer<Double>, _ ldc: Int) {
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    @inline(__always) public static func exponential(_ x: Double) -> Double { Foundation.exp(x) }
    @inline(__always) public static func logarithm(_ x: Double) -> Double { Foundation.log(x) }
}

/// A zero-initialised, 64-byte aligned array of scalars owned by a trainer object.
public final class Tensor<S: TrainScalar> {
    public let pointer: UnsafeMutablePointer<S>
    public let count: Int

    public init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<S>.stride, alignment: 64)
        pointer = raw.bindMemory(to: S.self, capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }

    public subscript(i: Int) -> S {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public func zero() { pointer.update(repeating: 0, count: count) }
}

/// y = x·Wᵀ for row-major x (rows×inDim) and W (outDim×inDim): the layout of Hugging Face Linear weights.
@inline(__always)
func linearForward<S: TrainScalar>(_ x: UnsafePointer<S>, _ w: UnsafePointer<S>, rows: Int, inDim: Int, outDim: Int,
                                   _ y: UnsafeMutablePointer<S>) {
    S.gemm(false, true, rows, outDim, inDim, 1, x, inDim, w, inDim, 0, y, outDim)
}

/// dx (=, or += when `accumulate`) dy·W and dW += dyᵀ·x for y = x·Wᵀ.
@inline(__always)
func linearBackward<S: TrainScalar>(_ dy: UnsafePointer<S>, _ x: UnsafePointer<S>, _ w: UnsafePointer<S>, rows: Int,
                                    inDim: Int, outDim: Int, dx: UnsafeMutablePointer<S>, accumulate: Bool,
                                    dw: UnsafeMutablePointer<S>) {
    S.gemm(false, false, rows, inDim, outDim, 1, dy, outDim, w, inDim, accumulate ? 1 : 0, dx, inDim)
    S.gemm(true, false, outDim, inDim, rows, 1, dy, outDim, x, inDim, 1, dw, inDim)
}
