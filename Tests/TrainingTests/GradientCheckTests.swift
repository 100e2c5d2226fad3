import Foundation
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

        compareWithCentralDifferences(layout: layout, params: params, grads: grads, loss: loss)
    }

    /// With self-distillation, the gradient is that of J = Σ_l ẽ_l·CE_l where each exit below the last
    /// is scored against (1−α)·onehot + α·p, p the last exit's softmax at the unperturbed parameters
    /// held fixed. The loss is computed here from `exitLogits`, not by the head under test.
    func testDistillationGradientHoldsTheLastExitFixed() {
        let config = Self.tinyConfig(tied: true), vocab = config.vocabSize, rows = 10
        let layout = ParameterLayout(config: config)
        let net = Network<Double>(layout: layout, batch: 2, length: 5, headChunk: 4)
        let params = Tensor<Double>(count: layout.count)
        layout.initialValues(into: params.pointer, seed: 5)
        var rng = CounterRNG(seed: 9, stream: 2)
        for i in 0..<layout.count { params[i] += rng.nextNormal() * 0.3 }
        let tokens: [Int32] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
        let targets = [1, 4, 1, 5, 9, 6, 5, 3, 5, 8]
        let keep = [[true, true], [true, false], [true, true]]
        let weights = [0.3, 0.2, 0.5], alpha = 0.7
        let noExits = [0.0, 0, 1]
        func logits(after l: Int) -> [Double] {
            net.run(tokens: tokens, keep: keep, exitWeights: noExits, params: params.pointer, grads: nil)
            return net.exitLogits(after: l, params: params.pointer)
        }
        func softmax(_ z: ArraySlice<Double>) -> [Double] {
            let m = z.max()!, e = z.map { Foundation.exp($0 - m) }, s = e.reduce(0, +)
            return e.map { $0 / s }
        }
        let top = logits(after: 2)
        let teacher = (0..<rows).map { softmax(top[($0 * vocab)..<(($0 + 1) * vocab)]) }
        func loss() -> Double {
            var j = 0.0
            for l in 0..<3 {
                let z = logits(after: l)
                for r in 0..<rows {
                    let row = z[(r * vocab)..<((r + 1) * vocab)], m = row.max()!
                    let lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
                    let soft = (0..<vocab).reduce(0) { $0 + teacher[r][$1] * z[r * vocab + $1] }
                    let scored = l < 2 ? (1 - alpha) * z[r * vocab + targets[r]] + alpha * soft : z[r * vocab + targets[r]]
                    j += weights[l] * (lse - scored) / Double(rows)
                }
            }
            return j
        }
        let grads = Tensor<Double>(count: layout.count)
        let ce = net.run(tokens: tokens, keep: keep, exitWeights: weights, params: params.pointer, grads: grads.pointer,
                         distillation: alpha)
        // The reported losses stay the data's cross-entropy.
        let plain = net.run(tokens: tokens, keep: keep, exitWeights: weights, params: params.pointer, grads: nil)
        for l in 0..<3 { XCTAssertEqual(ce[l]!, plain[l]!, accuracy: 1e-12, "exit \(l)'s reported loss") }

        compareWithCentralDifferences(layout: layout, params: params, grads: grads, loss: loss)
    }

    /// Every element of `grads` against (loss(θ+h) − loss(θ−h)) / 2h, perturbing `params` in place.
    func compareWithCentralDifferences(layout: ParameterLayout, params: Tensor<Double>, grads: Tensor<Double>,
                                       loss: () -> Double) {
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
