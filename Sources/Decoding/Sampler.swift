import CKernels
import Engine
import Foundation

/// Turns logits into a next-token distribution (temperature, top-k, top-p) and draws from it with
/// a seeded generator. Buffers are sized to the vocabulary once; sampling a token allocates nothing.
///
/// Speculative sampling needs the *distributions*, not just a draw: `distribution(_:into:)` writes
/// the full, normalised probability vector (zeros outside the kept set) that `sample(_:)` draws from,
/// so the draft's q and the full model's p go through exactly the same transform.
public final class Sampler {
    public let parameters: SamplingParameters
    public let seed: UInt64
    private var rng: SplitMix64
    /// (vocab): candidate indices for top-k / top-p selection.
    private var order: [Int32]

    public init(parameters: SamplingParameters, vocabSize: Int) {
        self.parameters = parameters
        seed = parameters.seed ?? UInt64.random(in: 0...UInt64.max)
        rng = SplitMix64(seed: seed)
        order = [Int32](repeating: 0, count: vocabSize)
    }

    /// Uniform in [0, 1).
    public func uniform() -> Double {
        Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The token with the largest logit (the first on ties) — what greedy decoding takes.
    public static func argmax(_ logits: UnsafeMutableBufferPointer<Float>) -> Int {
        Int(ck_argmax(logits.baseAddress!, Int32(logits.count)))
    }

    /// Next token: argmax when greedy, else a draw from `distribution`. Overwrites `logits`.
    public func sample(_ logits: UnsafeMutableBufferPointer<Float>) -> Int {
        if parameters.isGreedy { return Sampler.argmax(logits) }
        distribution(logits, into: logits)
        return draw(from: logits)
    }

    /// The sampling distribution of `logits` (may be the same buffer). Greedy gives a one-hot
    /// vector at the argmax, which makes the speculative acceptance rule reduce to exact matching.
    public func distribution(_ logits: UnsafeMutableBufferPointer<Float>, into probs: UnsafeMutableBufferPointer<Float>) {
        let n = logits.count
        precondition(probs.count == n && n <= order.count)
        if parameters.isGreedy {
            let best = Sampler.argmax(logits)
            for i in 0..<n { probs[i] = 0 }
            probs[best] = 1
            return
        }
        let invT = Float(1 / parameters.temperature)
        var maxLogit = -Float.infinity
        for i in 0..<n where logits[i] > maxLogit { maxLogit = logits[i] }
        // Softmax in f64 accumulation: the tails of a 128k vocabulary add up.
        var sum = 0.0
        for i in 0..<n {
            let e = logits[i] == -.infinity ? 0 : Float(Foundation.exp(Double((logits[i] - maxLogit) * invT)))
            probs[i] = e
            sum += Double(e)
        }
        let inv = Float(1 / sum)
        for i in 0..<n { probs[i] *= inv }

        let k = parameters.topK > 0 ? min(parameters.topK, n) : n
        guard k < n || parameters.topP < 1 else { return }
        // Rank tokens by probability (ties: lower id first), keep a prefix, renormalise.
        order.withUnsafeMutableBufferPointer { idx in
            for i in 0..<n { idx[i] = Int32(i) }
            var ranked = UnsafeMutableBufferPointer(rebasing: idx[0..<n])
            let byProbability: (Int32, Int32) -> Bool = { a, b in
                let pa = probs[Int(a)], pb = probs[Int(b)]
                return pa != pb ? pa > pb : a < b
            }
            ranked.sort(by: byProbability)
            var keep = k
            if parameters.topP < 1 {
                var cumulative = 0.0
                for r in 0..<k {
                    cumulative += Double(probs[Int(ranked[r])])
                    if cumulative >= parameters.topP { keep = r + 1; break }
                }
            }
            var kept = 0.0
            for r in 0..<keep { kept += Double(probs[Int(ranked[r])]) }
            for r in keep..<n { probs[Int(ranked[r])] = 0 }
            let scale = Float(1 / kept)
            for r in 0..<keep { probs[Int(ranked[r])] *= scale }
        }
    }

    /// A draw from a normalised distribution (inverse CDF; falls back to the last non-zero entry
    /// if rounding leaves the total a hair under the uniform draw).
    public func draw(from probs: UnsafeMutableBufferPointer<Float>) -> Int {
        let u = uniform()
        var cumulative = 0.0
        var last = 0
        for i in 0..<probs.count where probs[i] > 0 {
            cumulative += Double(probs[i])
            last = i
            if u < cumulative { return i }
        }
        return last
    }
}
