import Daemon
import Decoding
import Foundation
import XCTest

/// `layerskip tune` end to end on a fixture model with injected pass costs: a deterministic
/// choice, its heat-map files, stored under the model's identity; then a daemon job that leaves
/// `exit_layer` out runs with it and `show` says where its settings came from.
final class TuneTests: XCTestCase {
    func testResolvedStrategyFillsOnlyWhatTheJobLeftOut() {
        let tuning = TuningRecord(modelKey: "k@stored", model: "/m", weights: "stored", tunedAt: Date(timeIntervalSince1970: 0), machine: "cpu",
                                  settings: ["exit_layer": .int(3), "speculations": .int(4), "drafter": .string("hybrid")], speedup: 1.3,
                                  report: "{}")
        let untouched = StrategySpec(name: "self-speculative", options: ["exit_layer": .int(2)])
        XCTAssertEqual(ResolvedStrategy.resolve(untouched, tuning: tuning), ResolvedStrategy(spec: untouched, source: "job file"))
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "autoregressive"), tuning: tuning).source, "job file")
        let filled = ResolvedStrategy.resolve(StrategySpec(name: "self-speculative", options: ["speculations": .int(2)]), tuning: tuning)
        XCTAssertEqual(filled.spec.options, ["exit_layer": .int(3), "speculations": .int(2), "drafter": .string("hybrid")], "the job's d stays")
        XCTAssertTrue(filled.source.hasPrefix("tune of 1970-01-01T00:00:00Z on cpu"), filled.source)
        XCTAssertEqual(filled.settings, "drafter=hybrid, exit_layer=3, speculations=2")
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "self-speculative"), tuning: nil).source,
                       "untuned default (exit_layer = half the layers)")

        // A job that named no strategy: tuned self-speculation only where tune measured it faster.
        let unnamed = ResolvedStrategy.resolve(StrategySpec(name: "autoregressive"), strategyIsDefault: true, tuning: tuning)
        XCTAssertEqual(unnamed.spec, StrategySpec(name: "self-speculative", options: ["exit_layer": .int(3), "speculations": .int(4),
                                                                                      "drafter": .string("hybrid")]))
        XCTAssertTrue(unnamed.source.hasSuffix("1.30× autoregressive; the job named no strategy"), unnamed.source)
        var slow = tuning
        slow.speedup = 0.95
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "autoregressive"), strategyIsDefault: true, tuning: slow),
                       ResolvedStrategy(spec: StrategySpec(name: "autoregressive"), source: "default (tune found nothing faster than autoregressive)"))
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "autoregressive"), strategyIsDefault: true, tuning: nil).source,
                       "default (the model has no tune result)")

        var lookup = tuning
        lookup.settings["drafter"] = .string("lookup")
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "self-speculative"), tuning: lookup).spec.options, ["drafter": .string("lookup")],
                       "lookup fastest: no exit settings")
        XCTAssertEqual(ResolvedStrategy.resolve(StrategySpec(name: "self-speculative", options: ["adaptive": .bool(true)]), tuning: lookup).spec.options,
                       ["adaptive": .bool(true), "exit_layer": .int(3), "speculations": .int(4)], "a job with exit keys keeps exit drafts")
    }

    func testTuneChoosesFromInjectedCostsStoresItAndJobsUseIt() throws {
        let install = try Installation()
        let out = install.root.appendingPathComponent("tune")
        let costs = install.root.appendingPathComponent("costs.json")
        // Rows nearly free, so long rounds pay wherever the exits agree (the choice is then up to
        // the model's agreement, which its own greedy continuations fix).
        try #"{"layer": [1e-3, 1.01e-3, 1.02e-3, 1.03e-3, 1.04e-3, 1.05e-3, 1.06e-3], "head": [5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4]}"#
            .write(to: costs, atomically: true, encoding: .utf8)
        let args = ["tune", "--model", Paths.tinyModel.path, "--pass-costs", costs.path, "--runs", "0", "--max-drafts", "6",
                    "--length", "48", "--max-tokens", "192", "--out", out.path, "--json"]
        let first = try install.cli(args)
        XCTAssertEqual(first.status, 0, first.stderr)
        let report = try XCTUnwrap(first.json, first.stdout)
        XCTAssertEqual(report["stored"] as? Bool, true)
        let best = try XCTUnwrap(report["best"] as? [String: Any])
        let (e, d) = (try XCTUnwrap(best["exit_layer"] as? Int), try XCTUnwrap(best["drafts"] as? Int))
        let grid = try XCTUnwrap(report["grid"] as? [[String: Any]])
        XCTAssertEqual(grid.count, 3 * 6, "exits 1...3 of the 4-layer model × d 1...6")
        let bestSpeedup = try XCTUnwrap(grid.compactMap { $0["speedup"] as? Double }.max())
        XCTAssertEqual(best["speedup"] as? Double, bestSpeedup)
        let chosen = try XCTUnwrap(report["chosen"] as? [String: Any])
        XCTAssertEqual(chosen["exit_layer"] as? Int, e)
        XCTAssertEqual(chosen["speculations"] as? Int, d)
        XCTAssertEqual(chosen["drafter"] as? String, "hybrid", "with --runs 0: hybrid at the predicted best")
        XCTAssertEqual(chosen.count, 3)
        // The heat-map: one cell per (E, d).
        let csv = try String(contentsOf: out.appendingPathComponent("tune-tiny-bytelevel-gqa-f32-stored.csv"), encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 1 + 3)
        XCTAssertTrue(csv.split(separator: "\n").dropFirst().allSatisfy { $0.split(separator: ",").count == 1 + 6 }, csv)
        let svg = try String(contentsOf: out.appendingPathComponent("tune-tiny-bytelevel-gqa-f32-stored.svg"), encoding: .utf8)
        XCTAssertEqual(svg.components(separatedBy: "<rect ").count - 1, 18)
        // Deterministic: the same inputs give the same choice.
        let again = try install.cli(args)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual((again.json?["chosen"] as? [String: Any]).map { "\($0["exit_layer"]!) \($0["speculations"]!)" }, "\(e) \(d)")

        // A job without exit_layer runs with the stored choice; one with it keeps its own.
        try install.start()
        let speedup = try XCTUnwrap(report["speedup"] as? Double)
        XCTAssertEqual(speedup, best["speedup"] as? Double, "with --runs 0 the prediction")
        for (name, strategy) in [("tuned", "strategy: self-speculative"), ("own", "strategy: {name: self-speculative, exit_layer: 1, speculations: 2}"),
                                 ("unnamed", "")] {
            try install.drop("\(name).yaml", """
                model: tiny
                \(strategy)
                max_new_tokens: 8
                prompts:
                  - {id: a, text: "def fibonacci(n):"}
                """)
        }
        try waitFor("the jobs done", timeout: 60) {
            let jobs = try install.cli(["jobs", "--json"]).json?["jobs"] as? [[String: Any]] ?? []
            return jobs.count == 3 && jobs.allSatisfy { $0["state"] as? String == "succeeded" }
        }
        let jobs = try XCTUnwrap(try install.cli(["jobs", "--json"]).json?["jobs"] as? [[String: Any]])
        for job in jobs {
            let id = try XCTUnwrap(job["id"] as? Int)
            let show = try install.cli(["show", String(id)])
            XCTAssertEqual(show.status, 0, show.stderr)
            let source = job["source"] as? String ?? ""
            if source.hasSuffix("unnamed.yaml") {
                // Named no strategy: tuned self-speculation only if tune found it faster.
                if speedup > 1 {
                    XCTAssertTrue(show.stdout.contains("settings       drafter=hybrid, exit_layer=\(e), speculations=\(d)"), show.stdout)
                    XCTAssertTrue(show.stdout.contains("the job named no strategy"), show.stdout)
                } else {
                    XCTAssertTrue(show.stdout.contains("settings       (none)"), show.stdout)
                    XCTAssertTrue(show.stdout.contains("settings from  default (tune found nothing faster than autoregressive)"), show.stdout)
                }
            } else if source.hasSuffix("tuned.yaml") {
                XCTAssertTrue(show.stdout.contains("settings       drafter=hybrid, exit_layer=\(e), speculations=\(d)"), show.stdout)
                XCTAssertTrue(show.stdout.contains("settings from  tune of "), show.stdout)
            } else {
                XCTAssertTrue(show.stdout.contains("settings       exit_layer=1, speculations=2"), show.stdout)
                XCTAssertTrue(show.stdout.contains("settings from  job file"), show.stdout)
            }
        }
        XCTAssertEqual(install.stop(), 0)
    }
}
