import Foundation

/// The acceptance rules of speculative decoding, on plain distributions: what makes a verified
/// round exact. Pure functions, so tests drive them with fixed numbers.
public enum SpeculativeAcceptance {
    /// Greedy: draft i is kept while it equals the full model's argmax at i. Returns how many
    /// leading drafts are kept.
    public static func greedyPrefix(drafts: some Collection<Int>, targets: some Collection<Int>) -> Int {
        var kept = 0
        for (draft, target) in zip(drafts, targets) {
            guard draft == target else { break }
            kept += 1
        }
        return kept
    }

    /// Sampling: draft x, drawn from q, is kept with probability min(1, p(x)/q(x)); `u` is a
    /// uniform draw in [0, 1). (q(x) = 0 cannot have been drawn; it is rejected.)
    public static func keeps(_ x: Int, p: UnsafeMutableBufferPointer<Float>, q: UnsafeMutableBufferPointer<Float>, u: Double) -> Bool {
        Double(q[x]) > 0 && u < min(1, Double(p[x]) / Double(q[x]))
    }

    /// A proposal that is a function of the history alone (prompt lookup): its q is one-hot on x,
    /// so min(1, p(x)/q(x)) is p(x).
    public static func keepsProposal(_ x: Int, p: UnsafeMutableBufferPointer<Float>, u: Double) -> Bool {
        u < Double(p[x])
    }

    /// `residual` for a one-hot q on x: max(0, p − q) is p with p(x) set to 0, renormalised. (If
    /// p(x) = 1 the proposal is always kept and this is never reached.)
    public static func residual(p: UnsafeMutableBufferPointer<Float>, rejecting x: Int) {
        p[x] = 0
        var total = 0.0
        for v in p { total += Double(v) }
        guard total > 0 else { return }
        let scale = Float(1 / total)
        for j in 0..<p.count { p[j] *= scale }
    }

    /// The distribution to draw from at the first rejection: normalize(max(0, p − q)), written
    /// over p. If p ≤ q everywhere (only possible through rounding when p == q), p is left as it
    /// is, which is then the right distribution. Together with `keeps`, the token that comes out
    /// is distributed exactly as p (Leviathan et al. 2023, Chen et al. 2023).
    public static func residual(p: UnsafeMutableBufferPointer<Float>, q: UnsafeMutableBufferPointer<Float>) {
        precondition(p.count == q.count)
        var total = 0.0
        for j in 0..<p.count { total += Double(max(0, p[j] - q[j])) }
        guard total > 0 else { return }
        let scale = Float(1 / total)
        for j in 0..<p.count { p[j] = max(0, p[j] - q[j]) * scale }
    }
}
