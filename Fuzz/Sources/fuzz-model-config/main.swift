// Fuzzes config.json parsing: the input is the whole file.
import Engine
import Foundation

/// FUZZ_SHOW_ERRORS=1 prints why each input was rejected (to check that seeds load).
private let showErrors = ProcessInfo.processInfo.environment["FUZZ_SHOW_ERRORS"] != nil

private func rejected(_ error: Any) {
    if showErrors { FileHandle.standardError.write(Data("rejected: \(error)\n".utf8)) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    do { _ = try ModelConfig.parse(data, file: "config.json") } catch { rejected(error) }
    return 0
}
