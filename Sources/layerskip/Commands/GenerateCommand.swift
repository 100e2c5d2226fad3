import ArgumentParser
import Engine
import Foundation
import Tokenization

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text for one prompt, streamed to stdout (no daemon, no database).",
        discussion: """
            Greedy decoding with all layers, or with --exit-layer E through the first E layers and the
            exit head (LayerSkip early exit: faster, lossy). The prompt is encoded with the tokenizer's
            special tokens (e.g. BOS). Timings go to stderr after the text; --json prints one object instead.
            """)

    @Option(help: "Hugging Face model folder (config.json, *.safetensors, tokenizer.json).")
    var model: String

    @Option(help: "Maximum number of tokens to generate.")
    var maxNewTokens: Int = 64

    @Option(help: "Leave every token after this many layers (1 ... number of layers).")
    var exitLayer: Int?

    @Option(help: "Ban end-of-sequence tokens for this many generated tokens.")
    var minNewTokens: Int = 0

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all online CPUs).")
    var threads: Int?

    @Flag(help: "Print one JSON object (tokens, text, timings) instead of streaming text.")
    var json = false

    @Argument(help: "The prompt text.")
    var prompt: String

    func validate() throws {
        guard maxNewTokens >= 1 else { throw ValidationError("--max-new-tokens must be at least 1, found \(maxNewTokens)") }
        guard minNewTokens >= 0 else { throw ValidationError("--min-new-tokens must not be negative, found \(minNewTokens)") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, found \(threads)") }
    }

    struct Output: Encodable {
        var model: String
        var promptTokens: Int
        var tokens: [Int]
        var text: String
        var finishReason: String
        var exitLayer: Int
        var layers: Int
        var prefillMs: Double
        var decodeMs: Double
        var tokensPerSecond: Double
        var prefillTokensPerSecond: Double
    }

    func run() throws {
        ThreadSettings.apply(threads)
        let directory = URL(fileURLWithPath: model)
        let tokenizer = try Tokenizer(contentsOf: directory.appendingPathComponent("tokenizer.json"))
        let llama = try LlamaModel(directory: directory)
        let layers = llama.layerCount
        if let exitLayer, !(1...layers).contains(exitLayer) {
            throw ValidationError("--exit-layer must be between 1 and \(layers) (the model's layer count), found \(exitLayer)")
        }
        let ids = tokenizer.encode(prompt, addSpecialTokens: true)
        guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
        if let bad = ids.first(where: { $0 >= llama.config.vocabSize }) {
            throw CLIError(message: "token id \(bad) from tokenizer.json is outside the model's vocabulary (vocab_size \(llama.config.vocabSize))")
        }
        guard ids.count + maxNewTokens <= llama.maxPositions else {
            throw ValidationError("prompt (\(ids.count) tokens) + --max-new-tokens \(maxNewTokens) exceeds the model's \(llama.maxPositions) positions")
        }

        var decoder = tokenizer.makeStreamingDecoder(skipSpecialTokens: true)
        var text = ""
        let result = GreedyGeneration(model: llama).run(
            prompt: ids, maxNewTokens: maxNewTokens, exitLayer: exitLayer, minNewTokens: minNewTokens
        ) { token in
            let piece = decoder.push(token)
            text += piece
            if !json, !piece.isEmpty {
                FileHandle.standardOutput.write(Data(piece.utf8))
            }
            return true
        }
        let tail = decoder.finish()
        text += tail
        let generated = result.tokens.count
        let output = Output(
            model: directory.path, promptTokens: ids.count, tokens: result.tokens, text: text,
            finishReason: result.finishReason, exitLayer: exitLayer ?? layers, layers: layers,
            prefillMs: result.prefillSeconds * 1000, decodeMs: result.decodeSeconds * 1000,
            // The first token comes from the prefill pass, so decode time covers generated - 1 tokens.
            tokensPerSecond: generated > 1 && result.decodeSeconds > 0 ? Double(generated - 1) / result.decodeSeconds : 0,
            prefillTokensPerSecond: result.prefillSeconds > 0 ? Double(ids.count) / result.prefillSeconds : 0)
        if json {
            try printJSON(output)
        } else {
            FileHandle.standardOutput.write(Data((tail + "\n").utf8))
            standardError(String(format: "[%d prompt tokens, %d generated (%@); prefill %.1f ms (%.1f tok/s), decode %.2f tok/s; exit layer %d of %d]",
                                 ids.count, generated, result.finishReason, output.prefillMs, output.prefillTokensPerSecond,
                                 output.tokensPerSecond, output.exitLayer, layers))
        }
    }
}
