import TestFixtures
import Engine
import Foundation
import XCTest

/// Invariants the decoding strategies rely on: one multi-position pass equals the same positions
/// one at a time; a layer range can be split anywhere; truncating the cache forgets cleanly.
final class ForwardInvariantTests: XCTestCase {
    let tokens = [0, 17, 250, 3, 99, 42, 400, 7, 8, 300, 12, 5]

    func lastLogits(_ model: LlamaModel, _ h: Activations, row: Int) -> [Float] {
        let logits = model.makeLogits()
        model.exitLogits(h, rows: row..<(row + 1), into: logits)
        return Array(logits.row(0))
    }

    func assertClose(_ a: [Float], _ b: [Float], _ tolerance: Float, _ message: String, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, line: line)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, tolerance, "\(message): max abs difference \(worst)", line: line)
    }

    func testMultiPositionPassEqualsSinglePositionPasses() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let n = tokens.count
            // All at once.
            let cacheA = model.makeCache(capacity: n)
            let hA = model.makeActivations(capacity: n)
            model.embed(tokens, into: hA)
            model.forward(hA, layers: 0..<model.layerCount, positions: 0..<n, cache: cacheA)
            // One at a time.
            let cacheB = model.makeCache(capacity: n)
            let hB = model.makeActivations(capacity: 1)
            for (p, t) in tokens.enumerated() {
                model.embed([t], into: hB)
                model.forward(hB, layers: 0..<model.layerCount, positions: p..<(p + 1), cache: cacheB)
                assertClose(lastLogits(model, hA, row: p), lastLogits(model, hB, row: 0), 2e-4, "\(name) position \(p)")
            }
            XCTAssertEqual(cacheA.lengths, Array(repeating: n, count: model.layerCount))
            XCTAssertEqual(cacheB.lengths, cacheA.lengths)
        }
    }

    func testSplittingTheLayerRangeChangesNothing() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))
        let n = tokens.count
        let whole = model.makeActivations(capacity: n)
        let cacheWhole = model.makeCache(capacity: n)
        model.embed(tokens, into: whole)
        model.forward(whole, layers: 0..<model.layerCount, positions: 0..<n, cache: cacheWhole)
        for split in 1..<model.layerCount {
            let h = model.makeActivations(capacity: n)
            let cache = model.makeCache(capacity: n)
            model.embed(tokens, into: h)
            model.forward(h, layers: 0..<split, positions: 0..<n, cache: cache)
            XCTAssertEqual(cache.lengths, (0..<model.layerCount).map { $0 < split ? n : 0 })
            model.forward(h, layers: split..<model.layerCount, positions: 0..<n, cache: cache)
            XCTAssertEqual(lastLogits(model, h, row: n - 1), lastLogits(model, whole, row: n - 1), "split at \(split)")
        }
    }

    func testTruncationForgetsRejectedPositions() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        let cache = model.makeCache(capacity: 32)
        let h = model.makeActivations(capacity: 16)
        // Fill 8 positions, then write 4 "rejected" tokens, truncate, and continue with others.
        model.embed(tokens.prefix(8), into: h)
        model.forward(h, layers: 0..<model.layerCount, positions: 0..<8, cache: cache)
        model.embed([500, 501, 502, 503], into: h)
        model.forward(h, layers: 0..<model.layerCount, positions: 8..<12, cache: cache)
        cache.truncate(to: 8)
        XCTAssertEqual(cache.lengths, Array(repeating: 8, count: model.layerCount))
        model.embed(tokens.suffix(4), into: h)
        model.forward(h, layers: 0..<model.layerCount, positions: 8..<12, cache: cache)
        let afterTruncation = lastLogits(model, h, row: 3)

        let fresh = model.makeCache(capacity: 32)
        let hf = model.makeActivations(capacity: 16)
        model.embed(tokens, into: hf)
        model.forward(hf, layers: 0..<model.layerCount, positions: 0..<12, cache: fresh)
        assertClose(afterTruncation, lastLogits(model, hf, row: 11), 2e-5, "truncate then continue")
    }

    func testStandInModelRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-standin-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        for dtype in [DType.bf16, .f16, .f32] {
            try StandInModel.write(config: StandInShape.tiny.config, dtype: dtype, to: dir, seed: 7, lateScale: 0.02)
            let model = try LlamaModel(directory: dir)
            XCTAssertEqual(model.config, StandInShape.tiny.config)
            XCTAssertEqual(model.weights.embedding.dtype, dtype)
            let h = model.makeActivations(capacity: 3)
            let logits = model.makeLogits()
            model.embed([0, 5, 9], into: h)
            model.forward(h, layers: 0..<model.layerCount, positions: 0..<3, cache: model.makeCache(capacity: 3))
            model.exitLogits(h, rows: 2..<3, into: logits)
            XCTAssertTrue(logits.row(0).allSatisfy(\.isFinite), "\(dtype): the stand-in's logits are finite")
        }
        // Same seed, same weights: the file is reproducible.
        try StandInModel.write(config: StandInShape.tiny.config, dtype: .bf16, to: dir, seed: 7)
        let a = try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))
        try StandInModel.write(config: StandInShape.tiny.config, dtype: .bf16, to: dir, seed: 7)
        XCTAssertEqual(a, try Data(contentsOf: dir.appendingPathComponent("model.safetensors")))
    }
}
