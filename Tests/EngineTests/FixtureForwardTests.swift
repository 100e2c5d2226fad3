import TestFixtures
import Engine
import Foundation
import XCTest

/// The engine against the numbers Hugging Face transformers computed for the fixture models.
final class FixtureForwardTests: XCTestCase {
    func testLastPositionLogitsMatchTransformersAtEveryExit() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let expected = try Fixtures.expected(name)
            XCTAssertEqual(model.layerCount, expected.num_layers)
            let tolerance = Fixtures.logitTolerance(name)
            for prompt in expected.prompts {
                let exits = [("full", model.layerCount)] + expected.exit_layers.map { ("exit_\($0)", $0) }
                for (key, exit) in exits {
                    let reference = try XCTUnwrap(prompt.logits_last[key], "\(name) lacks logits \(key)")
                    let cache = model.makeCache(capacity: prompt.ids.count)
                    let h = model.makeActivations(capacity: prompt.ids.count)
                    let logits = model.makeLogits()
                    model.embed(prompt.ids, into: h)
                    model.forward(h, layers: 0..<exit, positions: 0..<prompt.ids.count, cache: cache)
                    model.exitLogits(h, rows: (prompt.ids.count - 1)..<prompt.ids.count, into: logits)
                    let row = logits.row(0)
                    XCTAssertEqual(row.count, reference.count)
                    var worst: Float = 0
                    for i in 0..<reference.count { worst = max(worst, abs(row[i] - reference[i])) }
                    XCTAssertLessThanOrEqual(worst, tolerance, "\(name) \(key) prompt \(prompt.text.debugDescription): max abs error \(worst)")
                }
            }
        }
    }
    // Greedy sequences against transformers: DecodingTests (every strategy through the decode loop).
}
