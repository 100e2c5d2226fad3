import Foundation

/// Linear warmup to the peak rate, then cosine decay to `minRate` at the last step.
public struct LearningRateSchedule: Sendable, Equatable, Codable {
    public var peak: Double
    public var minRate: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Double, minRate: Double, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak
        self.minRate = minRate
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The rate of step t (0-based).
    public func rate(step t: Int) -> Double {
        if t < warmupSteps { return peak * Double(t + 1) / Double(warmupSteps) }
        let decaySteps = max(totalSteps - warmupSteps - 1, 1)
        let progress = min(Double(t - warmupSteps) / Double(decaySteps), 1)
        return minRate + (peak - minRate) * 0.5 * (1 + Foundation.cos(Double.pi * progress))
    }
}

/// AdamW (decoupled weight decay, Loshchilov & Hutter) over the flat parameter buffer.
/// State: first and second moments in the parameter layout, and the number of updates taken.
public final class AdamW {
    public var beta1: Double = 0.9
    public var beta2: Double = 0.95
    public var epsilon: Double = 1e-8
    public var weightDecay: Double = 0.1
    public let m: Tensor<Float>   // (parameter count)
    public let v: Tensor<Float>   // (parameter count)
    public var updates = 0
    /// Per element: 1 where weight decay applies (matrices), 0 for RMSNorm gains.
    let decayMask: [Float]

    public init(layout: ParameterLayout) {
        m = Tensor(count: layout.count)
        v = Tensor(count: layout.count)
        var mask = [Float](repeating: 0, count: layout.count)
        for e in layout.entries where e.decays {
            for i in e.offset..<(e.offset + e.count) { mask[i] = 1 }
        }
        decayMask = mask
    }

    /// One update of `params` with `grads` at learning rate `lr`.
    public func step(params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, count: Int, lr: Double) {
        updates += 1
        let b1 = Float(beta1), b2 = Float(beta2), eps = Float(epsilon)
        let c1 = Float(1 / (1 - pow(beta1, Double(updates))))
        let c2 = Float(1 / (1 - pow(beta2, Double(updates))))
        let rate = Float(lr), decay = Float(lr * weightDecay)
        let m = self.m.pointer, v = self.v.pointer
        decayMask.withUnsafeBufferPointer { mask in
            for i in 0..<count {
                let g = grads[i]
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                let update = (m[i] * c1) / ((v[i] * c2).squareRoot() + eps)
                params[i] -= rate * update + decay * mask[i] * params[i]
            }
        }
    }
}

/// Scales `grads` so their global L2 norm is at most `maxNorm` (no-op when maxNorm ≤ 0).
/// Returns the norm before clipping.
@discardableResult
public func clipGlobalNorm(_ grads: UnsafeMutablePointer<Float>, count: Int, maxNorm: Double) -> Double {
    var sum = 0.0
    for i in 0..<count { sum += Double(grads[i]) * Double(grads[i]) }
    let norm = sum.squareRoot()
    if maxNorm > 0 && norm > maxNorm {
        let s = Float(maxNorm / norm)
        for i in 0..<count { grads[i] *= s }
    }
    return norm
}
