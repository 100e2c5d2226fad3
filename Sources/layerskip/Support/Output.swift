import CKernels
import Foundation

/// JSON on stdout for scripts: one object, keys sorted so the output is stable.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    let data = try encoder.encode(value)
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Compute threads: LAYERSKIP_THREADS or --threads, else every online CPU.
enum ThreadSettings {
    static func apply(_ requested: Int? = nil) {
        if let n = requested ?? ProcessInfo.processInfo.environment["LAYERSKIP_THREADS"].flatMap(Int.init), n > 0 {
            ck_set_threads(Int32(n))
        }
    }
}
