import ArgumentParser
import Decoding
import Engine
import Foundation
import Tokenization

/// Rerunnable speed benchmark: strategies compared on the same model, prompts and machine in one
/// process, runs interleaved so that noise from a shared machine hits all of them alike; medians of
/// per-run tokens/s and of per-run ratios to the first strategy.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure prefill and decode speed, strategy speed-ups and peak memory (medians of several runs).",
        discussion: """
            --strategy takes NAME or NAME:key=value,key=value (e.g. self-speculative:exit_layer=8,speculations=6)
            and may be repeated; the first one is the baseline of the reported ratios. Prompts are a fixed set of
            short texts encoded with the model's tokenizer.json (or seeded random ids with --random-prompt).
            Decode runs are greedy unless --temperature is set. Examples:
              layerskip init-model --shape llama3.2-1b --tokenizer Tests/Fixtures/tokenizers/llama3/tokenizer.json \\
                  --out models/stand-in/llama3.2-1b-late0.02 --late-scale 0.02
              layerskip bench --model models/stand-in/llama3.2-1b-late0.02 --prompt-tokens 64 --new-tokens 64
              layerskip bench --model models/stand-in/llama3.2-1b-late0.02 --new-tokens 128 \\
                  --strategy autoregressive --strategy self-speculative:exit_layer=8,speculations=6 --verify-cost 7
            """)

    @Option(help: "Hugging Face model folder, or `default`.")
    var model: String

    @Option(name: .customLong("strategy"), help: "Strategy to measure (repeatable; default: autoregressive).")
    var strategies: [String] = []

    @Option(help: "Prefill measurement: a prompt of this many seeded random token ids (0 skips it).")
    var promptTokens: Int = 64

    @Option(help: "Tokens to generate per prompt.")
    var newTokens: Int = 64

    @Option(help: "How many of the built-in prompts to decode from.")
    var prompts: Int = 3

    @Option(name: .customLong("prompt-file"), help: ArgumentHelp(
        "Decode from the start of this text file instead of the built-in prompts (repeatable; e.g. held-out source files).",
        valueName: "FILE"))
    var promptFiles: [String] = []

    @Option(help: "Decode from these prompts instead: a JSONL file, per line a JSON string or an object with a \"text\" string (each prompt whole; e.g. scripts/copy-prompts.py's copy-heavy prompts).")
    var promptsFile: String?

    @Option(help: "With --prompt-file: the prompt is the file's first this many tokens.")
    var promptFileTokens: Int = 64

    @Option(help: "Number of measured runs (a warm-up run comes first).")
    var runs: Int = 5

    @Option(help: "Also time one pass of all layers over N+1 positions against one over a single position.")
    var verifyCost: Int?

    @Option(help: ArgumentHelp("The pass-cost curve: time one pass of N one-row segments (N sequences decoding, a 32-token context each) for each N of this comma-separated list; medians of per-run ratios to a one-row pass timed in the same run.", valueName: "N,N,..."))
    var passCost: String?

    @Option(help: "Decode this many sequences at once in one batch (the prompts repeated round-robin); reports aggregate tokens/s.")
    var batch: Int?

    @Option(help: "Sampling temperature for the decode runs (0 = greedy).")
    var temperature: Double = 0

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all online CPUs).")
    var threads: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    static let texts = [
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "The history of the printing press begins in",
        "import os\nimport sys\n\nclass ConfigLoader:\n",
        "Summarize the following article in three sentences:\nThe city council met on Tuesday to discuss",
    ]

    func validate() throws {
        if let batch, !(1...256).contains(batch) { throw ValidationError("--batch must be in 1...256, found \(batch)") }
        guard newTokens >= 1, runs >= 1, promptTokens >= 0, (1...Self.texts.count).contains(prompts), promptFileTokens >= 1 else {
            throw ValidationError("--new-tokens, --runs and --prompt-file-tokens must be ≥ 1, --prompt-tokens ≥ 0, --prompts in 1...\(Self.texts.count)")
        }
    }

    struct StrategyResult: Encodable {
        var strategy: String
        var options: [String: ConfigValue]
        var tokensPerSecond: [Double]
        var medianTokensPerSecond: Double
        var medianRatioToBaseline: Double
        var acceptanceRate: Double?
        var tokensPerRound: Double?
        /// Shares of the decode time spent drafting and verifying (self-speculative).
        var draftShare: Double?
        var verifyShare: Double?
        /// Milliseconds per round spent drafting and verifying (compare with the baseline's
        /// 1000 / tokens per second, the time of one autoregressive step).
        var draftMsPerRound: Double?
        var verifyMsPerRound: Double?
        var averageExitLayer: Double?
        var layerEvaluationsPerToken: Double
        var identicalToBaseline: Bool?
        /// --batch: tokens/s of the passes that carried no prompt rows (what llama-batched-bench's
        /// S_TG measures), all tokens ÷ all wall time, and each sequence's own decode rate.
        var batchDecodeTokensPerSecond: [Double]?
        var medianBatchDecodeTokensPerSecond: Double?
        var medianBatchEndToEndTokensPerSecond: Double?
        var medianSequenceTokensPerSecond: Double?
        var meanStepMs: Double?
        /// Self-speculative: drafts per round, per sequence (the load-aware choice of d).
        var draftsPerRound: [Double]?
    }

    struct Report: Encodable {
        var model: String
        var layers: Int
        var weightBytes: Int
        var threads: Int
        var kernels: String
        var runs: Int
        var newTokens: Int
        var prompts: Int
        var prefillTokens: Int
        var prefillTokensPerSecond: [Double]
        var medianPrefillTokensPerSecond: Double?
        var strategies: [StrategyResult]
        var verifyPositions: Int?
        var verifyCostRatio: Double?
        var passCost: [PassCost]?
        var peakRssBytes: Int
        var kvCacheBytes: Int
        var peakRssOverWeightsPlusKv: Double
        var batch: Int?
    }

    struct PassCost: Encodable {
        var rows: Int
        var medianMs: Double
        var ratioToOneRow: Double
    }

    static func parseSpec(_ text: String) throws -> StrategySpec {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        var options: [String: ConfigValue] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw ValidationError("--strategy \(text): expected key=value, found \"\(pair)\"") }
                if let i = Int(kv[1]) { options[kv[0]] = .int(i) }
                else if let d = Double(kv[1]) { options[kv[0]] = .double(d) }
                else if let b = Bool(kv[1]) { options[kv[0]] = .bool(b) }
                else { options[kv[0]] = .string(kv[1]) }
            }
        }
        return StrategySpec(name: parts[0], options: options)
    }

    @Option(help: WeightsOption.help)
    var weights = "stored"

    @Option(help: ActivationsOption.help)
    var activations: String?

    func run() throws {
        ThreadSettings.apply(threads)
        try ActivationsOption.apply(activations)
        let directory = try ModelLocator.resolve(model)
        let specs = try (strategies.isEmpty ? ["autoregressive"] : strategies).map(Self.parseSpec)
        let config = try ModelConfig.load(from: directory.appendingPathComponent("config.json"))
        let problems = specs.flatMap { Strategies.registry.problems($0, model: config) }
        if !problems.isEmpty { throw ValidationError(problems.map(\.description).joined(separator: "\n")) }

        // The tokenizer first: its parse's garbage is returned before the weights arrive (peak RSS).
        let tokenizer = try? Tokenizer(contentsOf: directory.appendingPathComponent("tokenizer.json"))
        let loadStarted = Date()
        // Whole prompts from --prompts-file may be long: then the model keeps its own limit.
        let llama = try WeightsOption.load(directory, weights: weights,
                                           maxPositions: promptsFile == nil ? max(promptTokens, promptFileTokens, 256) + newTokens + 80 : nil)
        let loadSeconds = Date().timeIntervalSince(loadStarted)
        let promptIds: [[Int]] = try promptsFile.map { path in
            guard let tokenizer else { throw CLIError(message: "--prompts-file needs the model's tokenizer.json") }
            return try PromptsFile.read(path).enumerated().map { n, text in
                let ids = try tokenizer.encode(text)
                guard !ids.isEmpty else { throw CLIError(message: "--prompts-file \(path): prompt \(n + 1) has no tokens") }
                return ids
            }
        } ?? (promptFiles.isEmpty ? builtInPrompts(llama, tokenizer) : promptFiles.map { path in
            guard let tokenizer else { throw CLIError(message: "--prompt-file needs the model's tokenizer.json") }
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw CLIError(message: "--prompt-file \(path): cannot read it as UTF-8 text (\(error.localizedDescription))")
            }
            let ids = Array(try tokenizer.encode(text).prefix(promptFileTokens))
            guard !ids.isEmpty else { throw CLIError(message: "--prompt-file \(path): no tokens") }
            return ids
        })

        let generators = try specs.map { try Strategies.registry.make($0, model: llama, context: StrategyContext(tokenizer: tokenizer)) }
        let sampling = SamplingParameters(temperature: temperature, seed: temperature > 0 ? 1 : nil)
        let capacity = promptIds.map(\.count).max()! + newTokens + 80
        let sequences = batch ?? 1
        let caches = KVCachePool(config: llama.config, budget: sequences * KVCache.byteCount(config: llama.config, capacity: capacity + 256))

        func log(_ s: String) { if !json { standardError(s) } }
        log("model \(model): \(llama.layerCount) layers, \(String(format: "%.2f", Double(llama.weightBytes) / 1e9)) GB of weights (\(llama.format == .stored ? "stored" : llama.format.rawValue), loaded in \(String(format: "%.2f", loadSeconds)) s), \(KernelReport.current().summary)")

        // Prefill: one chunked pass over a seeded random prompt, all layers.
        var prefillRates: [Double] = []
        var rng = SplitMix64(seed: 42)
        let randomPrompt = (0..<promptTokens).map { _ in Int(rng.next() % UInt64(llama.config.vocabSize)) }
        let prefillCache = promptTokens > 0 ? llama.makeCache(capacity: promptTokens) : nil
        let prefillActivations = promptTokens > 0 ? llama.makeActivations(capacity: min(promptTokens, DecodeLoop.prefillChunk)) : nil

        var rates = Array(repeating: [Double](), count: specs.count)
        var ratios = Array(repeating: [Double](), count: specs.count)
        var last = Array(repeating: [GenerationMetrics](), count: specs.count)
        var outputs = Array(repeating: [[Int]](), count: specs.count)
        var batchRates = Array(repeating: [Double](), count: specs.count)
        var batchEndToEnd = Array(repeating: [Double](), count: specs.count)
        for run in 0...runs {
            if let prefillCache, let prefillActivations {
                prefillCache.reset()
                let clock = ContinuousClock()
                let start = clock.now
                let logits = llama.makeLogits()
                var position = 0
                while position < promptTokens {
                    let n = min(prefillActivations.capacity, promptTokens - position)
                    llama.embed(randomPrompt[position..<(position + n)], into: prefillActivations)
                    llama.forward(prefillActivations, layers: 0..<llama.layerCount, positions: position..<(position + n), cache: prefillCache)
                    if position + n == promptTokens { llama.exitLogits(prefillActivations, rows: (n - 1)..<n, into: logits) }
                    position += n
                }
                let rate = Double(promptTokens) / (clock.now - start).seconds
                if run > 0 { prefillRates.append(rate) }
                log(String(format: "run %d: prefill %d tokens %.1f tokens/s", run, promptTokens, rate))
            }
            var runRates: [Double] = []
            for (i, generator) in generators.enumerated() {
                var tokens = 0
                var seconds = 0.0
                var metrics: [GenerationMetrics] = []
                var produced: [[Int]] = []
                if let batch {
                    // One loop, `batch` sequences at once.
                    let loop = DecodeLoop(model: llama, caches: caches, maxBatch: batch)
                    var finished: [(Int, GenerationMetrics, [Int])] = []
                    let clock = ContinuousClock()
                    let start = clock.now
                    for k in 0..<batch {
                        let request = GenerationRequest(prompt: promptIds[k % promptIds.count], maxNewTokens: newTokens, minNewTokens: newTokens,
                                                        sampling: sampling, eosTokenIds: Set(llama.config.eosTokenIds))
                        let output = GenerationOutput(request: request, tokenizer: nil)
                        loop.submit(request, strategy: generator, output: output) { c in
                            if let m = c.metrics { finished.append((k, m, output.tokens)) }
                        }
                    }
                    loop.run()
                    let wall = (clock.now - start).seconds
                    finished.sort { $0.0 < $1.0 }
                    metrics = finished.map(\.1)
                    produced = finished.map(\.2)
                    tokens = loop.decodeOnlyTokens
                    seconds = loop.decodeOnlySeconds
                    if run > 0 { batchEndToEnd[i].append(Double(metrics.map(\.generatedTokens).reduce(0, +)) / wall) }
                } else {
                    for ids in promptIds {
                        let request = GenerationRequest(prompt: ids, maxNewTokens: newTokens, minNewTokens: newTokens, sampling: sampling,
                                                        eosTokenIds: Set(llama.config.eosTokenIds))
                        let output = GenerationOutput(request: request, tokenizer: nil)
                        let m = try DecodeLoop.generate(model: llama, strategy: generator, request: request, output: output, caches: caches)
                        tokens += m.generatedTokens
                        seconds += m.decodeMs / 1000
                        metrics.append(m)
                        produced.append(output.tokens)
                    }
                }
                let rate = Double(tokens) / seconds
                runRates.append(rate)
                if run > 0 {
                    if batch != nil { batchRates[i].append(rate) }
                    rates[i].append(rate)
                    ratios[i].append(rate / runRates[0])
                }
                last[i] = metrics
                outputs[i] = produced
                var line = String(format: "run %d: %@ %.2f tokens/s", run, Self.describe(specs[i]), rate)
                let drafted = metrics.compactMap(\.drafted).reduce(0, +), accepted = metrics.compactMap(\.accepted).reduce(0, +)
                if drafted > 0 { line += String(format: ", acceptance %.1f%%", 100 * Double(accepted) / Double(drafted)) }
                log(line)
            }
        }

        var verifyRatio: Double?
        if let d = verifyCost {
            verifyRatio = measureVerifyCost(llama, positions: d + 1)
            log(String(format: "one pass of %d positions (all layers + exit head) costs %.2f× a single-position pass", d + 1, verifyRatio!))
        }

        var curve: [PassCost]?
        if let passCost {
            let counts = passCost.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !counts.isEmpty, counts.allSatisfy({ (1...256).contains($0) }) else {
                throw ValidationError("--pass-cost: expected comma-separated row counts in 1...256, found \"\(passCost)\"")
            }
            // The measurement the decode loop calibrates its load-aware speculation with.
            curve = DecodeLoop.measurePassCost(model: llama, rowCounts: [1] + counts.filter { $0 != 1 }, repetitions: max(runs, 3), context: 32)
                .filter { $0.rows != 1 || counts.contains(1) }
                .map { PassCost(rows: $0.rows, medianMs: $0.seconds * 1000, ratioToOneRow: $0.ratio) }
            for c in curve! { log(String(format: "pass of %3d rows: %.1f ms, %.2f× one row", c.rows, c.medianMs, c.ratioToOneRow)) }
        }

        let results = specs.enumerated().map { i, spec -> StrategyResult in
            let m = last[i]
            let drafted = m.compactMap(\.drafted).reduce(0, +), accepted = m.compactMap(\.accepted).reduce(0, +)
            let rounds = m.compactMap(\.rounds).reduce(0, +)
            let generated = m.map(\.generatedTokens).reduce(0, +)
            let exits = m.compactMap(\.averageExitLayer)
            let decodeMs = m.map(\.decodeMs).reduce(0, +)
            let draftMs = m.compactMap(\.draftMs).reduce(0, +), verifyMs = m.compactMap(\.verifyMs).reduce(0, +)
            let split = rounds > 0 && decodeMs > 0
            return StrategyResult(
                strategy: spec.name, options: spec.options, tokensPerSecond: rates[i], medianTokensPerSecond: median(rates[i]),
                medianRatioToBaseline: median(ratios[i]),
                acceptanceRate: drafted > 0 ? Double(accepted) / Double(drafted) : nil,
                tokensPerRound: rounds > 0 ? Double(generated - m.count) / Double(rounds) : nil,
                draftShare: split ? draftMs / decodeMs : nil, verifyShare: split ? verifyMs / decodeMs : nil,
                draftMsPerRound: split ? draftMs / Double(rounds) : nil, verifyMsPerRound: split ? verifyMs / Double(rounds) : nil,
                averageExitLayer: exits.isEmpty ? nil : exits.reduce(0, +) / Double(exits.count),
                layerEvaluationsPerToken: m.map(\.layerEvaluationsPerToken).reduce(0, +) / Double(max(m.count, 1)),
                identicalToBaseline: i == 0 ? nil : outputs[i] == outputs[0],
                batchDecodeTokensPerSecond: batch == nil ? nil : batchRates[i],
                medianBatchDecodeTokensPerSecond: batch == nil ? nil : median(batchRates[i]),
                medianBatchEndToEndTokensPerSecond: batch == nil ? nil : median(batchEndToEnd[i]),
                medianSequenceTokensPerSecond: m.isEmpty ? nil : median(m.map(\.tokensPerSecond)),
                meanStepMs: m.compactMap(\.stepMs).isEmpty ? nil : m.compactMap(\.stepMs).reduce(0, +) / Double(m.compactMap(\.stepMs).count),
                draftsPerRound: m.compactMap(\.draftsPerRound).isEmpty ? nil : m.compactMap(\.draftsPerRound))
        }
        let kv = caches.bytesHeld + (prefillCache?.byteCount ?? 0)
        let rss = peakResidentBytes()
        let report = Report(
            model: model, layers: llama.layerCount, weightBytes: llama.weightBytes, threads: KernelReport.current().threads,
            kernels: KernelReport.current().kernels, runs: runs, newTokens: newTokens, prompts: promptIds.count,
            prefillTokens: promptTokens, prefillTokensPerSecond: prefillRates,
            medianPrefillTokensPerSecond: prefillRates.isEmpty ? nil : median(prefillRates), strategies: results,
            verifyPositions: verifyCost.map { $0 + 1 }, verifyCostRatio: verifyRatio, passCost: curve, peakRssBytes: rss, kvCacheBytes: kv,
            peakRssOverWeightsPlusKv: Double(rss) / Double(llama.weightBytes + kv), batch: batch)
        if json {
            try printJSON(report)
            return
        }
        if let p = report.medianPrefillTokensPerSecond {
            print(String(format: "prefill %d tokens: median %.1f tokens/s", promptTokens, p))
        }
        for r in results {
            var line = String(format: "%-60@ median %7.2f tokens/s  %.2f× baseline", Self.describe(StrategySpec(name: r.strategy, options: r.options)) as NSString,
                              r.medianTokensPerSecond, r.medianRatioToBaseline)
            if let a = r.acceptanceRate { line += String(format: ", acceptance %.1f%%", a * 100) }
            if let t = r.tokensPerRound { line += String(format: ", %.2f tokens/round", t) }
            if let dm = r.draftMsPerRound, let vm = r.verifyMsPerRound {
                line += String(format: ", per round %.1f ms drafting + %.1f ms verifying", dm, vm)
            }
            if let e = r.averageExitLayer { line += String(format: ", average exit %.2f", e) }
            if let b = r.medianBatchEndToEndTokensPerSecond, let s = r.medianSequenceTokensPerSecond, let step = r.meanStepMs {
                line += String(format: " (batch %d: decode-only passes; %.2f tokens/s end to end, %.2f per sequence, step %.1f ms)", batch!, b, s, step)
            }
            if let d = r.draftsPerRound { line += ", drafts per round " + d.map { String(format: "%.1f", $0) }.joined(separator: " ") }
            if let same = r.identicalToBaseline { line += same ? ", output identical to baseline" : ", output differs from baseline" }
            print(line)
        }
        for c in curve ?? [] { print(String(format: "pass of %3d rows: median %.1f ms = %.2f× one row", c.rows, c.medianMs, c.ratioToOneRow)) }
        if let v = verifyRatio { print(String(format: "verification pass of %d positions: %.2f× a single-position pass", verifyCost! + 1, v)) }
        print(String(format: "peak RSS %.2f GB = %.2f × (weights %.2f GB + KV caches %.1f MB)", Double(rss) / 1e9,
                     report.peakRssOverWeightsPlusKv, Double(llama.weightBytes) / 1e9, Double(kv) / 1e6))
    }

    /// The built-in texts, or seeded random ids where the tokenizer is missing or does not fit the model.
    func builtInPrompts(_ llama: LlamaModel, _ tokenizer: Tokenizer?) -> [[Int]] {
        Self.texts.prefix(prompts).map { text in
            let ids = (try? tokenizer?.encode(text)) ?? []
            if !ids.isEmpty && ids.allSatisfy({ $0 < llama.config.vocabSize }) { return ids }
            var rng = SplitMix64(seed: UInt64(text.utf8.count))
            return (0..<16).map { _ in Int(rng.next() % UInt64(llama.config.vocabSize)) }
        }
    }

    static func describe(_ spec: StrategySpec) -> String {
        guard !spec.options.isEmpty else { return spec.name }
        let options = spec.options.sorted { $0.key < $1.key }.map { key, value -> String in
            switch value {
            case let .int(i): return "\(key)=\(i)"
            case let .double(d): return "\(key)=\(d)"
            case let .bool(b): return "\(key)=\(b)"
            case let .string(s): return "\(key)=\(s)"
            default: return "\(key)=\(value)"
            }
        }
        return spec.name + ":" + options.joined(separator: ",")
    }

    /// Median time of one all-layer pass + exit head over `positions` positions ÷ the same for one.
    func measureVerifyCost(_ llama: LlamaModel, positions: Int) -> Double {
        let h = llama.makeActivations(capacity: positions)
        let warm = llama.makeActivations(capacity: 32)
        let logits = llama.makeLogits(capacity: positions)
        let cache = llama.makeCache(capacity: 64 + positions)
        let clock = ContinuousClock()
        func pass(_ n: Int) -> Double {
            cache.reset()
            // Attend over a short context, as a round after a prompt would.
            llama.embed(Array(0..<32), into: warm)
            llama.forward(warm, layers: 0..<llama.layerCount, positions: 0..<32, cache: cache)
            llama.embed(Array(0..<n), into: h)
            let start = clock.now
            llama.forward(h, layers: 0..<llama.layerCount, positions: 32..<(32 + n), cache: cache)
            llama.exitLogits(h, rows: 0..<n, into: logits)
            return (clock.now - start).seconds
        }
        var ratios: [Double] = []
        for _ in 0..<max(runs, 3) {
            let one = pass(1)
            let many = pass(positions)
            ratios.append(many / one)
        }
        return median(ratios)
    }
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// VmHWM from /proc/self/status: the most resident memory this process has held.
func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
