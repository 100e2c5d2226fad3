import ArgumentParser
import Engine
import Foundation
import Tokenization
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Per-exit-layer quality on held-out text: loss, perplexity, accuracy, agreement, acceptance rate.",
        discussion: """
            Teacher-forced over sequences of the text: every exit sees the true context. Agreement is the
            fraction of positions where exit E's top-1 equals the last layer's; the acceptance rate is what
            greedy self-speculative decoding with d drafted tokens per round would accept on this text.
            """)

    @Option(help: "Model folder (config.json, model.safetensors, tokenizer.json), or `default`.")
    var model: String

    @Option(name: .customLong("data"), help: "Held-out files, folders or globs (repeatable).")
    var data: [String] = []

    @Option(help: "A training config: evaluate on its held-out (validation) files instead of --data.")
    var config: String?

    @Option(name: .customLong("extension"), help: "Only files ending so, in folders (repeatable).")
    var extensions: [String] = []

    @Option(help: "Tokens per sequence.")
    var length = 256

    @Option(help: "Stop after this many tokens.")
    var maxTokens = 16384

    @Option(name: .customLong("speculations"), help: "Drafted tokens per round (d) for the acceptance rate.")
    var speculations = 6

    @Option(help: "Write an SVG chart of accuracy, agreement and acceptance against exit layer.")
    var svg: String?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(help: "Only list the files that would be evaluated (with --config: its held-out files), one per line.")
    var listFiles = false

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all CPUs).")
    var threads: Int?

    @Option(help: WeightsOption.help)
    var weights = "stored"

    @Option(help: ActivationsOption.help)
    var activations: String?

    func run() throws {
        ThreadSettings.apply(threads)
        try ActivationsOption.apply(activations)
        guard length > 1, maxTokens > 0, speculations > 0 else { throw ValidationError("--length, --max-tokens and --speculations must be positive") }
        if config != nil, !data.isEmpty || !extensions.isEmpty {
            throw ValidationError("give either --config (its held-out files) or --data/--extension, not both")
        }
        let dir = try ModelLocator.resolve(model)
        let llama: LlamaModel
        do { llama = try WeightsOption.load(dir, weights: weights) } catch let e as ModelError {
            throw e.kind == .missingFile ? CLIError.notFound(e.description) : CLIError(message: e.description)
        }
        let tokenizer = try Tokenizer(contentsOf: dir.appendingPathComponent("tokenizer.json"))
        let files: [String]
        if let config {
            var mapping = try TrainCommand.loadMapping(config, overrides: [])
            mapping["tokenizer"] = mapping["tokenizer"] ?? dir.appendingPathComponent("tokenizer.json").path
            let cfg: TrainingConfig
            do { cfg = try TrainingConfig(mapping: mapping, file: config) } catch let e as TrainingError {
                throw CLIError(message: e.description, exitCode: 2)
            }
            let split = try Corpus(paths: cfg.data.paths, extensions: cfg.data.extensions, exclude: cfg.data.exclude,
                                   validationFraction: cfg.data.validationFraction, source: config)
            guard !split.validationFiles.isEmpty else { throw CLIError(message: "\(config): data.validation_fraction leaves no held-out files", exitCode: 2) }
            files = split.validationFiles
        } else {
            guard !data.isEmpty else { throw ValidationError("give --data (held-out text) or --config (its held-out files)") }
            do { files = try Corpus(paths: data, extensions: extensions, validationFraction: 0, source: "--data").trainFiles } catch let e as TrainingError {
                throw CLIError.notFound(e.description)
            }
        }
        if listFiles {
            for file in files { print(file) }
            return
        }
        let n = min(length, llama.maxPositions - 1)
        let sequences = TokenStream(files: files, tokenizer: tokenizer, separator: llama.config.eosTokenIds.first, shuffleSeed: nil)
            .sequences(length: n, maxTokens: maxTokens)
        let result = Evaluator.evaluate(model: llama, sequences: sequences, speculations: speculations, name: dir.lastPathComponent)
        if let svg {
            try Evaluator.svgChart(result, title: "\(dir.lastPathComponent): every exit on \(result.tokens) tokens of \(config.map { "the held-out files of \(URL(fileURLWithPath: $0).lastPathComponent)" } ?? "--data")")
                .write(toFile: svg, atomically: true, encoding: .utf8)
        }
        if json {
            try printJSON(result)
            return
        }
        print("\(result.model): \(result.tokens) tokens in \(result.sequences) sequences of \(n); acceptance with d=\(speculations)")
        print(" E   loss    ppl      acc    agree  accept  tok/round")
        for l in result.layers {
            print(String(format: "%2d  %6.3f  %7.2f  %5.3f  %5.3f  %5.3f   %5.2f", l.exitLayer, l.loss, l.perplexity, l.accuracy,
                         l.agreement, l.acceptanceRate, l.tokensPerRound))
        }
    }
}
