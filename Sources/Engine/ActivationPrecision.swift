import CKernels

/// What the activations of a bf16-weight product are rounded to before the multiply-adds: a
/// process-wide kernel setting (the kernels are shared by every model and sequence of a process,
/// and batched rows must all use the same numerics to stay independent of one another).
///
/// - `f32` (the default): activations stay float32, the numerics of Hugging Face's float32
///   reference that the fixtures check.
/// - `bf16`: activations rounded to bf16 (nearest even) and multiplied with the bf16 dot-product
///   instruction, the numerics llama.cpp uses for bf16 models; about 2^-9 of sum |x·w| away from
///   f32, so greedy text may differ from f32's. Needs AVX512_BF16 (and the AVX-512 kernel set).
///   Only the products of bf16 weights change; int8 and q4 weights quantise activations their
///   own way whatever this says.
public enum ActivationPrecision: String, CaseIterable, Sendable {
    case f32, bf16

    /// The kernel set in use, as `doctor` names it (e.g. "avx2-fma-f16c").
    private static var kernelSet: String { String(cString: ck_simd_name()) }

    /// Whether this CPU and kernel set can run `precision`.
    public static func isAvailable(_ precision: ActivationPrecision) -> Bool {
        switch precision {
        case .f32: return true
        case .bf16: return ck_bf16_activations_available() != 0
        }
    }

    /// What bf16 needs, and what this machine runs instead (for errors that refuse bf16).
    public static var bf16Requirement: String {
        "bf16 activations need a CPU with AVX512_BF16 and the AVX-512 kernel set; this one runs \(kernelSet)"
    }

    public struct Unavailable: Error, CustomStringConvertible, Equatable {
        /// Where the request came from, e.g. `--activations` or a config file's `activations`.
        public let setting: String
        public var description: String { "\(setting): \(ActivationPrecision.bf16Requirement) (use f32)" }
    }

    /// Switches the kernels to `precision`; `setting` names the option or key that asked for it.
    /// Call it before any pass runs: a switch during a pass would mix numerics within it.
    public static func select(_ precision: ActivationPrecision, setting: String) throws {
        let on = ck_set_bf16_activations(precision == .bf16 ? 1 : 0) != 0
        if precision == .bf16, !on {
            throw Unavailable(setting: setting)
        }
    }
}
