import Engine
import XCTest
@testable import Training

final class KernelAndEvaluationTests: XCTestCase {
    /// The vectorised f32 softmax and SwiGLU kernels agree with the f64 reference loops.
    func testVectorisedKernelsMatchReference() {
        var rng = CounterRNG(seed: 11, stream: 2)
        let n = 1037
        var x = (0..<n).map { _ in Float(rng.nextNormal() * 8) }
        var xd = x.map(Double.init)
        let lse = x.withUnsafeMutableBufferPointer { Float.softmax($0.baseAddress!, n, scale: 0.5) }
        let lsed = xd.withUnsafeMutableBufferPointer { Double.softmax($0.baseAddress!, n, scale: 0.5) }
        XCTAssertEqual(Double(lse), lsed, accuracy: 1e-5 * abs(lsed))
        for i in 0..<n { XCTAssertEqual(Double(x[i]), xd[i], accuracy: 1e-6 * 0.5 + 2e-6 * xd[i]) }

        let g = (0..<n).map { _ in Float(rng.nextNormal() * 4) }, u = (0..<n).map { _ in Float(rng.nextNormal()) }
        let d = (0..<n).map { _ in Float(rng.nextNormal()) }
        var act = [Float](repeating: 0, count: n), dg = act, du = act
        var actD = [Double](repeating: 0, count: n), dgD = actD, duD = actD
        Float.swigluForward(g, u, &act, n)
        Float.swigluBackward(g, u, d, &dg, &du, n)
        Double.swigluForward(g.map(Double.init), u.map(Double.init), &actD, n)
        Double.swigluBackward(g.map(Double.init), u.map(Double.init), d.map(Double.init), &dgD, &duD, n)
        for i in 0..<n {
            XCTAssertEqual(Double(act[i]), actD[i], accuracy: 1e-5 * (1 + abs(actD[i])))
            XCTAssertEqual(Double(dg[i]), dgD[i], accuracy: 1e-5 * (1 + abs(dgD[i])))
            XCTAssertEqual(Double(du[i]), duD[i], accuracy: 1e-5 * (1 + abs(duD[i])))
        }
    }

    /// Evaluation through the engine gives, per exit, the trainer's own validation cross-entropy on the
    /// same sequences; the last exit agrees with itself everywhere; the chart has a line per metric.
    func testEvaluationMatchesTrainerValidation() throws {
        let dir = TrainingFixtures.temporaryDirectory("eval")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let corpus = TrainingFixtures.writeCorpus(in: dir)
        let out = dir.appendingPathComponent("model")
        let trainer = try Trainer(config: TrainingConfig(mapping: TrainingFixtures.mapping(corpus: corpus, output: out, steps: 10), file: "t.yaml"))
        for _ in 0..<10 { trainer.trainStep() }
        try trainer.export(to: out, dtype: .f32)
        let val = try XCTUnwrap(trainer.validate())
        let model = try LlamaModel(directory: out)
        let e = Evaluator.evaluate(model: model, sequences: trainer.validationSequences, speculations: 4, name: "m")
        XCTAssertEqual(e.tokens, trainer.validationSequences.count * 32)
        for l in 0..<3 {
            XCTAssertEqual(e.layers[l].loss, val[l], accuracy: 1e-3, "exit \(l + 1)")
            XCTAssertEqual(e.layers[l].perplexity, Foundation.exp(e.layers[l].loss), accuracy: 1e-9)
        }
        // The engine's own forward and exit head give the same statistics as the sgemm path.
        let viaEngine = Evaluator.evaluate(model: model, sequences: trainer.validationSequences, speculations: 4, name: "m", useEngine: true)
        XCTAssertEqual(viaEngine.tokens, e.tokens)
        for l in 0..<3 {
            XCTAssertEqual(viaEngine.layers[l].loss, e.layers[l].loss, accuracy: 1e-4)
            XCTAssertEqual(viaEngine.layers[l].accuracy, e.layers[l].accuracy, accuracy: 0.02)
            XCTAssertEqual(viaEngine.layers[l].agreement, e.layers[l].agreement, accuracy: 0.02)
        }
        XCTAssertEqual(e.layers[2].agreement, 1)
        XCTAssertEqual(e.layers[2].acceptanceRate, 1)
        XCTAssertEqual(e.layers[2].tokensPerRound, 5, accuracy: 0.5)
        XCTAssertLessThanOrEqual(e.layers[0].agreement, 1)
        let svg = Evaluator.svgChart(e, title: "m <test>")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 3)
        XCTAssertTrue(svg.contains("m &lt;test&gt;"))
    }
}
