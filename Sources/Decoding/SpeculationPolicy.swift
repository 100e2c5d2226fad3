import Foundation

/// What a pass costs as a function of its rows: c(n) = time of a pass of n one-row segments
/// through every layer and the head ÷ that of one row (c(1) = 1, c(0) = 0). Bandwidth-bound
/// passes are flat (c ≈ 1 for a few rows), compute-bound ones grow linearly; batching and
/// speculation both spend that headroom.
public struct PassCostCurve: Sendable, Equatable {
    /// costs[n − 1] = c(n) for the measured n = 1...costs.count.
    public var costs: [Double]
    /// Share of a full pass spent in the decoder layers (the rest is the exit head).
    public var layerShare: Double

    public init(costs: [Double], layerShare: Double) {
        precondition(!costs.isEmpty && layerShare > 0 && layerShare <= 1)
        self.costs = costs
        self.layerShare = layerShare
    }

    /// c(n), extended beyond the measured range by the slope of its last two points.
    public func cost(_ n: Int) -> Double {
        if n <= 0 { return 0 }
        if n <= costs.count { return costs[n - 1] }
        let last = costs[costs.count - 1]
        let slope = costs.count > 1 ? max(0, last - costs[costs.count - 2]) : last
        return last + slope * Double(n - costs.count)
    }
}

/// The load-aware choice of the draft length d for a batch (DESIGN §2b). All self-speculative
/// sequences of a batch run their rounds in lockstep: d draft passes (layers 0..<E only, unless
/// other sequences need the rest), then one verification pass; sequences of other strategies take
/// one token per pass through every layer. A round then costs
///   T(d) = d·P(A+S, A, A+S) + P(A+S, A + S(d+1), A + S(d+1))
/// where P(n_low, n_high, n_head) = share·[E/L·c(n_low) + (L−E)/L·c(n_high)] + (1 − share)·c(n_head)
/// (A other sequences, S speculating ones), and commits A(d+1) + S·τ(d) tokens, τ(d) =
/// (1 − α^(d+1)) / (1 − α) for acceptance α. The d in 0...maxDrafts with the most tokens per unit
/// of time wins; d = 0 is plain autoregressive decoding.
public enum SpeculationPolicy {
    public static func tokensPerRound(d: Int, acceptance α: Double) -> Double {
        let a = min(max(α, 0), 0.999)
        return (1 - pow(a, Double(d + 1))) / (1 - a)
    }

    /// Committed tokens per unit of time (one one-row pass = 1) with draft length d (0: none).
    public static func rate(curve: PassCostCurve, speculating S: Int, others A: Int, exitLayer E: Int, layers L: Int,
                            acceptance: Double, draftLength d: Int) -> Double {
        precondition(S >= 1 && A >= 0 && E >= 1 && E < L && d >= 0)
        let low = Double(E) / Double(L), high = 1 - low
        func pass(_ nLow: Int, _ nHigh: Int, _ nHead: Int) -> Double {
            curve.layerShare * (low * curve.cost(nLow) + high * curve.cost(nHigh)) + (1 - curve.layerShare) * curve.cost(nHead)
        }
        if d == 0 { return Double(A + S) / pass(A + S, A + S, A + S) }
        let time = Double(d) * pass(A + S, A, A + S) + pass(A + S, A + S * (d + 1), A + S * (d + 1))
        let tokens = Double(A * (d + 1)) + Double(S) * tokensPerRound(d: d, acceptance: acceptance)
        return tokens / time
    }

    public static func bestDraftLength(curve: PassCostCurve, speculating S: Int, others A: Int, exitLayer E: Int, layers L: Int,
                                       acceptance: Double, maxDrafts: Int) -> Int {
        precondition(maxDrafts >= 0)
        var best = 0
        var bestRate = rate(curve: curve, speculating: S, others: A, exitLayer: E, layers: L, acceptance: acceptance, draftLength: 0)
        if maxDrafts == 0 { return 0 }
        for d in 1...maxDrafts {
            let r = rate(curve: curve, speculating: S, others: A, exitLayer: E, layers: L, acceptance: acceptance, draftLength: d)
            if r > bestRate * 1.0001 {
                best = d
                bestRate = r
            }
        }
        return best
    }
}
