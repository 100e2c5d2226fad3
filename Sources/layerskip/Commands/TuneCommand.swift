import ArgumentParser
import Daemon
import Decoding
import Engine
import Foundation
import Tokenization
import Training

/// `layerskip tune`: the self-speculative settings that are fastest for one model on this machine,
/// stored in the job store for jobs that leave them out.
struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Measure which exit layer, draft length and drafter make self-speculation fastest for a model here; store it.",
        discussion: """
            1. Acceptance: every exit's top-1 agreement with the last layer, teacher-forced, on --data (or,
               without it, on the model's own greedy continuations of built-in prompts: what decoding sees).
            2. Costs: one decoder layer and the exit head over 1, 2, … rows on this machine (medians).
            3. The E × d grid: greedy rounds simulated on the agreement, timed with the costs, as the predicted
               speed-up over autoregressive decoding; written as an SVG heat-map and a CSV (--out).
            3b. Pruned draft heads (--draft-vocab): the grid again for drafts that score only the K most
               frequent tokens (counted on --data, else the tokenizer's merge order), each cheaper by its measured
               head cost, with agreement only where the full model's token is among the K; a K is kept when its
               best cell beats the full head's by 2%.
            4. Finalists, measured (--runs, interleaved, medians of per-run ratios to autoregressive): the best
               (E, d) with early-exit drafts, prompt lookup alone, and hybrid at that (E, d).
            The fastest finalist is stored in the job store under the model's identity (config + weight
            fingerprint) and weights format: a job with `strategy: self-speculative` and no `exit_layer` then
            runs with it, and `layerskip show` says so. Run it again after a model or machine change.
            """)

    @Option(help: "Model folder, or a model name (`default`).")
    var model = "default"

    @Option(name: .customLong("data"), help: "Text files, folders or globs to measure acceptance on (repeatable).")
    var data: [String] = []

    @Option(name: .customLong("extension"), help: "With folders in --data: only files ending so (repeatable).")
    var extensions: [String] = []

    @Option(help: WeightsOption.help)
    var weights = "stored"

    @Option(help: "Tokens per teacher-forced sequence.")
    var length = 256

    @Option(help: "Teacher-forced tokens in all.")
    var maxTokens = 4096

    @Option(help: "The largest d in the grid.")
    var maxDrafts = 8

    @Option(help: "Measured runs of the finalists (after a warm-up); 0 chooses from the prediction alone (then hybrid at the best E, d).")
    var runs = 3

    @Option(help: "Finalist runs: tokens generated per prompt.")
    var newTokens = 64

    @Option(help: "Finalist runs: prompts of this many tokens (the starts of the data's sequences), at most 4.")
    var promptTokens = 64

    @Option(help: ArgumentHelp("Use these pass costs instead of measuring them: a JSON object {\"layer\": [s, …], \"head\": [s, …]} of seconds for 1, 2, … rows (at least max-drafts + 1 each), and optionally \"pruned_head\": [{\"tokens\": K, \"seconds\": s}, …] for 1 row (the report's \"costs\" has this shape).", valueName: "FILE"))
    var passCosts: String?

    @Option(name: .customLong("draft-vocab"), help: ArgumentHelp("Pruned draft heads to consider: K tokens (repeatable), or none. Default: vocabulary/16, /8, /4 and /2 for a vocabulary of 1024 tokens or more.", valueName: "K"))
    var draftVocab: [String] = []

    @Option(help: "With --data: tokens of it counted for the pruned draft head's token ranking.")
    var countTokens = 262_144

    @Option(help: "Folder for the heat-map files (tune-MODEL-WEIGHTS.svg / .csv).")
    var out = "."

    @Flag(help: "Measure and print, but do not store the result.")
    var noStore = false

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all CPUs).")
    var threads: Int?

    @OptionGroup var options: DaemonOptions

    struct Finalist: Codable {
        var drafter: String
        var settings: [String: ConfigValue]
        var ratios: [Double]
        var medianRatio: Double
        var identical: Bool
    }

    struct Report: Codable {
        var model: String
        var modelKey: String
        var weights: String
        var machine: String
        var tokens: Int
        var agreement: [Double]
        var costs: SpeculationTuner.PassCosts
        var grid: [SpeculationTuner.Cell]
        var best: SpeculationTuner.Cell
        /// The best cell of each pruned draft head considered.
        var prunedBest: [SpeculationTuner.Cell]
        /// Where the pruned heads' token order came from.
        var tokenRanking: String
        var finalists: [Finalist]
        var chosen: [String: ConfigValue]
        /// The choice's speed ÷ autoregressive decoding's (measured; predicted with --runs 0).
        var speedup: Double
        var stored: Bool
        var svg: String
        var csv: String
    }

    func validate() throws {
        guard length > 8, maxTokens >= length, (1...32).contains(maxDrafts), runs >= 0, newTokens >= 1, promptTokens >= 1 else {
            throw ValidationError("--length must be > 8, --max-tokens ≥ --length, --max-drafts in 1...32, --runs ≥ 0, --new-tokens and --prompt-tokens ≥ 1")
        }
        for k in draftVocab where k != "none" && (Int(k) ?? 0) < 1 {
            throw ValidationError("--draft-vocab: expected a number of tokens ≥ 1 or none, found \(k)")
        }
        guard countTokens >= 1 else { throw ValidationError("--count-tokens must be at least 1, found \(countTokens)") }
    }

    func run() throws {
        ThreadSettings.apply(threads)
        let dir = try ModelLocator.resolve(model)
        let llama = try WeightsOption.load(dir, weights: weights)
        guard llama.layerCount >= 2 else { throw CLIError(message: "\(dir.path): a model of one layer has no exit to draft with") }
        let tokenizer = try Tokenizer(contentsOf: dir.appendingPathComponent("tokenizer.json"))
        let fingerprint = try ModelIdentity.fingerprint(directory: dir)
        let key = ModelIdentity.key(fingerprint: fingerprint, weights: llama.format.rawValue)
        func progress(_ s: String) { if !json { standardError("tune: " + s) } }

        let sequences = try textSequences(llama, tokenizer, progress: progress)
        let tokens = sequences.reduce(0) { $0 + $1.count - 1 }
        progress("exit agreement on \(tokens) teacher-forced tokens")
        let tops = Evaluator.exitTops(model: llama, sequences: sequences)
        let agreement = Evaluator.agreement(tops)
        let vocab = llama.config.vocabSize
        let ranking: TokenRanking, rankingSource: String
        if data.isEmpty {
            ranking = StrategyContext(tokenizer: tokenizer).ranking(for: llama.config)
            rankingSource = "the tokenizer's merge order"
        } else {
            let counted = try dataStream(llama, tokenizer).sequences(length: min(length, llama.maxPositions - 1), maxTokens: max(countTokens, maxTokens))
            ranking = TokenRanking.byFrequency(counted, vocabularySize: vocab)
            rankingSource = "frequencies in \(counted.reduce(0) { $0 + $1.count }) tokens of --data"
        }
        let prunedSizes = prunedCandidates(vocabularySize: vocab)
        let prunedSets = prunedSizes.map { (k: $0, tokens: ranking.top($0, always: llama.config.eosTokenIds)) }
        let shares = agreement.map { traces in
            Double(traces.reduce(0) { $0 + $1.filter { $0 }.count }) / Double(max(1, traces.reduce(0) { $0 + $1.count }))
        }
        let costs: SpeculationTuner.PassCosts
        if let passCosts {
            // Snake case, as the report's "costs" are written: a report's costs can be fed back.
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            do { costs = try decoder.decode(SpeculationTuner.PassCosts.self, from: Data(contentsOf: URL(fileURLWithPath: passCosts))) } catch {
                throw CLIError(message: "--pass-costs \(passCosts): expected {\"layer\": [seconds…], \"head\": [seconds…], \"pruned_head\": [{\"tokens\": K, \"seconds\": s}, …]} (\(error))", exitCode: 2)
            }
            guard costs.maxRows > maxDrafts, costs.layer.count == costs.head.count, (costs.layer + costs.head).allSatisfy({ $0 > 0 && $0.isFinite }) else {
                throw CLIError(message: "--pass-costs \(passCosts): expected \(maxDrafts + 1) or more positive seconds in both \"layer\" and \"head\"", exitCode: 2)
            }
        } else {
            progress("pass costs for 1...\(maxDrafts + 1) rows")
            costs = SpeculationTuner.measureCosts(model: llama, maxRows: maxDrafts + 1, repetitions: 5, context: 64,
                                                  prunedVocabularies: prunedSets)
        }
        let L = llama.layerCount
        let grid = SpeculationTuner.grid(agreement: agreement, costs: costs, layers: L, maxDrafts: maxDrafts)
        guard let best = SpeculationTuner.best(grid) else { throw CLIError(message: "no text to measure on") }
        progress(String(format: "predicted best: exit_layer %d, speculations %d: %.2f× autoregressive", best.exitLayer, best.drafts, best.speedup))

        var prunedBest: [SpeculationTuner.Cell] = []
        for (k, tokens) in prunedSets {
            guard costs.prunedHead?.contains(where: { $0.tokens == k }) == true else {
                progress("draft_vocab \(k): no pruned head cost in --pass-costs, not considered")
                continue
            }
            var kept = [Bool](repeating: false, count: vocab)
            for t in tokens { kept[t] = true }
            let restricted = SpeculationTuner.restrict(agreement, finalTokens: tops[L - 1], to: kept)
            let cells = SpeculationTuner.grid(agreement: restricted, costs: costs, layers: L, maxDrafts: maxDrafts, draftVocabulary: k)
            if let cell = SpeculationTuner.best(cells) {
                prunedBest.append(cell)
                progress(String(format: "draft_vocab %d: best exit_layer %d, speculations %d: %.2f× autoregressive", k, cell.exitLayer, cell.drafts, cell.speedup))
            }
        }
        // Pruning only pays where it beats the full head clearly: the agreement it is judged on is a lower bound.
        let pruned = SpeculationTuner.best(prunedBest).flatMap { $0.speedup > best.speedup * 1.02 ? $0 : nil }
        let exitCell = pruned ?? best
        var exitSettings: [String: ConfigValue] = ["exit_layer": .int(exitCell.exitLayer), "speculations": .int(exitCell.drafts)]
        if let k = pruned?.draftVocabulary { exitSettings["draft_vocab"] = .int(k) }
        var finalists: [Finalist] = []
        var chosen = exitSettings.merging(["drafter": .string("hybrid")]) { a, _ in a }
        var speedup = exitCell.speedup
        let context = StrategyContext(tokenizer: tokenizer, tokenRanking: ranking)
        if runs > 0 {
            var candidates: [(String, [String: ConfigValue])] = [
                ("early-exit", exitSettings.merging(["drafter": .string("early-exit")]) { a, _ in a }),
                ("lookup", ["drafter": .string("lookup")]),
                ("hybrid", exitSettings.merging(["drafter": .string("hybrid")]) { a, _ in a }),
            ]
            if pruned != nil {
                candidates.append(("early-exit", ["exit_layer": .int(best.exitLayer), "speculations": .int(best.drafts), "drafter": .string("early-exit")]))
            }
            let prompts = sequences.prefix(4).map { $0.prefix(promptTokens).map(Int.init) }
            finalists = try measureFinalists(llama, prompts: prompts, candidates: candidates, context: context, progress: progress)
            if let fastest = finalists.max(by: { $0.medianRatio < $1.medianRatio }) {
                // The exit's settings stay with a lookup choice: a job that sets early-exit keys uses them.
                chosen = fastest.drafter == "lookup" ? exitSettings.merging(["drafter": .string("lookup")]) { a, _ in a } : fastest.settings
                speedup = fastest.medianRatio
                if fastest.medianRatio < 1 { progress(String(format: "nothing beat autoregressive decoding here (best %.2f×)", fastest.medianRatio)) }
            }
        }

        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let base = URL(fileURLWithPath: out).appendingPathComponent("tune-\(dir.lastPathComponent)-\(llama.format.rawValue)")
        let svgPath = base.appendingPathExtension("svg").path, csvPath = base.appendingPathExtension("csv").path
        let machine = Self.machine()
        try SpeculationTuner.svg(grid, title: "\(dir.lastPathComponent) (\(llama.format.rawValue)) on \(machine), \(tokens) tokens")
            .write(toFile: svgPath, atomically: true, encoding: .utf8)
        try SpeculationTuner.csv(grid).write(toFile: csvPath, atomically: true, encoding: .utf8)

        var report = Report(model: dir.path, modelKey: key, weights: llama.format.rawValue, machine: machine, tokens: tokens,
                            agreement: shares, costs: costs, grid: grid, best: best, prunedBest: prunedBest, tokenRanking: rankingSource,
                            finalists: finalists, chosen: chosen, speedup: speedup, stored: false, svg: svgPath, csv: csvPath)
        if !noStore {
            let (_, store) = try options.openStore(create: true)
            let reportJSON = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
            // The first K of the corpus ranking give the same K tokens (`TokenRanking.top`); without
            // --data the runner's default, the merge order, is what tune measured.
            var stored: [Int]?
            if case let .int(k) = chosen["draft_vocab"], !data.isEmpty { stored = Array(ranking.tokens.prefix(k)) }
            try store.saveTuning(TuningRecord(modelKey: key, model: dir.path, weights: llama.format.rawValue, tunedAt: Date(),
                                              machine: machine, settings: chosen, speedup: speedup, report: reportJSON, tokenRanking: stored))
            report.stored = true
        }
        if json { return try printJSON(report) }
        for f in finalists {
            print(String(format: "%-10@ %@: %.2f× autoregressive (median of %d runs: %@)%@", f.drafter, Self.describe(f.settings), f.medianRatio,
                         f.ratios.count, f.ratios.map { String(format: "%.2f", $0) }.joined(separator: " "), f.identical ? "" : "  OUTPUT DIFFERS"))
        }
        print("chosen: \(Self.describe(chosen))")
        print("heat-map: \(svgPath), \(csvPath)")
        print(report.stored ? "stored for \(dir.lastPathComponent) (\(llama.format.rawValue)), model key \(key.prefix(16))…" : "not stored (--no-store)")
    }

    static func describe(_ settings: [String: ConfigValue]) -> String {
        ResolvedStrategy(spec: StrategySpec(name: "self-speculative", options: settings), source: "tune").settings
    }

    /// The CPU's model name (tune results hold for the machine they were measured on).
    static func machine() -> String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let name = info.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last
        return "\(name.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"), \(ProcessInfo.processInfo.activeProcessorCount) CPUs"
    }

    /// --data cut into sequences of `length`, or the model's own greedy continuations of the
    /// built-in prompts.
    func textSequences(_ llama: LlamaModel, _ tokenizer: Tokenizer, progress: (String) -> Void) throws -> [[Int32]] {
        let n = min(length, llama.maxPositions - 1)
        if !data.isEmpty { return try dataStream(llama, tokenizer).sequences(length: n, maxTokens: maxTokens) }
        progress("no --data: the model's own continuations of \(BenchCommand.texts.count) built-in prompts")
        let strategy = try Strategies.registry.make(StrategySpec(name: "autoregressive"), model: llama)
        let perPrompt = max(16, min(n, maxTokens / BenchCommand.texts.count))
        return try BenchCommand.texts.map { text in
            let prompt = Array(try tokenizer.encode(text).prefix(perPrompt / 2))
            let new = perPrompt - prompt.count
            let request = GenerationRequest(prompt: prompt, maxNewTokens: new, minNewTokens: new, eosTokenIds: Set(llama.config.eosTokenIds))
            let output = GenerationOutput(request: request, tokenizer: nil)
            _ = try DecodeLoop.generate(model: llama, strategy: strategy, request: request, output: output)
            return (prompt + output.tokens).map(Int32.init)
        }
    }

    /// --data's files as one token stream, in order.
    func dataStream(_ llama: LlamaModel, _ tokenizer: Tokenizer) throws -> TokenStream {
        let files: [String]
        do { files = try Corpus(paths: data, extensions: extensions, validationFraction: 0, source: "--data").trainFiles } catch let e as TrainingError {
            throw CLIError.notFound(e.description)
        }
        return TokenStream(files: files, tokenizer: tokenizer, separator: llama.config.eosTokenIds.first, shuffleSeed: nil)
    }

    /// The K of `--draft-vocab`, or the default ones; K ≥ the vocabulary is the full head, left out.
    func prunedCandidates(vocabularySize v: Int) -> [Int] {
        if draftVocab.isEmpty { return v >= 1024 ? [v / 16, v / 8, v / 4, v / 2] : [] }
        return Array(Set(draftVocab.compactMap { Int($0) }.filter { $0 < v })).sorted()
    }

    /// Greedy tokens/s of each candidate ÷ autoregressive decoding's in the same run, interleaved;
    /// run 0 warms up.
    func measureFinalists(_ llama: LlamaModel, prompts: [[Int]], candidates: [(String, [String: ConfigValue])],
                          context: StrategyContext, progress: (String) -> Void) throws -> [Finalist] {
        let specs = [StrategySpec(name: "autoregressive")] + candidates.map { StrategySpec(name: "self-speculative", options: $0.1) }
        let strategies = try specs.map { try Strategies.registry.make($0, model: llama, context: context) }
        var ratios = [[Double]](repeating: [], count: candidates.count)
        var outputs = [[[Int]]](repeating: [], count: specs.count)
        for run in 0...runs {
            var rates: [Double] = []
            for (i, strategy) in strategies.enumerated() {
                var tokens = 0, seconds = 0.0
                outputs[i] = []
                for ids in prompts {
                    let request = GenerationRequest(prompt: ids, maxNewTokens: newTokens, minNewTokens: newTokens, eosTokenIds: Set(llama.config.eosTokenIds))
                    let output = GenerationOutput(request: request, tokenizer: nil)
                    let m = try DecodeLoop.generate(model: llama, strategy: strategy, request: request, output: output)
                    tokens += m.generatedTokens
                    seconds += m.decodeMs / 1000
                    outputs[i].append(output.tokens)
                }
                rates.append(Double(tokens) / max(seconds, 1e-9))
            }
            if run > 0 {
                for c in candidates.indices { ratios[c].append(rates[c + 1] / rates[0]) }
                progress("finalists, run \(run) of \(runs): " + candidates.indices.map { String(format: "%@ %.2f×", candidates[$0].0, ratios[$0].last!) }.joined(separator: ", "))
            }
        }
        return candidates.indices.map { c in
            Finalist(drafter: candidates[c].0, settings: candidates[c].1, ratios: ratios[c], medianRatio: SpeculationTuner.median(ratios[c]),
                     identical: outputs[c + 1] == outputs[0])
        }
    }
}
