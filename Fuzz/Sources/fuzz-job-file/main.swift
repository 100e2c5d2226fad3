// Fuzzes job-file validation: the input is a whole job file (YAML).
import AutoregressivePlugin
import Daemon
import Decoding
import EarlyExitPlugin
import Foundation
import SelfSpeculativePlugin

/// FUZZ_SHOW_ERRORS=1 prints why each input was rejected (to check that seeds load).
private let showErrors = ProcessInfo.processInfo.environment["FUZZ_SHOW_ERRORS"] != nil

private func rejected(_ error: Any) {
    if showErrors { FileHandle.standardError.write(Data("rejected: \(error)\n".utf8)) }
}

/// The repository root, found from this file (Fuzz/Sources/fuzz-job-file/main.swift).
private let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Relative paths (prompts_file:) resolve here: a fresh folder holding the prompts file the seeds name.
private let baseDirectory: URL = makeBaseDirectory()

private func makeBaseDirectory() -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-job-file-\(getpid())", isDirectory: true)
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let prompts = #"{"id": "a", "text": "def f(x):\n"}"# + "\n" + #"{"id": "b", "text": "class C:\n"}"# + "\n"
    try! Data(prompts.utf8).write(to: dir.appendingPathComponent("prompts.jsonl"))
    atexit { try? FileManager.default.removeItem(at: baseDirectory) }
    return dir
}

private let context: JobContext = {
    let tiny = repositoryRoot.appendingPathComponent("Tests/Fixtures/tiny-bytelevel-gqa-f32", isDirectory: true)
    guard FileManager.default.fileExists(atPath: tiny.appendingPathComponent("config.json").path) else {
        fatalError("fixture model not found at \(tiny.path)")
    }
    return JobContext(
        baseDirectory: baseDirectory, models: ["tiny": tiny],
        registry: StrategyRegistry([AutoregressiveStrategy.plugin, EarlyExitStrategy.plugin, SelfSpeculativeStrategy.plugin])
    )
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    switch JobFileValidator.validate(data, file: "job.yaml", context: context) {
    case let .success(job): _ = String(describing: job)
    case let .failure(error): rejected(error)
    }
    return 0
}
