import ArgumentParser
import Engine
import Foundation
import Tokenization

struct InitModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-model",
        abstract: "Write a Hugging Face model folder with random weights of a published LayerSkip checkpoint's shape.",
        discussion: """
            A stand-in for systems benchmarks when the real (gated, multi-gigabyte) weights are not at hand:
            the text it generates is noise. --late-scale S multiplies o_proj and down_proj of the second half
            of the layers by S, so the middle layer's exit agrees with the full model most of the time
            (S = 0.02 gave 96% top-1 agreement at layer 8 of 16): a SYNTHETIC acceptance rate, to be labelled
            as such wherever it is reported.
            Shapes: \(StandInShape.allCases.map(\.rawValue).joined(separator: ", ")).
            """)

    @Option(help: "Checkpoint shape to copy.")
    var shape: String

    @Option(help: "Weight dtype: bf16, f16 or f32.")
    var dtype: String = "bf16"

    @Option(help: "tokenizer.json to copy into the folder (e.g. a real Llama 3 or Llama 2 tokenizer).")
    var tokenizer: String

    @Option(help: "Output folder (created; existing model files in it are replaced).")
    var out: String

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Scale of o_proj and down_proj in the second half of the layers.")
    var lateScale: Float = 1

    func run() throws {
        guard let shape = StandInShape(rawValue: shape) else {
            throw ValidationError("unknown --shape \"\(self.shape)\"; expected one of \(StandInShape.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let dtype = ["bf16": DType.bf16, "f16": .f16, "f32": .f32][dtype.lowercased()] else {
            throw ValidationError("unknown --dtype \"\(self.dtype)\"; expected bf16, f16 or f32")
        }
        guard lateScale.isFinite else { throw ValidationError("--late-scale must be a finite number") }
        let tokenizerURL = URL(fileURLWithPath: tokenizer)
        let tok = try Tokenizer(contentsOf: tokenizerURL)
        var config = shape.config
        // The toy shape takes its vocabulary from the tokenizer; real shapes must fit theirs.
        if shape == .tiny { config.vocabSize = max(tok.vocabularySize, 8) }
        // Real tokenizer files can carry a few added tokens past the checkpoint's vocabulary (the Llama 3
        // file has <|endoftext|> at 128256); those ids are rejected at generation time, not here.
        if tok.vocabularySize > config.vocabSize + 16 {
            throw CLIError(message: "\(tokenizer) has \(tok.vocabularySize) tokens but the \(shape.rawValue) shape has vocab_size \(config.vocabSize); use a matching tokenizer")
        }
        // Special token ids from the tokenizer, so generation stops where the tokenizer says.
        config.bosTokenId = ["<|begin_of_text|>", "<s>"].lazy.compactMap { tok.id(of: $0) }.first ?? config.bosTokenId
        let eos = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "</s>"].compactMap { tok.id(of: $0) }
        if !eos.isEmpty { config.eosTokenIds = eos }

        let directory = URL(fileURLWithPath: out)
        let bytes = Double(StandInModel.parameterCount(config) * dtype.byteSize)
        standardError(String(format: "writing %@ (%@, %.2f GB) to %@", shape.rawValue, dtype.rawValue, bytes / 1e9, directory.path))
        let interactive = isatty(STDERR_FILENO) == 1
        var lastShown = -1
        try StandInModel.write(config: config, dtype: dtype, to: directory, seed: seed, lateScale: lateScale) { fraction in
            let percent = Int(fraction * 100)
            if percent != lastShown && (interactive || percent % 10 == 0) {
                lastShown = percent
                FileHandle.standardError.write(Data((interactive ? "\r\(percent)%" : "\(percent)%\n").utf8))
            }
        }
        if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
        let tokenizerOut = directory.appendingPathComponent("tokenizer.json")
        if tokenizerURL.standardizedFileURL != tokenizerOut.standardizedFileURL {
            try? FileManager.default.removeItem(at: tokenizerOut)
            try FileManager.default.copyItem(at: tokenizerURL, to: tokenizerOut)
        }
        print(directory.path)
    }
}
