import Foundation

/// Precomputed rotary-embedding tables: cos and sin, each (maxPositions, headDim/2), row-major.
/// Computed as Hugging Face does — inverse frequencies and angle products in f32 — so positions
/// far into the sequence round the same way.
// `@unchecked Sendable`: the tables are filled in init and only read afterwards.
final class RoPETable: @unchecked Sendable {
    let halfDim: Int
    let maxPositions: Int
    let cos: FloatBuffer
    let sin: FloatBuffer

    init(parameters: RoPEParameters, headDim: Int, maxPositions: Int) {
        halfDim = headDim / 2
        self.maxPositions = maxPositions
        cos = FloatBuffer(count: maxPositions * halfDim)
        sin = FloatBuffer(count: maxPositions * halfDim)
        let invFreq = RoPETable.inverseFrequencies(parameters, headDim: headDim)
        for p in 0..<maxPositions {
            for i in 0..<halfDim {
                let angle = Float(p) * invFreq[i]
                cos[p * halfDim + i] = Float(Foundation.cos(Double(angle)))
                sin[p * halfDim + i] = Float(Foundation.sin(Double(angle)))
            }
        }
    }

    static func inverseFrequencies(_ parameters: RoPEParameters, headDim: Int) -> [Float] {
        let base = Float(parameters.theta)
        var inv = (0..<headDim / 2).map { i -> Float in 1 / Float(pow(Double(base), Double(Float(2 * i) / Float(headDim)))) }
        if case let .llama3(factor, lowFreqFactor, highFreqFactor, originalMax) = parameters.kind {
            // Llama 3.1's scaling: long wavelengths slowed by `factor`, short ones kept, and a
            // smooth blend between the two bands.
            let oldContext = Float(originalMax)
            let lowWavelen = oldContext / Float(lowFreqFactor)
            let highWavelen = oldContext / Float(highFreqFactor)
            inv = inv.map { f in
                let wavelen = 2 * Float.pi / f
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return f / Float(factor) }
                let smooth = (oldContext / wavelen - Float(lowFreqFactor)) / Float(highFreqFactor - lowFreqFactor)
                return (1 - smooth) * f / Float(factor) + smooth * f
            }
        }
        return inv
    }

    func cosRow(_ p: Int) -> UnsafeMutablePointer<Float> { cos.pointer + p * halfDim }
    func sinRow(_ p: Int) -> UnsafeMutablePointer<Float> { sin.pointer + p * halfDim }
}
