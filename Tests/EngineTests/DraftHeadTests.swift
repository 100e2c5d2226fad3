import TestFixtures
import Engine
import Foundation
import XCTest

/// The int8 LM-head copy: close to the exact head (per-row max error bounded by the quantisation
/// step times the activations' L1 norm) and usually with the same argmax.
final class DraftHeadTests: XCTestCase {
    func testInt8HeadApproximatesTheExactHead() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let expected = try Fixtures.expected(name)
            var sameArgmax = 0
            for prompt in expected.prompts {
                let n = prompt.ids.count
                let h = model.makeActivations(capacity: n)
                let cache = model.makeCache(capacity: n)
                model.embed(prompt.ids, into: h)
                model.forward(h, layers: 0..<model.layerCount, positions: 0..<n, cache: cache)
                let exact = model.makeLogits(), approx = model.makeLogits()
                model.exitLogits(h, rows: (n - 1)..<n, into: exact)
                model.exitLogits(h, rows: (n - 1)..<n, into: approx, head: .int8)
                let e = Array(exact.row(0)), a = Array(approx.row(0))
                let spread = (e.max()! - e.min()!)
                let worst = zip(e, a).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(worst, 0.02 * spread, "\(name): int8 head error \(worst) vs logit spread \(spread)")
                if e.firstIndex(of: e.max()!) == a.firstIndex(of: a.max()!) { sameArgmax += 1 }
            }
            XCTAssertGreaterThanOrEqual(sameArgmax, expected.prompts.count - 1, name)
            XCTAssertEqual(model.int8Head.byteCount, model.config.vocabSize * (model.config.hiddenSize + 4))
        }
    }
}
