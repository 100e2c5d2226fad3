import Foundation

// Row-wise building blocks of the Llama layer and their backward passes. All buffers are row-major
// (rows, dim) unless stated; "gain" is an RMSNorm weight vector (dim).

/// normalized[r] = x[r]·rstd[r] with rstd = 1/√(mean(x[r]²)+eps); out = normalized·gain.
/// `normalized` and `rstd` are kept for the backward pass.
func rmsnormForward<S: TrainScalar>(_ x: UnsafePointer<S>, gain: UnsafePointer<S>, rows: Int, dim: Int, eps: S,
                                    normalized: UnsafeMutablePointer<S>, rstd: UnsafeMutablePointer<S>,
                                    out: UnsafeMutablePointer<S>) {
    for r in 0..<rows {
        let xr = x + r * dim
        var sum: S = 0
        for i in 0..<dim { sum += xr[i] * xr[i] }
        let s = 1 / (sum / S(dim) + eps).squareRoot()
        rstd[r] = s
        let nr = normalized + r * dim, or = out + r * dim
        for i in 0..<dim {
            let v = xr[i] * s
            nr[i] = v
            or[i] = v * gain[i]
        }
    }
}

/// From dOut (gradient w.r.t. normalized·gain): dGain += Σ_r dOut·normalized, and
/// dx = rstd·(g − normalized·mean(g·normalized)) with g = dOut·gain, written or added into dx.
func rmsnormBackward<S: TrainScalar>(_ dOut: UnsafePointer<S>, normalized: UnsafePointer<S>, rstd: UnsafePointer<S>,
                                     gain: UnsafePointer<S>, rows: Int, dim: Int, dGain: UnsafeMutablePointer<S>,
                                     dx: UnsafeMutablePointer<S>, accumulate: Bool) {
    for r in 0..<rows {
        let d = dOut + r * dim, n = normalized + r * dim, out = dx + r * dim
        var dot: S = 0
        for i in 0..<dim {
            dGain[i] += d[i] * n[i]
            dot += d[i] * gain[i] * n[i]
        }
        let mean = dot / S(dim)
        let s = rstd[r]
        if accumulate {
            for i in 0..<dim { out[i] += s * (d[i] * gain[i] - n[i] * mean) }
        } else {
            for i in 0..<dim { out[i] = s * (d[i] * gain[i] - n[i] * mean) }
        }
    }
}

/// Rotary embedding in Hugging Face's rotate-half layout (element i of a head pairs with i + half),
/// on `heads` heads of one row. `inverse` applies the transposed rotation — the backward pass,
/// since the rotation is orthogonal.
@inline(__always)
func rope<S: TrainScalar>(_ v: UnsafeMutablePointer<S>, heads: Int, headDim: Int, cos: UnsafePointer<S>,
                          sin: UnsafePointer<S>, inverse: Bool) {
    let half = headDim / 2
    for h in 0..<heads {
        let p = v + h * headDim
        for i in 0..<half {
            let a = p[i], b = p[i + half]
            let s = inverse ? -sin[i] : sin[i]
            p[i] = a * cos[i] - b * s
            p[i + half] = b * cos[i] + a * s
        }
    }
}

/// The cos/sin tables of the engine (f32 angles, as Hugging Face computes them), for positions
/// 0..<positions: each (positions, headDim/2), row-major.
struct RoPETables<S: TrainScalar> {
    let half: Int
    let cos: [S]
    let sin: [S]

    init(theta: Double, headDim: Int, positions: Int) {
        half = headDim / 2
        let base = Float(theta)
        let inv = (0..<half).map { i -> Float in 1 / Float(pow(Double(base), Double(Float(2 * i) / Float(headDim)))) }
        var c = [S](repeating: 0, count: positions * half), s = c
        for p in 0..<positions {
            for i in 0..<half {
                let angle = Float(p) * inv[i]
                c[p * half + i] = S(Float(Foundation.cos(Double(angle))))
                s[p * half + i] = S(Float(Foundation.sin(Double(angle))))
            }
        }
        cos = c
        sin = s
    }
}
