import CKernels
import Engine
import Foundation
import TestFixtures
import XCTest

/// What the multi-sequence pass guarantees: a segment's numbers are bit-identical to those of a
/// pass of its own, whatever else the pass carries.
final class BatchedPassTests: XCTestCase {
    /// ck_matmul: for n ≤ ck_matmul_row_independent_max() row t equals a one-row call on x row t;
    /// above it, row t of an n-row call depends only on n, t and x row t.
    func testMatmulRowsAreIndependentOfTheirNeighbours() {
        var rng = SplitMix64(seed: 11)
        func random() -> Float { Float(Int(rng.next() % 2001) - 1000) / 1000 }
        let out = 72, inner = 200
        let w32 = (0..<(out * inner)).map { _ in random() }
        let weights = UnsafeMutableRawPointer.allocate(byteCount: w32.count * 4, alignment: 64)
        defer { weights.deallocate() }
        let maxN = 80
        for level in [0, 1] {
            ck_force_scalar(Int32(level == 0 ? 1 : 0))
            defer { ck_force_scalar(0) }
            let uniform = Int(ck_matmul_row_independent_max())
            for dtype in [CK_F32, CK_BF16, CK_F16] {
                w32.withUnsafeBufferPointer { ck_from_f32(dtype, $0.baseAddress!, weights, w32.count) }
                let x = (0..<(maxN * inner)).map { _ in random() }
                let other = (0..<(maxN * inner)).map { _ in random() }
                func product(_ rows: [Float], _ n: Int) -> [Float] {
                    var y = [Float](repeating: 0, count: n * out)
                    ck_matmul(dtype, weights, Int32(out), Int32(inner), rows, Int32(inner), Int32(n), &y, Int32(out))
                    return y
                }
                for n in 1...maxN {
                    let y = product(x, n)
                    if n <= uniform {
                        for t in Swift.stride(from: 0, to: n, by: max(1, n / 5)) {
                            let alone = product(Array(x[(t * inner)..<((t + 1) * inner)]), 1)
                            XCTAssertEqual(Array(y[(t * out)..<((t + 1) * out)]), alone, "level \(level) dtype \(dtype) n \(n) row \(t)")
                        }
                    } else {
                        // Same n, same row t, different neighbours.
                        let t = n / 2
                        var mixed = other
                        mixed.replaceSubrange((t * inner)..<((t + 1) * inner), with: x[(t * inner)..<((t + 1) * inner)])
                        let y2 = product(mixed, n)
                        XCTAssertEqual(Array(y[(t * out)..<((t + 1) * out)]), Array(y2[(t * out)..<((t + 1) * out)]), "level \(level) dtype \(dtype) n \(n)")
                    }
                }
            }
        }
    }

