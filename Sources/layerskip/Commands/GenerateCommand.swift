import ArgumentParser
import Daemon
import Decoding
import Engine
import Foundation
import Tokenization

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text for one or more prompts, batched, to stdout (no daemon, no database).",
        discussion: """
            Strategies: autoregressive (all layers; the default), early-exit (--exit-layer E, or --confidence c
            for a per-token exit), self-speculative (--exit-layer E --speculations d: draft with the first E
            layers, verify with the rest; exactly the full model's output). Without --strategy, --exit-layer or
            --confidence select early-exit. The prompt is encoded with the tokenizer's special tokens (e.g. BOS).
            Metrics go to stderr after the text; --json prints one object with tokens, text and every metric.
            Several prompts (repeat --prompt, or --prompts-file with one JSON object {"text": ...} or one JSON
            string per line) run together in one batch of up to --max-batch sequences; each prompt's output is
            printed as a block `--- prompt N ---` when it finishes (in finishing order), or with --json as one
            JSON object per line (JSONL) with its "index". A prompt's tokens do not depend on its batch-mates.
            With --strategy self-speculative and no --exit-layer (nor --drafter lookup), the settings the flags
            leave out come from the model's `layerskip tune` result in the job store (--config), as for a job
            file; without one the drafts exit at half the layers. stderr (and --json) says which were used.
            """)

    @Option(help: "Hugging Face model folder (config.json, *.safetensors, tokenizer.json), or `default`: the project's own LayerSkip model (models/default).")
    var model: String = ModelLocator.defaultName

    @Option(help: "autoregressive | early-exit | self-speculative")
    var strategy: String?

    @Option(help: "Maximum number of tokens to generate.")
    var maxNewTokens: Int = 64

    @Option(help: "Early exit / draft layer count E (1 ... number of layers).")
    var exitLayer: Int?

    @Option(help: "Self-speculative: tokens drafted per round (d).")
    var speculations: Int?

    @Flag(help: "Self-speculative: stop drafting when the draft is unsure and adapt d to the acceptance.")
    var adaptive = false

    @Option(help: "Self-speculative: weights the drafts read — exact | int8-head | int8 (verification is always exact).")
    var draftPrecision: String?

    @Option(help: "Self-speculative: early-exit drafts score only the K most frequent tokens (by the tokenizer's merge order; end of sequence always among them), through a copy of those LM-head rows — K in 1 ... vocab size, or full (the default). Verification scores every token.")
    var draftVocab: String?

    @Option(help: "Self-speculative: where drafts come from — early-exit | lookup (the text itself: what followed the newest tokens before; needs no --exit-layer) | hybrid (lookup, then early exit; the default).")
    var drafter: String?

    @Option(help: "Self-speculative lookup: the longest n-gram matched (default 3).")
    var lookupNgram: Int?

    @Option(help: "Self-speculative lookup: the most tokens one lookup proposes (default 10).")
    var lookupSpan: Int?

    @Option(help: "Early exit: leave at the first checked layer whose top probability is at least this.")
    var confidence: Double?

    @Option(help: "Early exit with --confidence: check the exit head every this many layers.")
    var checkEvery: Int?

    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Double = 0

    @Option(help: "Sample from the k most likely tokens only (0 = all).")
    var topK: Int = 0

    @Option(help: "Sample from the smallest set of tokens with this total probability (1 = all).")
    var topP: Double = 1

    @Option(help: "Random seed for sampling (reported in the metrics when not given).")
    var seed: UInt64?

    @Option(help: "Stop when the text contains this string (cut from the output); repeatable.")
    var stop: [String] = []

    @Option(help: "Ban end-of-sequence tokens for this many generated tokens.")
    var minNewTokens: Int = 0

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all online CPUs).")
    var threads: Int?

    @Flag(help: "Print one JSON object (tokens, text, metrics) instead of streaming text.")
    var json = false

    @Argument(help: "The prompt text (or use --prompt / --prompts-file).")
    var prompt: String?

    @Option(name: .customLong("prompt"), help: "A prompt; repeatable (all of them run as one batch).")
    var morePrompts: [String] = []

    @Option(help: "A JSONL file of prompts: per line a JSON string or an object with a \"text\" string.")
    var promptsFile: String?

    @Option(help: "Sequences decoded together at most.")
    var maxBatch: Int = 16

    func validate() throws {
        guard maxBatch >= 1 else { throw ValidationError("--max-batch must be at least 1, found \(maxBatch)") }
        if prompt == nil && morePrompts.isEmpty && promptsFile == nil {
            throw ValidationError("give a prompt: as the argument, with --prompt (repeatable) or with --prompts-file")
        }
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1, found \(maxNewTokens)") }
        guard minNewTokens >= 0 else { throw ValidationError("--min-new-tokens must not be negative, found \(minNewTokens)") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, found \(threads)") }
    }

    /// The strategy spec these flags describe, as a job file would write it.
    var spec: StrategySpec {
        let name = strategy ?? (exitLayer != nil || confidence != nil ? "early-exit" : "autoregressive")
        var options: [String: ConfigValue] = [:]
        if let exitLayer { options["exit_layer"] = .int(exitLayer) }
        if let speculations { options["speculations"] = .int(speculations) }
        if adaptive { options["adaptive"] = .bool(true) }
        if let draftPrecision { options["draft_precision"] = .string(draftPrecision) }
        if let draftVocab { options["draft_vocab"] = Int(draftVocab).map(ConfigValue.int) ?? .string(draftVocab) }
        if let drafter { options["drafter"] = .string(drafter) }
        if let lookupNgram { options["lookup_ngram"] = .int(lookupNgram) }
        if let lookupSpan { options["lookup_span"] = .int(lookupSpan) }
        if let confidence { options["confidence"] = .double(confidence) }
        if let checkEvery { options["check_every"] = .int(checkEvery) }
        return StrategySpec(name: name, options: options)
    }

    @Option(help: WeightsOption.help)
    var weights = "stored"

    @Option(help: ActivationsOption.help)
    var activations: String?

    @OptionGroup var daemon: DaemonOptions

    /// `spec` with what it leaves out filled from the model's tune result, the way the daemon's
    /// runner does, and the token ranking a tuned pruned draft head keeps.
    /// A config file that cannot be read is an error; a job store that does not exist (yet) or
    /// cannot be read only means no tune result.
    func resolvedStrategy(_ llama: LlamaModel, directory: URL) throws -> (ResolvedStrategy, TokenRanking?) {
        let spec = self.spec
        guard ResolvedStrategy.takesTuning(spec) else { return (ResolvedStrategy(spec: spec, source: "flags"), nil) }
        let config = try daemon.load()
        var tuning: TuningRecord?
        var note = ""
        do {
            let key = ModelIdentity.key(fingerprint: try ModelIdentity.fingerprint(directory: directory), weights: llama.format.rawValue)
            tuning = try JobStore.open(config, create: false).tuning(modelKey: key)
        } catch {
            note = " (no tune result read: \(error))"
        }
        var ranking: TokenRanking?
        do { ranking = try tuning?.ranking(vocabularySize: llama.config.vocabSize) } catch {
            note += " (its token ranking is bad: \(error); the merge order is used)"
        }
        var resolved = ResolvedStrategy.resolve(spec, tuning: tuning)
        resolved.source += note
        return (resolved, ranking)
    }

    func run() throws {
        ThreadSettings.apply(threads)
        try ActivationsOption.apply(activations)
        let sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let directory = try ModelLocator.resolve(model)
        let config = try ModelConfig.load(from: directory.appendingPathComponent("config.json"))
        let problems = sampling.problems(path: "sampling") + Strategies.registry.problems(spec, model: config)
        if !problems.isEmpty {
            throw ValidationError(problems.map { Self.flagWording($0) }.joined(separator: "\n"))
        }
        let tokenizer = try Tokenizer(contentsOf: directory.appendingPathComponent("tokenizer.json"))
        let llama = try WeightsOption.load(directory, weights: weights)
        let (resolved, ranking) = try resolvedStrategy(llama, directory: directory)
        if resolved.source != "flags" && !json { standardError("settings: \(resolved.settings) (from \(resolved.source))") }
        let generator: ConfiguredStrategy
        do {
            generator = try Strategies.registry.make(resolved.spec, model: llama, context: StrategyContext(tokenizer: tokenizer, tokenRanking: ranking))
        } catch {
            throw CLIError(message: "strategy (\(resolved.settings), from \(resolved.source)): \(error)")
        }

        let texts = try allPrompts()
        var requests: [GenerationRequest] = []
        for (i, text) in texts.enumerated() {
            let label = texts.count == 1 ? "the prompt" : "prompt \(i + 1)"
            let ids = try tokenizer.encode(text, addSpecialTokens: true)
            let request = GenerationRequest(prompt: ids, maxNewTokens: maxNewTokens, minNewTokens: minNewTokens, sampling: sampling,
                                            stopStrings: stop, eosTokenIds: Set(llama.config.eosTokenIds))
            if let problem = DecodeError.check(request, model: llama, strategy: generator) {
                throw CLIError(message: "\(label): \(problem)")
            }
            requests.append(request)
        }
        let budget = requests.prefix(maxBatch).reduce(0) { $0 + KVCache.byteCount(config: llama.config, capacity: generator.requiredPositions(for: $1) + 256) }
        let loop = DecodeLoop(model: llama, caches: KVCachePool(config: llama.config, budget: budget), maxBatch: maxBatch)
        let single = requests.count == 1
        var failure: Error?
        for (index, request) in requests.enumerated() {
            let stream = single && !json
            let output = GenerationOutput(request: request, tokenizer: tokenizer, onText: { piece in
                if stream { FileHandle.standardOutput.write(Data(piece.utf8)) }
            })
            loop.submit(request, strategy: generator, output: output) { completion in
                guard let metrics = completion.metrics else {
                    failure = failure ?? completion.error
                    return
                }
                do { try report(index: single ? nil : index, output: output, metrics: metrics, model: llama, directory: directory, strategy: resolved) } catch {
                    failure = failure ?? error
                }
            }
        }
        loop.run()
        if let failure { throw failure }
    }

    func allPrompts() throws -> [String] {
        var texts = (prompt.map { [$0] } ?? []) + morePrompts
        if let promptsFile { texts += try PromptsFile.read(promptsFile) }
        guard !texts.isEmpty else { throw ValidationError("no prompts (--prompts-file \(promptsFile ?? "") has none)") }
        return texts
    }

    /// Prints one finished prompt: streamed text's newline and the metrics, a block, or a JSON line.
    func report(index: Int?, output: GenerationOutput, metrics: GenerationMetrics, model llama: LlamaModel, directory: URL,
                strategy: ResolvedStrategy) throws {
        if json {
            var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(metrics)) as! [String: Any]
            if let index { object["index"] = index }
            object["tokens"] = output.tokens
            object["text"] = output.text
            object["model"] = directory.path
            object["layers"] = llama.layerCount
            object["strategy_options"] = try JSONSerialization.jsonObject(with: JSONEncoder().encode(strategy.spec.options))
            object["settings_source"] = strategy.source
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else if let index {
            FileHandle.standardOutput.write(Data("--- prompt \(index + 1) ---\n\(output.text)\n".utf8))
            standardError("prompt \(index + 1): " + Self.summary(metrics, layers: llama.layerCount))
        } else {
            FileHandle.standardOutput.write(Data("\n".utf8))
            standardError(Self.summary(metrics, layers: llama.layerCount))
        }
    }

    /// Problems are reported in the flags' words (strategy.exit_layer → --exit-layer).
    static func flagWording(_ p: ConfigurationProblem) -> String {
        let key = p.path.split(separator: ".").last.map(String.init) ?? p.path
        let flag = key == "name" ? "--strategy" : "--" + key.replacingOccurrences(of: "_", with: "-")
        return "\(flag): expected \(p.expected), found \(p.found)"
    }

    static func summary(_ m: GenerationMetrics, layers: Int) -> String {
        var parts = [
            "\(m.strategy): \(m.promptTokens) prompt tokens, \(m.generatedTokens) generated (\(m.finishReason.rawValue))",
            String(format: "prefill %.1f ms, decode %.1f ms, %.2f tokens/s (%.2f end to end)", m.prefillMs, m.decodeMs,
                   m.tokensPerSecond, m.endToEndTokensPerSecond),
            String(format: "%.2f layer evaluations per token of %d layers", m.layerEvaluationsPerToken, layers),
        ]
        if let rate = m.acceptanceRate, let rounds = m.rounds, let perRound = m.tokensPerRound {
            parts.append(String(format: "drafted %d, accepted %d (%.1f%%), %d rounds, %.2f tokens per round",
                                m.drafted ?? 0, m.accepted ?? 0, rate * 100, rounds, perRound))
        }
        if let proposed = m.lookupDrafted, let kept = m.lookupAccepted {
            parts.append("lookup proposed \(proposed), accepted \(kept)")
        }
        if let exit = m.averageExitLayer { parts.append(String(format: "average exit layer %.2f", exit)) }
        if let batch = m.batchSize, let step = m.stepMs { parts.append(String(format: "batch %.1f, step %.1f ms", batch, step)) }
        if let seed = m.seed { parts.append("seed \(seed)") }
        return "[" + parts.joined(separator: "; ") + "]"
    }
}
