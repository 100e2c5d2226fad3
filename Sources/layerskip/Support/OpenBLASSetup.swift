import CKernels
import COpenBLAS
import Engine
import Foundation

/// Debian's OpenBLAS 0.3.21 does not recognise some newer CPUs (AVX-512 Xeons among them) and falls
/// back to its generic SSE3 "Prescott" kernels — 5× slower sgemm. It picks its kernels when the
/// library loads, before any of our code runs, so the fix is to re-execute ourselves once with
/// OPENBLAS_CORETYPE set. A value the user set is never overridden.
enum OpenBLASSetup {
    static let marker = "LAYERSKIP_OPENBLAS_REEXEC"
    /// Kernel sets that use AVX2 or better; anything else on an AVX2 machine is a fallback.
    static let modernCores: Set<String> = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5"]

    static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The OPENBLAS_CORETYPE this CPU should use, or nil when OpenBLAS's own choice is fine.
    static func recommendedCoreType(features: Int32, current: String) -> String? {
        let f = Int(features)
        let hasAVX2 = f & Int(CK_CPU_AVX2) != 0 && f & Int(CK_CPU_FMA) != 0
        guard hasAVX2, !modernCores.contains(current.lowercased()) else { return nil }
        let avx512 = [CK_CPU_AVX512F, CK_CPU_AVX512BW, CK_CPU_AVX512VL, CK_CPU_AVX512DQ].allSatisfy { f & Int($0) != 0 }
        if avx512 { return f & Int(CK_CPU_AVX512BF16) != 0 ? "COOPERLAKE" : "SKYLAKEX" }
        return f & Int(CK_CPU_AMD) != 0 ? "ZEN" : "HASWELL"
    }

    static func reexecIfGenericKernels() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env[marker] == nil else { return }
        // Tests stand in a generic core name to exercise the re-exec on any machine.
        let current = env["LAYERSKIP_TEST_OPENBLAS_CORENAME"] ?? coreName
        guard let coreType = recommendedCoreType(features: ck_cpu_features(), current: current) else { return }
        setenv("OPENBLAS_CORETYPE", coreType, 1)
        setenv(marker, "1", 1)
        let args = CommandLine.arguments
        var cArgs = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &cArgs)
        // exec failed: carry on with the slow kernels rather than not at all.
        unsetenv("OPENBLAS_CORETYPE")
    }

    /// Where the active kernel choice came from, for `doctor`.
    static var coreTypeSource: String {
        let env = ProcessInfo.processInfo.environment
        guard let value = env["OPENBLAS_CORETYPE"] else { return "auto-detected by OpenBLAS" }
        return env[marker] != nil ? "set by layerskip to \(value) (OpenBLAS fell back to generic kernels)" : "OPENBLAS_CORETYPE=\(value) from the environment"
    }
}

/// What `--version` and `doctor` show about the compute kernels in use.
struct KernelReport: Encodable {
    var openblasCore: String
    var openblasCoreSource: String
    var openblasConfig: String
    var kernels: String
    var threads: Int
    var cpuFeatures: [String]
    /// The activation precisions this CPU and kernel set can run (`--activations`).
    var activations: [String]

    static func current() -> KernelReport {
        let f = Int(ck_cpu_features())
        let names: [(Int, String)] = [(CK_CPU_AVX2, "avx2"), (CK_CPU_FMA, "fma"), (CK_CPU_F16C, "f16c"),
                                        (CK_CPU_AVX512F, "avx512f"), (CK_CPU_AVX512BW, "avx512bw"),
                                        (CK_CPU_AVX512VL, "avx512vl"), (CK_CPU_AVX512DQ, "avx512dq"),
                                        (CK_CPU_AVX512BF16, "avx512bf16")]
        return KernelReport(
            openblasCore: OpenBLASSetup.coreName,
            openblasCoreSource: OpenBLASSetup.coreTypeSource,
            openblasConfig: openblas_get_config().map { String(cString: $0) } ?? "unknown",
            kernels: String(cString: ck_simd_name()),
            threads: Int(ck_get_threads()),
            cpuFeatures: names.filter { f & Int($0.0) != 0 }.map { $0.1 },
            activations: ActivationPrecision.allCases.filter(ActivationPrecision.isAvailable).map(\.rawValue))
    }

    var summary: String { "kernels \(kernels), OpenBLAS \(openblasCore), \(threads) threads" }
}
