import Foundation

/// Counter-based randomness: every random decision of a run is a pure function of (seed, stream,
/// counter), so a resumed run draws exactly what the uninterrupted one would have drawn without
/// any generator state in the checkpoint beyond the step and data position.
public struct CounterRNG: Sendable {
    public private(set) var seed: UInt64
    public private(set) var stream: UInt64
    public private(set) var counter: UInt64 = 0

    public init(seed: UInt64, stream: UInt64) {
        self.seed = seed
        self.stream = stream
    }

    /// SplitMix64's finaliser over a mix of the three inputs.
    public static func hash(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        var z = a &* 0x9E37_79B9_7F4A_7C15 ^ (b &+ 0x632B_E59B_D9B4_E019) &* 0xBF58_476D_1CE4_E5B9 ^ c &* 0x94D0_49BB_1331_11EB
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        counter &+= 1
        return Self.hash(seed, stream, counter)
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Standard normal (Box–Muller; one of the pair is discarded for simplicity).
    public mutating func nextNormal() -> Double {
        let u1 = max(nextUnit(), 1e-300)
        let u2 = nextUnit()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    /// A uniform draw in [0, 1) addressed by three indices, independent of any other draw.
    public static func unit(seed: UInt64, _ a: UInt64, _ b: UInt64, _ c: UInt64) -> Double {
        let h = hash(hash(seed, a, b), c, 0xD1B5_4A32_D192_ED03)
        return Double(h >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }
}
