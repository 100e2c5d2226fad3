import Foundation

/// The LayerSkip recipe's per-step choices (DESIGN §1): which layers a sample skips and how the
/// exit losses are weighted. Layers are 0-based (l = 0 … L−1); steps t = 0 … T−1.
public struct LayerSkipSchedule: Sendable, Equatable, Codable {
    /// D(l): how the dropout rate rises with depth.
    public enum DepthScaling: String, Sendable, Codable, CaseIterable {
        /// exp(l·ln2/(L−1)) − 1: 0 at the first layer, 1 at the last (the paper's).
        case exp
        /// l/(L−1).
        case linear
        /// 1 for every layer.
        case uniform
    }
    /// S(t): how the dropout rate evolves over training.
    public enum TimeScaling: String, Sendable, Codable, CaseIterable {
        /// 1 (continual pretraining / fine-tuning).
        case constant
        /// exp(t·ln2/(T−1)) − 1: from 0 at the first step to 1 at the last (pretraining from scratch).
        case exp
    }
    public enum Curriculum: String, Sendable, Codable, CaseIterable {
        /// Every exit on at every step.
        case none
        /// Every R-th layer, the set shifting up by one layer each step; the last layer always on.
        case rotational
        /// Exits switched on from the last layer down to the first over the first half of training.
        case gradual
    }

    public var dropoutMax: Double = 0
    public var depthScaling: DepthScaling = .exp
    public var timeScaling: TimeScaling = .constant
    /// e_scale: 0 turns the early-exit loss off (only the last layer's loss remains).
    public var exitScale: Double = 0
    public var curriculum: Curriculum = .none
    /// R of the rotational curriculum.
    public var rotationPeriod: Int = 2
    /// α: the exits below the last learn from (1−α)·onehot(next token) + α·(the last exit's
    /// softmax) instead of the next token alone (`Network.run`). Not the paper's recipe (α = 0).
    /// On the default model, 700 continued steps at α = 0.9 raised agreement with the last layer by
    /// only 0.1–0.8 points over α = 0 (models/default/README.md).
    public var exitDistillation: Double = 0

    public init(dropoutMax: Double = 0, depthScaling: DepthScaling = .exp, timeScaling: TimeScaling = .constant,
                exitScale: Double = 0, curriculum: Curriculum = .none, rotationPeriod: Int = 2,
                exitDistillation: Double = 0) {
        self.dropoutMax = dropoutMax
        self.depthScaling = depthScaling
        self.timeScaling = timeScaling
        self.exitScale = exitScale
        self.curriculum = curriculum
        self.rotationPeriod = rotationPeriod
        self.exitDistillation = exitDistillation
    }

    // MARK: Layer dropout

    /// D(l) for layer l of L.
    public func depthFactor(layer l: Int, layers L: Int) -> Double {
        guard L > 1 else { return depthScaling == .uniform ? 1 : 0 }
        switch depthScaling {
        case .exp: return Foundation.exp(Double(l) * M_LN2 / Double(L - 1)) - 1
        case .linear: return Double(l) / Double(L - 1)
        case .uniform: return 1
        }
    }

    /// S(t) at step t of T.
    public func timeFactor(step t: Int, steps T: Int) -> Double {
        switch timeScaling {
        case .constant: return 1
        case .exp: return T > 1 ? Foundation.exp(Double(t) * M_LN2 / Double(T - 1)) - 1 : 1
        }
    }

    /// p(l,t) = S(t)·D(l)·p_max.
    public func dropoutRate(layer l: Int, layers L: Int, step t: Int, steps T: Int) -> Double {
        timeFactor(step: t, steps: T) * depthFactor(layer: l, layers: L) * dropoutMax
    }

    /// keep[l][b] for `samples` samples: layer l runs for sample b unless a uniform draw addressed
    /// by (step, sample index within the run, layer) falls below p(l,t). `sampleBase` numbers the
    /// micro-batch's first sample so each micro-batch of an accumulated step draws independently.
    public func keepMask(step t: Int, steps T: Int, layers L: Int, samples: Int, sampleBase: Int, seed: UInt64) -> [[Bool]] {
        (0..<L).map { l in
            let p = dropoutRate(layer: l, layers: L, step: t, steps: T)
            return (0..<samples).map { b in
                p <= 0 || CounterRNG.unit(seed: seed ^ 0xD50_0D50, UInt64(t), UInt64(sampleBase + b), UInt64(l)) >= p
            }
        }
    }

    // MARK: Early-exit loss

    /// C(t,l): is the exit after layer l on at step t?
    public func exitEnabled(layer l: Int, layers L: Int, step t: Int, steps T: Int) -> Bool {
        if l == L - 1 { return true }
        switch curriculum {
        case .none:
            return true
        case .rotational:
            let r = max(rotationPeriod, 1)
            return ((l - t) % r + r) % r == 0
        case .gradual:
            // k(t) exits are on — the deepest ones — growing from 1 at t = 0 to L at t = ⌈T/2⌉.
            let half = max((T + 1) / 2, 1)
            let on = min(L, 1 + (L - 1) * t / half)
            return l >= L - on
        }
    }

    /// e(l) before the curriculum and normalisation.
    public func rawExitWeight(layer l: Int, layers L: Int) -> Double {
        if l < L - 1 { return exitScale * Double(l * (l + 1) / 2) }
        return Double(L - 1) + exitScale * Double((L - 2) * (L - 1) / 2)
    }

    /// ẽ(t,l) = C(t,l)·e(l) / Σ_i C(t,i)·e(i), one per layer. Without early-exit loss (e_scale 0)
    /// this is 1 at the last layer and 0 elsewhere.
    public func exitWeights(layers L: Int, step t: Int, steps T: Int) -> [Double] {
        var w = (0..<L).map { l in exitEnabled(layer: l, layers: L, step: t, steps: T) ? rawExitWeight(layer: l, layers: L) : 0 }
        let total = w.reduce(0, +)
        // A one-layer model has e(L−1) = 0: its only loss gets all the weight.
        if total <= 0 { w = (0..<L).map { $0 == L - 1 ? 1 : 0 }; return w }
        return w.map { $0 / total }
    }
}
