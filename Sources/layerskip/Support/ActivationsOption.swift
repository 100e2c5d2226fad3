import ArgumentParser
import Engine

/// `--activations` of generate, bench and eval (the daemon's config key `activations`).
enum ActivationsOption {
    static let help = ArgumentHelp(
        "What bf16-weight products round activations to: f32 (the default; Hugging Face's float32 numerics) or bf16 (llama.cpp's numerics for bf16 models, on CPUs with AVX512_BF16: faster at 4 and more sequences, and greedy text may differ from f32's). Default: f32, or bf16 where CK_BF16_ACTIVATIONS=1.",
        valueName: "f32|bf16")

    /// Switches the kernels before the model runs; nil leaves the environment's choice.
    static func apply(_ value: String?) throws {
        guard let value else { return }
        guard let precision = ActivationPrecision(rawValue: value.lowercased()) else {
            throw ValidationError("--activations: expected f32 or bf16, found \"\(value)\"")
        }
        do { try ActivationPrecision.select(precision, setting: "--activations bf16") } catch let e as ActivationPrecision.Unavailable {
            throw ValidationError(e.description)
        }
    }
}
