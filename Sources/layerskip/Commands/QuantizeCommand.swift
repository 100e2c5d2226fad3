import ArgumentParser
import Engine
import Foundation

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model folder with int8 or 4-bit weights that loads without quantising (seconds, not a pass over the weights).",
        discussion: """
            The folder has the source's config.json (plus "layerskip_weights": "int8" or "q4"), its tokenizer
            files, and one model.safetensors: every layer matrix and the LM head quantised (NAME.weight,
            NAME.weight_scale), the embedding and norms as stored. int8: I8 values with an F32 scale per row.
            q4: U8 (rows, 32 bytes per 64 weights) nibbles with an F16 scale per block of 32, (rows, blocks). It loads
            to exactly the logits of --weights int8 / q4 on the source. Transformers cannot read it; layerskip
            loads it as it is.
            """)

    @Option(help: "Model folder (config.json, safetensors weights, tokenizer.json), or `default`.")
    var model: String

    @Option(help: ArgumentHelp("The format to write.", valueName: "int8|q4"))
    var weights = "int8"

    @Option(help: "The folder to write (created; must not exist or be empty).")
    var out: String

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all CPUs).")
    var threads: Int?

    func run() throws {
        ThreadSettings.apply(threads)
        guard let format = WeightFormat(rawValue: weights.lowercased()), format != .stored else {
            throw ValidationError("--weights: expected int8 or q4, found \"\(weights)\"")
        }
        let source = try ModelLocator.resolve(model)
        let target = URL(fileURLWithPath: out, isDirectory: true)
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: target.path), !existing.isEmpty {
            throw CLIError(message: "\(target.path): exists and is not empty (give a new folder)")
        }
        let started = Date()
        let llama: LlamaModel
        do { llama = try LlamaModel(directory: source, format: format) } catch let e as ModelError {
            throw e.kind == .missingFile ? CLIError.notFound(e.description) : CLIError(message: e.description)
        }
        let quantized = Date()
        try llama.writeQuantizedFolder(to: target)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: target.appendingPathComponent("model.safetensors").path)[.size] as? Int) ?? 0
        FileHandle.standardError.write(Data(String(format: "quantize: %@ → %@: %.2f GB, quantised in %.1f s, written in %.1f s\n",
                                                   source.path, target.path, Double(bytes) / 1e9, quantized.timeIntervalSince(started),
                                                   Date().timeIntervalSince(quantized)).utf8))
    }
}
