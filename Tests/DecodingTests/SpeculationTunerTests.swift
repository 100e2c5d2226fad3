import Decoding
import Engine
import Foundation
import XCTest

/// `tune`'s arithmetic with injected agreement and costs: the simulated rounds, the predicted
/// speed-ups (hand-computed) and the choice, and one heat-map cell per (E, d).
final class SpeculationTunerTests: XCTestCase {
    func testRoundsAcceptWhileTheExitAgreesThenTakeTheFullModelsToken() {
        let t = true, f = false
        let trace = [t, t, f, t, t, t, f]
        // d = 2: [t t]+1 → 3, [t t]+1 → 3, [f] → the full model's token: 7 tokens in 3 rounds.
        XCTAssertTrue(SpeculationTuner.rounds(agrees: trace, drafts: 2) == (7, 3))
        // d = 5: [t t] stops at f → 3; [t t t] stops at f → 4: 7 tokens in 2 rounds.
        XCTAssertTrue(SpeculationTuner.rounds(agrees: trace, drafts: 5) == (7, 2))
        XCTAssertTrue(SpeculationTuner.rounds(agrees: [f, f, f], drafts: 4) == (3, 3))
        XCTAssertTrue(SpeculationTuner.rounds(agrees: [], drafts: 4) == (0, 0))
    }

    /// L = 4. One layer over n rows costs 1 + 0.1(n − 1), the head 0.5 + 0.05(n − 1); an
    /// autoregressive step 4·1 + 0.5 = 4.5. Exit 1 never agrees, exit 2 always, exit 3 every other
    /// position (12 positions each).
    func testTheGridPredictsFromTheInjectedCostsAndTheBestIsChosen() throws {
        let costs = SpeculationTuner.PassCosts(layer: (0..<9).map { 1 + 0.1 * Double($0) }, head: (0..<9).map { 0.5 + 0.05 * Double($0) })
        let agreement: [[[Bool]]] = [[Array(repeating: false, count: 12)], [Array(repeating: true, count: 12)],
                                     [(0..<12).map { $0 % 2 == 0 }]]
        let grid = SpeculationTuner.grid(agreement: agreement, costs: costs, layers: 4, maxDrafts: 8)
        XCTAssertEqual(grid.count, 3 * 8, "one cell per (E, d)")
        func cell(_ e: Int, _ d: Int) throws -> SpeculationTuner.Cell { try XCTUnwrap(grid.first { $0.exitLayer == e && $0.drafts == d }) }
        // E=2, d=3: rounds of 4 tokens; 3 drafts of (2·1 + 0.5) + verify (2·1 + 2·1.3 + 0.65) = 12.75 → 4/12.75·4.5.
        XCTAssertEqual(try cell(2, 3).tokensPerRound, 4)
        XCTAssertEqual(try cell(2, 3).speedup, 4 / 12.75 * 4.5, accuracy: 1e-9)
        // E=2, d=5: rounds of 6; 5·2.5 + (2 + 2·1.5 + 0.75) = 18.25 → 6/18.25·4.5 = 1.479, the best.
        XCTAssertEqual(try cell(2, 5).speedup, 6 / 18.25 * 4.5, accuracy: 1e-9)
        // E=2, d=8: rounds of 9 and 3 tokens (6 per round); 8·2.5 + (2 + 2·1.8 + 0.9) = 26.5.
        XCTAssertEqual(try cell(2, 8).tokensPerRound, 6)
        XCTAssertEqual(try cell(2, 8).speedup, 6 / 26.5 * 4.5, accuracy: 1e-9)
        // E=3 alternates: 2 tokens per round at any d; d=1: 3.5 + (3 + 1.1 + 0.55) = 8.15.
        XCTAssertEqual(try cell(3, 1).speedup, 2 / 8.15 * 4.5, accuracy: 1e-9)
        // E=1 never agrees: slower than autoregressive everywhere.
        XCTAssertTrue(grid.filter { $0.exitLayer == 1 }.allSatisfy { $0.speedup < 1 })
        let best = try XCTUnwrap(SpeculationTuner.best(grid))
        XCTAssertEqual([best.exitLayer, best.drafts], [2, 5])

        // Rows that cost more than a draft (each extra row 2·2 + 1 = 5 against a draft's 2.5):
        // E=2, d=1: 2 / (2.5 + 2 + 2·3 + 1.5) · 4.5 = 0.75; E=3, d=1: 2 / (3.5 + 3 + 3 + 1.5) · 4.5 = 0.818,
        // the best (none beats autoregressive decoding).
        let steep = SpeculationTuner.PassCosts(layer: (0..<9).map { 1 + 2 * Double($0) }, head: (0..<9).map { 0.5 + Double($0) })
        let steepGrid = SpeculationTuner.grid(agreement: agreement, costs: steep, layers: 4, maxDrafts: 8)
        let steepBest = try XCTUnwrap(SpeculationTuner.best(steepGrid))
        XCTAssertEqual([steepBest.exitLayer, steepBest.drafts], [3, 1])
        XCTAssertEqual(steepBest.speedup, 2 / 11 * 4.5, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(steepGrid.first { $0.exitLayer == 2 && $0.drafts == 1 }).speedup, 0.75, accuracy: 1e-9)
    }

