import Engine
import XCTest
@testable import Training

/// The analytic gradient of J = Σ_l ẽ_l·CE_l against central finite differences, in f64, for every
/// element of every parameter tensor of a tiny model.
final class GradientCheckTests: XCTestCase {
    static func tinyConfig(tied: Bool) -> ModelConfig {
        ModelConfig(hiddenSize: 8, intermediateSize: 12, layerCount: 3, headCount: 2, kvHeadCount: 1, headDim: 4,
                    rmsNormEps: 1e-5, vocabSize: 11, tieWordEmbeddings: tied, rope: RoPEParameters(theta: 100))
    }

    func check(tied: Bool) {
        let layout = ParameterLayout(config: Self.tinyConfig(tied: tied))
        let net = Network<Double>(layout: layout, batch: 2, length: 5, headChunk: 3)
        let params = Tensor<Double>(count: layout.count)
        layout.initialValues(into: params.pointer, seed: 7)
        // Larger weights than the initialiser's so every path carries a visible gradient.
        var rng = CounterRNG(seed: 3, stream: 1)
        for i in 0..<layout.count { params[i] += rng.nextNormal() * 0.3 }
        let tokens: [Int32] = [1, 4, 9, 2, 2, 10, 0, 3, 5, 7, 8, 6]
        // Sample 0 skips layer 1; sample 1 skips layer 2; exits after all three layers.
        let keep = [[true, true], [false, true], [true, false]]
        let weights = [0.2, 0.3, 0.5]
        func loss() -> Double {
            let ce = net.run(tokens: tokens, keep: keep, exitWeights: weights, params: params.pointer, grads: nil)
            return zip(ce, weights).reduce(0) { $0 + ($1.0 ?? 0) * $1.1 }
        }
        let grads = Tensor<Double>(count: layout.count)
        net.run(tokens: tokens, keep: keep, exitWeights: weights, params: params.pointer, grads: grads.pointer)

        let h = 1e-5
        for entry in layout.entries {
            var worst = 0.0, largest = 0.0
            for i in entry.offset..<(entry.offset + entry.count) {
                let saved = params[i]
                params[i] = saved + h
                let plus = loss()
                params[i] = saved - h
                let minus = loss()
                params[i] = saved
                let numeric = (plus - minus) / (2 * h)
                worst = max(worst, abs(numeric - grads[i]))
                largest = max(largest, abs(numeric))
            }
            XCTAssertGreaterThan(largest, 1e-6, "\(entry.name): no gradient reaches this tensor")
            XCTAssertLessThan(worst, 1e-7 + 1e-5 * largest, "\(entry.name): analytic and numeric gradients differ by \(worst) (largest \(largest))")
        }
    }

    func testEveryTensorUntiedHead() { check(tied: false) }
    func testEveryTensorTiedHead() { check(tied: true) }

    /// A dropped layer passes the residual through unchanged: its sample's output equals its input.
    func testDroppedLayerLeavesInputUnchanged() {
        let layout = ParameterLayout(config: Self.tinyConfig(tied: false))
        let net = Network<Float>(layout: layout, batch: 2, length: 5)
        let params = Tensor<Float>(count: layout.count)
        layout.initialValues(into: params.pointer, seed: 1)
        let tokens: [Int32] = [1, 4, 9, 2, 2, 10, 0, 3, 5, 7, 8, 6]
        net.run(tokens: tokens, keep: [[true, true], [false, true], [true, true]], exitWeights: [0, 0, 1], params: params.pointer, grads: nil)
        let hd = 8, rows = 5
        let input = net.states[1].input.pointer, output = net.states[2].input.pointer
        for i in 0..<rows * hd { XCTAssertEqual(input[i], output[i], "sample 0 went through dropped layer 1") }
        var changed = false
        for i in rows * hd..<2 * rows * hd where input[i] != output[i] { changed = true }
        XCTAssertTrue(changed, "sample 1 should have run layer 1")
    }
}
