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

    /// A pruned draft head chosen from injected costs: K = 511 of the 512 tokens (ranked by the
    /// frequencies in --data) drafts almost for free and agrees wherever the full head does, K = 8
    /// agrees at most as often and costs more, so 511 wins. The choice and its ranking are stored;
    /// a job and `generate` without `exit_layer` use both, with the full model's text.
    func testTuneChoosesAPrunedDraftHeadAndGenerateUsesTheTuneResult() throws {
        let install = try Installation()
        let costs = install.root.appendingPathComponent("costs.json")
        // The full head dominates a pass, so drafting is expensive unless the head is pruned.
        try #"{"layer": [1e-3, 1e-3, 1e-3, 1e-3, 1e-3], "head": [2e-2, 2e-2, 2e-2, 2e-2, 2e-2], "pruned_head": [{"tokens": 8, "seconds": 2e-5}, {"tokens": 511, "seconds": 1e-5}]}"#
            .write(to: costs, atomically: true, encoding: .utf8)
        let text = install.root.appendingPathComponent("text.py")
        try String(repeating: "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n", count: 12)
            .write(to: text, atomically: true, encoding: .utf8)
        let tune = try install.cli(["tune", "--model", Paths.tinyModel.path, "--pass-costs", costs.path, "--runs", "0", "--max-drafts", "4",
                                    "--length", "48", "--max-tokens", "192", "--data", text.path, "--draft-vocab", "8", "--draft-vocab", "511",
                                    "--draft-vocab", "4096", "--out", install.root.path, "--json"])
        XCTAssertEqual(tune.status, 0, tune.stderr)
        let report = try XCTUnwrap(tune.json, tune.stdout)
        let pruned = try XCTUnwrap(report["pruned_best"] as? [[String: Any]], "\(report.keys)")
        XCTAssertEqual(pruned.compactMap { $0["draft_vocabulary"] as? Int }, [8, 511],
                       "one best cell per K below the vocabulary (4096 is the full head)")
        let speedups = pruned.compactMap { $0["speedup"] as? Double }
        XCTAssertGreaterThanOrEqual(speedups[1], speedups[0])
        let full = try XCTUnwrap((report["best"] as? [String: Any])?["speedup"] as? Double)
        XCTAssertGreaterThan(speedups[1], full * 1.02, "drafts without the full head's cost")
        let chosen = try XCTUnwrap(report["chosen"] as? [String: Any])
        XCTAssertEqual(chosen["draft_vocab"] as? Int, 511)
        XCTAssertEqual(chosen["drafter"] as? String, "hybrid")
        XCTAssertTrue((report["token_ranking"] as? String ?? "").hasPrefix("frequencies in"), "\(report)")
        let store = try JobStore(url: install.database)
        let stored = try XCTUnwrap(try store.tunings().first)
        XCTAssertEqual(stored.settings["draft_vocab"], .int(511))
        let ranking = try XCTUnwrap(stored.tokenRanking)
        // The tokens --data has, most frequent first (the rest rank after them by id, so only these are stored).
        XCTAssertTrue(!ranking.isEmpty && ranking.count <= 511 && Set(ranking).count == ranking.count, "\(ranking)")

        // generate: the flags' strategy, filled from the tune result; the text is the full model's.
        let prompt = "def fibonacci(n):"
        let plain = try install.cli(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "24", "--json", prompt])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let tuned = try install.cli(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "24", "--json",
                                     "--strategy", "self-speculative", prompt])
        XCTAssertEqual(tuned.status, 0, tuned.stderr)
        let object = try XCTUnwrap(tuned.json, tuned.stdout)
        XCTAssertTrue((object["settings_source"] as? String ?? "").hasPrefix("tune of "), "\(object)")
        let options = try XCTUnwrap(object["strategy_options"] as? [String: Any])
        XCTAssertEqual(options["draft_vocab"] as? Int, 511)
        XCTAssertEqual(options["exit_layer"] as? Int, chosen["exit_layer"] as? Int)
        XCTAssertEqual(object["tokens"] as? [Int], plain.json?["tokens"] as? [Int], "self-speculation is lossless")
        let own = try install.cli(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "4", "--strategy", "self-speculative",
                                   "--exit-layer", "1", prompt])
        XCTAssertEqual(own.status, 0, own.stderr)
        XCTAssertFalse(own.stderr.contains("settings:"), "an explicit exit layer is the flags' own: \(own.stderr)")
        let elsewhere = try Installation.run(["generate", "--model", Paths.tinyModel.path, "--max-new-tokens", "4", "--strategy", "self-speculative",
                                              "--config", install.root.appendingPathComponent("none.yaml").path, prompt])
        XCTAssertNotEqual(elsewhere.status, 0, "a --config that does not exist is an error, as for the job commands")
    }
}
