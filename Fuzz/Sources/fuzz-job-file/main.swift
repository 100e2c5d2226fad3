// Fuzzes job-file validation: the input is a whole job file, read both as YAML and as an OpenAI
// batch file (JSONL). An accepted job's spec must read back as itself from its stored JSON.
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
    for result in [JobFileValidator.validate(data, file: "job.yaml", context: context),
                   OpenAIBatchFile.validate(data, file: "batch.jsonl", context: context)] {
        switch result {
        case let .success(job):
            let stored = try! JSONEncoder().encode(job.spec)
            precondition(try! JSONDecoder().decode(JobSpec.self, from: stored) == job.spec, "a spec does not read back as itself")
        case let .failure(error): rejected(error)
        }
    }
    return 0
}
