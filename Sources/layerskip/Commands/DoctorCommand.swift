import ArgumentParser
import Foundation

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show the CPU features, the kernel sets in use (ours and OpenBLAS's) and thread counts.")

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() throws {
        ThreadSettings.apply()
        let report = KernelReport.current()
        if json {
            try printJSON(report)
            return
        }
        print("layerskip \(LayerSkip.version)")
        print("CPU features:     \(report.cpuFeatures.isEmpty ? "(none of avx2/fma/f16c/avx512)" : report.cpuFeatures.joined(separator: " "))")
        print("matmul kernels:   \(report.kernels)")
        print("activations:      \(report.activations.joined(separator: ", ")) (--activations, config key activations)")
        print("threads:          \(report.threads)")
        print("OpenBLAS core:    \(report.openblasCore) — \(report.openblasCoreSource)")
        print("OpenBLAS build:   \(report.openblasConfig)")
    }
}
