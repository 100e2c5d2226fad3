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

/// What one draft row reads, relative to the model's own weights: the draft precision of layers
/// 0..<E and of the head, and a pruned draft head's share of the vocabulary. Drafts of the model's
/// own layers (`layers == 1`) leave exact states at layer E, which verification continues from;
/// approximate ones make verification run the round's rows through layers 0..<E again.
public struct DraftReads: Sendable, Equatable {
    /// Bytes read in layers 0..<E per weight ÷ the model's own (1: exact drafts; 1/2: int8 copies of bf16).
    public var layers: Double
    /// Bytes of the draft head ÷ the full head's (K/vocab for a pruned head, times its precision's share).
    public var head: Double
    public init(layers: Double, head: Double) {
        precondition(layers > 0 && layers <= 1 && head > 0 && head <= 1)
        self.layers = layers
        self.head = head
    }
    public static let exact = DraftReads(layers: 1, head: 1)
    public var reusesExitStates: Bool { layers == 1 }
}

/// The load-aware choice of the draft length d for a batch (DESIGN §2b). All self-speculative
/// sequences of a batch run their rounds in lockstep: d draft passes (layers 0..<E only, unless
/// other sequences need the rest), then one verification pass; sequences of other strategies take
/// one token per pass through every layer. With A other sequences and S speculating ones, and
/// P(n_low, n_high, n_head) = share·[E/L·n_low + (L−E)/L·n_high] + (1 − share)·n_head for the
/// cost of a pass whose parts carry those costs (c(n) for n rows of the model's own weights;
/// a draft row's part is scaled by what it reads, `DraftReads`: c(A) + r·c(S) when r < 1), a round costs
///   T(d) = d·P(low: A+S rows, high: A, head: A+S) + P(low: A+S, high: A + S(d+1), head: A + S(d+1))
/// (the verification's low part is A + S(d+1) rows when drafts were approximate), and commits
/// A(d+1) + S·τ(d) tokens, τ(d) = (1 − α^(d+1)) / (1 − α) for acceptance α. The d in 0...maxDrafts
/// with the most tokens per unit of time wins; d = 0 is plain autoregressive decoding.
public enum SpeculationPolicy {
    public static func tokensPerRound(d: Int, acceptance α: Double) -> Double {
        let a = min(max(α, 0), 0.999)
        return (1 - pow(a, Double(d + 1))) / (1 - a)
    }

    /// Committed tokens per unit of time (one one-row pass = 1) with draft length d (0: none).
    public static func rate(curve: PassCostCurve, speculating S: Int, others A: Int, exitLayer E: Int, layers L: Int,
                            acceptance: Double, draftLength d: Int, draftReads reads: DraftReads = .exact) -> Double {
        precondition(S >= 1 && A >= 0 && E >= 1 && E < L && d >= 0)
        let low = Double(E) / Double(L), high = 1 - low
        func pass(_ cLow: Double, _ cHigh: Double, _ cHead: Double) -> Double {
            curve.layerShare * (low * cLow + high * cHigh) + (1 - curve.layerShare) * cHead
        }
        /// A part that A rows read at the model's weights and S draft rows at share r of them.
        func drafting(_ r: Double) -> Double { r == 1 ? curve.cost(A + S) : curve.cost(A) + r * curve.cost(S) }
        let all = curve.cost(A + S)
        if d == 0 { return Double(A + S) / pass(all, all, all) }
        let verified = curve.cost(A + S * (d + 1))
        let time = Double(d) * pass(drafting(reads.layers), curve.cost(A), drafting(reads.head))
            + pass(reads.reusesExitStates ? all : verified, verified, verified)
        let tokens = Double(A * (d + 1)) + Double(S) * tokensPerRound(d: d, acceptance: acceptance)
        return tokens / time
    }

    public static func bestDraftLength(curve: PassCostCurve, speculating S: Int, others A: Int, exitLayer E: Int, layers L: Int,
                                       acceptance: Double, maxDrafts: Int, draftReads reads: DraftReads = .exact) -> Int {
        precondition(maxDrafts >= 0)
        var best = 0
        var bestRate = rate(curve: curve, speculating: S, others: A, exitLayer: E, layers: L, acceptance: acceptance, draftLength: 0,
                            draftReads: reads)
        if maxDrafts == 0 { return 0 }
        for d in 1...maxDrafts {
            let r = rate(curve: curve, speculating: S, others: A, exitLayer: E, layers: L, acceptance: acceptance, draftLength: d,
                         draftReads: reads)
            if r > bestRate * 1.0001 {
                best = d
                bestRate = r
            }
        }
        return best
    }
}
