import ArgumentParser
import Engine
import Foundation

/// `--weights` of generate, bench and eval: which weights the model's own passes read.
enum WeightsOption {
    static let help = ArgumentHelp(
        "The weights to run: stored (the checkpoint's own dtype, the default; its name, e.g. bf16, means the same), int8 (every layer matrix and the LM head quantised at load, one scale per row) or q4 (4-bit blocks of 32 with an f16 scale, 4.5 bits a weight); the embedding stays as stored. Self-speculation then reproduces decoding with these weights exactly.",
        valueName: "stored|int8|q4")

    /// Loads the model in the named format; a dtype name must be the checkpoint's own.
    static func load(_ directory: URL, weights: String, maxPositions: Int? = nil) throws -> LlamaModel {
        let name = weights.lowercased()
        let dtypeNames = ["bf16", "f16", "f32"]
        let quantized = WeightFormat(rawValue: name).flatMap { $0 == .stored ? nil : $0 }
        guard name == "stored" || quantized != nil || dtypeNames.contains(name) else {
            throw ValidationError("--weights: expected stored, int8, q4 or the checkpoint's dtype (bf16, f16, f32), found \"\(weights)\"")
        }
        let model = try LlamaModel(directory: directory, format: quantized ?? .stored, maxPositions: maxPositions)
        let stored = model.weights.layers.first?.q.dtype ?? model.weights.lmHead.dtype
        if dtypeNames.contains(name), name != stored.rawValue.lowercased() {
            throw ValidationError("--weights \(name): \(directory.path) stores its weights as \(stored.rawValue); converting to another 16/32-bit dtype is not supported (give stored, int8 or q4)")
        }
        return model
    }
}