    /// Three sequences in one plan — a 64-row prefill chunk, a one-row decode step and a
    /// verification continuing from layer E (with int8 draft rows of a fourth riding along) — give
    /// bit for bit the hidden states, K/V and logits of the same segments run alone.
    func testSegmentsOfAPassEqualSoloPasses() throws {
        for name in Fixtures.models {
            let model = try LlamaModel(directory: Fixtures.directory(name))
            let L = model.layerCount, E = 1, hd = model.config.hiddenSize, V = model.config.vocabSize
            var rng = SplitMix64(seed: 9)
            func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(rng.next() % UInt64(V)) } }
            let prompts = [tokens(64), tokens(9), tokens(12), tokens(5)]
            struct Setup { var cache: KVCache; var rows: FloatBuffer }
            /// Every sequence's state before the pass under test: prompts 1–3 prefilled (3: through E only).
            func prepare() -> [Setup] {
                prompts.enumerated().map { i, prompt in
                    let cache = model.makeCache(capacity: 96)
                    let h = model.makeActivations(capacity: 72)
                    if i > 0 {
                        let n = prompt.count - (i == 2 ? 3 : 1)
                        model.embed(prompt[0..<n], into: h)
                        model.forward(h, layers: 0..<L, positions: 0..<n, cache: cache)
                        if i == 2 {  // three "drafted" positions through layers 0..<E
                            model.embed(prompt[n..<(n + 3)], into: h)
                            model.forward(h, layers: 0..<E, positions: n..<(n + 3), cache: cache)
                        }
                    }
                    let rows = FloatBuffer(count: 72 * hd)
                    if i == 2 { rows.pointer.update(from: h.hidden.pointer, count: 3 * hd) }
                    return Setup(cache: cache, rows: rows)
                }
            }
            /// The segments under test, in plan order; `only` restricts the plan to one of them.
            func plan(_ s: [Setup], only: Int?) -> PassPlan {
                let plan = PassPlan(maxRows: 128, maxLogitsRows: 80)
                func want(_ i: Int) -> Bool { only == nil || only == i }
                if want(1) {  // decode: the last prompt token
                    model.embed(prompts[1].last!, into: s[1].rows.pointer)
                    plan.add(cache: s[1].cache, hidden: s[1].rows.pointer, count: 1, firstPosition: prompts[1].count - 1, layers: 0..<L, headRows: 0..<1)
                }
                if want(2) {  // verification of three drafted rows from layer E
                    plan.add(cache: s[2].cache, hidden: s[2].rows.pointer, count: 3, firstPosition: prompts[2].count - 3, layers: E..<L, headRows: 0..<3)
                }
                if want(3) {  // an int8 draft row
                    model.embed(prompts[3].last!, into: s[3].rows.pointer)
                    plan.add(cache: s[3].cache, hidden: s[3].rows.pointer, count: 1, firstPosition: prompts[3].count - 1, layers: 0..<E,
                             precision: .int8, headRows: 0..<1, headPrecision: .int8)
                }
                if want(0) {  // a prefill chunk
                    for (r, t) in prompts[0].enumerated() { model.embed(t, into: s[0].rows.pointer + r * hd) }
                    plan.add(cache: s[0].cache, hidden: s[0].rows.pointer, count: 64, firstPosition: 0, layers: 0..<L, headRows: 63..<64)
                }
                return plan
            }
            let rowsPerSegment = [64, 1, 3, 1]
            let batched = prepare()
            let batchPlan = plan(batched, only: nil)
            let logits = model.makeLogits(capacity: 80)
            model.run(batchPlan, scratch: model.makePassScratch(maxRows: 128), logits: logits)
            for i in 0..<4 {
                let solo = prepare()
                let soloPlan = plan(solo, only: i)
                let soloLogits = model.makeLogits(capacity: 80)
                model.run(soloPlan, scratch: model.makePassScratch(maxRows: 128), logits: soloLogits)
                let segment = batchPlan.segments.first { $0.cache === batched[i].cache }!
                let n = segment.headRows.count
                XCTAssertEqual(Array(UnsafeBufferPointer(start: logits.values.pointer + segment.firstLogitsRow * V, count: n * V)),
                               Array(UnsafeBufferPointer(start: soloLogits.values.pointer, count: n * V)), "\(name) segment \(i) logits")
                XCTAssertEqual(Array(UnsafeBufferPointer(start: batched[i].rows.pointer, count: rowsPerSegment[i] * hd)),
                               Array(UnsafeBufferPointer(start: solo[i].rows.pointer, count: rowsPerSegment[i] * hd)), "\(name) segment \(i) hidden")
                XCTAssertEqual(batched[i].cache.lengths, solo[i].cache.lengths)
                for l in 0..<L {
                    for p in 0..<batched[i].cache.lengths[l] {
                        let a = batched[i].cache.entry(layer: l, position: p), b = solo[i].cache.entry(layer: l, position: p)
                        XCTAssertTrue(a.key == b.key && a.value == b.value, "\(name) segment \(i) layer \(l) position \(p)")
                    }
                }
            }
        }
    }
}