    func testTheHeatMapHasOneCellPerMeasuredPoint() throws {
        let costs = SpeculationTuner.PassCosts(layer: Array(repeating: 1, count: 5), head: Array(repeating: 0.5, count: 5))
        let agreement: [[[Bool]]] = (0..<5).map { e in [(0..<40).map { $0 % 6 < e + 1 }] }
        let grid = SpeculationTuner.grid(agreement: agreement, costs: costs, layers: 6, maxDrafts: 4)
        XCTAssertEqual(grid.count, 5 * 4)
        let csv = SpeculationTuner.csv(grid).split(separator: "\n")
        XCTAssertEqual(csv.first, "exit_layer,d=1,d=2,d=3,d=4")
        XCTAssertEqual(csv.count, 1 + 5)
        for (row, line) in csv.dropFirst().enumerated() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            XCTAssertEqual(fields.count, 5)
            XCTAssertEqual(fields[0], "\(row + 1)")
            for (d, field) in fields.dropFirst().enumerated() {
                let speedup = try XCTUnwrap(Double(field))
                XCTAssertEqual(speedup, grid.first { $0.exitLayer == row + 1 && $0.drafts == d + 1 }!.speedup, accuracy: 0.0005)
            }
        }
        let svg = SpeculationTuner.svg(grid, title: "a <model> & b")
        XCTAssertEqual(svg.components(separatedBy: "<rect ").count - 1, grid.count)
        XCTAssertEqual(svg.components(separatedBy: "stroke-width=\"3\"").count - 1, 1, "the best cell is outlined, once")
        XCTAssertTrue(svg.contains("a &lt;model&gt; &amp; b"))
    }

    /// A pruned draft head: a position agrees only where the full model's token is kept, and the
    /// drafts pay the pruned head's cost (hand-computed against the full head's grid).
    func testPrunedHeadGridRestrictsAgreementAndChargesItsCost() throws {
        let t = true, f = false
        // Two exits, one text of 6 positions; the full model's tokens, of which 5 and 9 are pruned away.
        let agreement: [[[Bool]]] = [[[t, t, f, t, t, t]], [[t, t, t, t, t, t]]]
        let finalTokens = [[2, 5, 3, 2, 9, 2]]
        var kept = [Bool](repeating: true, count: 10)
        kept[5] = false
        kept[9] = false
        let restricted = SpeculationTuner.restrict(agreement, finalTokens: finalTokens, to: kept)
        XCTAssertEqual(restricted, [[[t, f, f, t, f, t]], [[t, f, t, t, f, t]]])

        // L = 3; a layer 1 (any rows), the full head 1, the pruned head of K = 4 tokens 0.25.
        let costs = SpeculationTuner.PassCosts(layer: [1, 1, 1], head: [1, 1, 1],
                                               prunedHead: [SpeculationTuner.PrunedHeadCost(tokens: 4, seconds: 0.25)])
        XCTAssertEqual(costs.draft(exit: 2), 3)
        XCTAssertEqual(costs.draft(exit: 2, vocabulary: 4), 2.25)
        XCTAssertEqual(costs.draft(exit: 2, vocabulary: 7), 3, "a K without a measured cost drafts at the full head's")
        let full = SpeculationTuner.grid(agreement: agreement, costs: costs, layers: 3, maxDrafts: 2)
        let pruned = SpeculationTuner.grid(agreement: restricted, costs: costs, layers: 3, maxDrafts: 2, draftVocabulary: 4)
        // E = 2, d = 2, full head: rounds [t t]+1, [t t]+1 → 6 tokens in 2 rounds; a round 2·3 + (2 + 1 + 1) = 10
        // against an autoregressive step of 4: 3/10·4 = 1.2.
        let fullCell = try XCTUnwrap(full.first { $0.exitLayer == 2 && $0.drafts == 2 })
        XCTAssertEqual(fullCell.speedup, 1.2, accuracy: 1e-12)
        XCTAssertNil(fullCell.draftVocabulary)
        // Pruned, [t f t t f t]: from 0, t then f → 2 tokens; from 2, t t → 3; from 5, the end → 1:
        // 6 tokens in 3 rounds; a round 2·2.25 + 4 = 8.5: 2/8.5·4.
        let prunedCell = try XCTUnwrap(pruned.first { $0.exitLayer == 2 && $0.drafts == 2 })
        XCTAssertEqual(prunedCell.tokensPerRound, 2)
        XCTAssertEqual(prunedCell.speedup, 2 / 8.5 * 4, accuracy: 1e-12)
        XCTAssertEqual(prunedCell.draftVocabulary, 4)
    }

    func testFrequencyRankingCountsThenBreaksTiesById() throws {
        let ranking = TokenRanking.byFrequency([[3, 1, 3, 7], [7, 3, 0], [9, 9, 12]], vocabularySize: 10)
        XCTAssertEqual(ranking.tokens, [3, 7, 9, 0, 1], "3×3, 2×7, 2×9 (by id), then the ones; 12 is outside the vocabulary")
        XCTAssertEqual(ranking.top(4, always: [2]), [2, 3, 7, 9], "end of sequence (2) always kept, counted in K")
        XCTAssertEqual(ranking.top(7, always: []), [0, 1, 2, 3, 4, 7, 9], "ids never seen follow, by id")
    }
}
