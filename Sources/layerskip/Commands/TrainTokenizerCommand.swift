import ArgumentParser
import Foundation
import Tokenization
import Training

struct TrainTokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-tokenizer",
        abstract: "Train a byte-level BPE tokenizer (Llama 3 split regex) on a corpus and write tokenizer.json.",
        discussion: """
            With --config, the corpus is the training config's data section and only its training files are
            read (the held-out files stay unseen). Special tokens: <|begin_of_text|> (id 0, prepended as BOS)
            and <|end_of_text|> (id 1, the document separator).
            """)

    @Option(help: "A training config whose data section names the corpus.")
    var config: String?

    @Option(name: .customLong("data"), help: "Files, folders or globs of text (repeatable; instead of --config).")
    var paths: [String] = []

    @Option(name: .customLong("extension"), help: "Only files ending so, in folders (repeatable, e.g. .py).")
    var extensions: [String] = []

    @Option(help: "Vocabulary size including the 256 bytes and the special tokens.")
    var vocabSize = 8192

    @Option(help: "Pairs seen fewer times are never merged.")
    var minFrequency = 2

    @Option(help: "Stop reading the corpus after this many bytes (0: all).")
    var maxBytes = 0

    @Option(help: "Output tokenizer.json path.")
    var out: String

    func run() throws {
        let corpus: Corpus
        if let config {
            let mapping = try TrainCommand.loadMapping(config, overrides: [])
            var withTokenizer = mapping
            withTokenizer["tokenizer"] = withTokenizer["tokenizer"] ?? out
            let cfg: TrainingConfig
            do { cfg = try TrainingConfig(mapping: withTokenizer, file: config) } catch let e as TrainingError {
                throw CLIError(message: e.description, exitCode: 2)
            }
            corpus = try Corpus(paths: cfg.data.paths, extensions: cfg.data.extensions, exclude: cfg.data.exclude,
                                validationFraction: cfg.data.validationFraction, source: config)
        } else {
            guard !paths.isEmpty else { throw ValidationError("give --config or at least one --data path") }
            corpus = try Corpus(paths: paths, extensions: extensions, validationFraction: 0, source: "--data")
        }
        guard vocabSize >= 258 else { throw ValidationError("--vocab-size must be at least 258 (256 bytes + 2 special tokens)") }
        var trainer = BPETrainer(vocabSize: vocabSize, minFrequency: minFrequency)
        let start = Date()
        for file in corpus.trainFiles {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            trainer.add(text: String(decoding: data, as: UTF8.self))
            if maxBytes > 0 && trainer.bytesSeen >= maxBytes { break }
        }
        standardError(String(format: "read %d files, %.1f MB, %d distinct words in %.1f s",
                             corpus.trainFiles.count, Double(trainer.bytesSeen) / 1e6, trainer.wordCounts.count, Date().timeIntervalSince(start)))
        let result = trainer.train()
        let url = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try trainer.tokenizerJSON(result).write(to: url, options: .atomic)
        // The file must load in our own tokenizer before we call it done.
        let check = try Tokenizer(contentsOf: url)
        standardError(String(format: "%d tokens (%d merges) in %.1f s", check.vocabularySize, result.merges.count, Date().timeIntervalSince(start)))
        print(url.path)
    }
}
