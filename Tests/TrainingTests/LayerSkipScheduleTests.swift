import XCTest
@testable import Training

final class LayerSkipScheduleTests: XCTestCase {
    /// L = 4, e_scale = 1, curriculum none: e = [0, 1, 3, 3 + (0+1+2)] = [0, 1, 3, 6], Σ = 10.
    func testExitWeightsHandComputed() {
        let s = LayerSkipSchedule(exitScale: 1)
        let w = s.exitWeights(layers: 4, step: 0, steps: 100)
        XCTAssertEqual(w, [0, 0.1, 0.3, 0.6].map { $0 }, accuracy: 1e-12)
        // e_scale = 0.5: e = [0, 0.5, 1.5, 3 + 1.5] → Σ = 6.5.
        let half = LayerSkipSchedule(exitScale: 0.5).exitWeights(layers: 4, step: 5, steps: 100)
        XCTAssertEqual(half, [0, 0.5 / 6.5, 1.5 / 6.5, 4.5 / 6.5], accuracy: 1e-12)
        // No early-exit loss: all weight on the last layer.
        XCTAssertEqual(LayerSkipSchedule().exitWeights(layers: 4, step: 0, steps: 10), [0, 0, 0, 1], accuracy: 0)
    }

    /// Rotational, R = 2, L = 4 (e_scale 1, e = [0,1,3,6]): step 0 enables layers 0, 2 (+3), step 1 layers 1, 3.
    func testRotationalCurriculum() {
        let s = LayerSkipSchedule(exitScale: 1, curriculum: .rotational, rotationPeriod: 2)
        let on0 = (0..<4).filter { s.exitEnabled(layer: $0, layers: 4, step: 0, steps: 10) }
        let on1 = (0..<4).filter { s.exitEnabled(layer: $0, layers: 4, step: 1, steps: 10) }
        XCTAssertEqual(on0, [0, 2, 3])
        XCTAssertEqual(on1, [1, 3])
        XCTAssertEqual(s.exitWeights(layers: 4, step: 0, steps: 10), [0, 0, 3.0 / 9, 6.0 / 9], accuracy: 1e-12)
        XCTAssertEqual(s.exitWeights(layers: 4, step: 1, steps: 10), [0, 1.0 / 7, 0, 6.0 / 7], accuracy: 1e-12)
        // R = 3 over 7 layers, step 4: layers with (l − 4) mod 3 = 0 → 1, 4, and the last (6).
        let r3 = LayerSkipSchedule(exitScale: 1, curriculum: .rotational, rotationPeriod: 3)
        XCTAssertEqual((0..<7).filter { r3.exitEnabled(layer: $0, layers: 7, step: 4, steps: 10) }, [1, 4, 6])
    }

    /// Gradual over T = 10 steps, L = 4: one exit at step 0, the deepest exits first, all from step 5.
    func testGradualCurriculum() {
        let s = LayerSkipSchedule(exitScale: 1, curriculum: .gradual)
        func on(_ t: Int) -> [Int] { (0..<4).filter { s.exitEnabled(layer: $0, layers: 4, step: t, steps: 10) } }
        XCTAssertEqual(on(0), [3])
        XCTAssertEqual(on(2), [2, 3])      // 1 + 3·2/5 = 2 exits
        XCTAssertEqual(on(4), [1, 2, 3])   // 1 + 12/5 = 3
        XCTAssertEqual(on(5), [0, 1, 2, 3])
        XCTAssertEqual(on(9), [0, 1, 2, 3])
    }

    func testDropoutRateFormula() {
        let s = LayerSkipSchedule(dropoutMax: 0.2, depthScaling: .exp, timeScaling: .exp)
        // D(l) = 2^(l/(L−1)) − 1, S(t) = 2^(t/(T−1)) − 1.
        XCTAssertEqual(s.dropoutRate(layer: 0, layers: 5, step: 9, steps: 10), 0, accuracy: 1e-15)
        XCTAssertEqual(s.dropoutRate(layer: 4, layers: 5, step: 9, steps: 10), 0.2, accuracy: 1e-12)
        XCTAssertEqual(s.dropoutRate(layer: 2, layers: 5, step: 9, steps: 10), 0.2 * (2.0.squareRoot() - 1), accuracy: 1e-12)
        XCTAssertEqual(s.dropoutRate(layer: 4, layers: 5, step: 0, steps: 10), 0, accuracy: 1e-15)
        XCTAssertEqual(LayerSkipSchedule(dropoutMax: 0.3, depthScaling: .linear).dropoutRate(layer: 1, layers: 4, step: 0, steps: 1), 0.1, accuracy: 1e-12)
        XCTAssertEqual(LayerSkipSchedule(dropoutMax: 0.3, depthScaling: .uniform).dropoutRate(layer: 0, layers: 4, step: 0, steps: 1), 0.3, accuracy: 1e-12)
    }

    /// The observed skip frequency per layer over many samples is within 4σ of p(l,t).
    func testDropoutFrequenciesMatchRates() {
        for scaling in LayerSkipSchedule.DepthScaling.allCases {
            let s = LayerSkipSchedule(dropoutMax: 0.5, depthScaling: scaling, timeScaling: .exp)
            let (L, T, t, n) = (6, 100, 70, 20_000)
            let keep = s.keepMask(step: t, steps: T, layers: L, samples: n, sampleBase: 0, seed: 42)
            for l in 0..<L {
                let p = s.dropoutRate(layer: l, layers: L, step: t, steps: T)
                let observed = Double(keep[l].filter { !$0 }.count) / Double(n)
                let sigma = (p * (1 - p) / Double(n)).squareRoot()
                XCTAssertEqual(observed, p, accuracy: 4 * sigma + 1e-12, "\(scaling) layer \(l)")
            }
            // Different micro-batches of one step draw differently.
            XCTAssertNotEqual(s.keepMask(step: t, steps: T, layers: L, samples: 64, sampleBase: 0, seed: 42),
                              s.keepMask(step: t, steps: T, layers: L, samples: 64, sampleBase: 64, seed: 42))
        }
    }

    func testLearningRateSchedule() {
        let lr = LearningRateSchedule(peak: 1e-3, minRate: 1e-4, warmupSteps: 10, totalSteps: 110)
        XCTAssertEqual(lr.rate(step: 0), 1e-4, accuracy: 1e-15)
        XCTAssertEqual(lr.rate(step: 9), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(lr.rate(step: 10), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(lr.rate(step: 109), 1e-4, accuracy: 1e-12)
        XCTAssertEqual(lr.rate(step: 59) + lr.rate(step: 60), 1.1e-3, accuracy: 2e-5)
    }
}

func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, "\(a) vs \(b)", file: file, line: line) }
}
