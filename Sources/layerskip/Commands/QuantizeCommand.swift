import ArgumentParser
import Engine
import Foundation

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Write a model folder with int8 weights that loads without quantising (seconds, not a pass over the weights).",
        discussion: """
            The folder has the source's config.json (plus "layerskip_weights": "int8"), its tokenizer files, and
            one model.safetensors: every layer matrix and the LM head as I8 with an F32 scale per row
            (NAME.weight, NAME.weight_scale), the embedding and norms as stored. It loads to exactly the logits of
            --weights int8 on the source. Transformers cannot read it; layerskip loads it as it is.
            """)

    @Option(help: "Model folder (config.json, safetensors weights, tokenizer.json), or `default`.")
    var model: String

    @Option(help: ArgumentHelp("The format to write.", valueName: "int8"))
    var weights = "int8"

    @Option(help: "The folder to write (created; must not exist or be empty).")
    var out: String

    @Option(help: "Compute threads (default: LAYERSKIP_THREADS or all CPUs).")
    var threads: Int?

    func run() throws {
        ThreadSettings.apply(threads)
        guard weights.lowercased() == "int8" else {
            throw ValidationError("--weights: only int8 can be written, found \"\(weights)\"")
        }
        let source = try ModelLocator.resolve(model)
        let target = URL(fileURLWithPath: out, isDirectory: true)
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: target.path), !existing.isEmpty {
            throw CLIError(message: "\(target.path): exists and is not empty (give a new folder)")
        }
        let started = Date()
        let llama: LlamaModel
        do { llama = try LlamaModel(directory: source, format: .int8) } catch let e as ModelError {
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
