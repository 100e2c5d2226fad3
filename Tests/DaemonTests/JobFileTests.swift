import Daemon
import Decoding
import Engine
import Foundation
import XCTest

final class JobFileTests: XCTestCase {
    func context(_ base: URL = Paths.jobs) -> JobContext {
        JobContext(baseDirectory: base, models: ["tiny": Paths.tinyModel], registry: testRegistry)
    }

    func problems(_ yaml: String, base: URL = Paths.jobs) -> [ConfigurationProblem] {
        switch JobFileValidator.validate(Data(yaml.utf8), file: "job.yaml", context: context(base)) {
        case .success: return []
        case let .failure(e): return e.problems
        }
    }

    func testValidJobResolvesModelPromptsAndDefaults() throws {
        let yaml = """
            model: tiny
            strategy: {name: early-exit, exit_layer: 2}
            max_new_tokens: 5
            stop: "\\n\\n"
            sampling: {temperature: 0.7, top_k: 40, top_p: 0.9, seed: 7}
            prompts:
              - {id: a, text: "x"}
              - "plain string"
            """
        let job = try JobFileValidator.validate(Data(yaml.utf8), file: "job.yaml", context: context()).get()
        XCTAssertEqual(job.spec.strategy, StrategySpec(name: "early-exit", options: ["exit_layer": .int(2)]))
        XCTAssertEqual(job.spec.prompts, [PromptSpec(id: "a", text: "x"), PromptSpec(id: "2", text: "plain string")])
        XCTAssertEqual(job.spec.stop, ["\n\n"])
        XCTAssertEqual(job.spec.sampling, SamplingParameters(temperature: 0.7, topK: 40, topP: 0.9, seed: 7))
        XCTAssertEqual(job.spec.priority, 0)
        XCTAssertEqual(job.modelLayers, 4)
        XCTAssertEqual(job.modelDirectory.standardizedFileURL.path, Paths.tinyModel.path)
    }

    /// Every problem comes back at once, each with its path, what was expected and what was found.
    func testEveryProblemReportedAtOnceWithPaths() {
        let found = problems("""
            model: tiny
            strategy: {name: early-exit, exit_layer: 9}
            max_new_tokens: "many"
            priorty: 3
            sampling: {temperature: -1, topk: 2}
            stop: [1]
            prompts:
              - {id: a, txt: "x"}
            """)
        let paths = Set(found.map(\.path))
        for path in ["strategy.exit_layer", "max_new_tokens", "priorty", "sampling.temperature", "sampling.topk", "stop[0]",
                     "prompts[0].txt", "prompts[0].text"] {
            XCTAssertTrue(paths.contains(path), "no problem at \(path): \(found)")
        }
        let unknown = found.first { $0.path == "priorty" }
        XCTAssertEqual(unknown?.found, "an unknown key")
        XCTAssertEqual(found.first { $0.path == "max_new_tokens" }?.found, "the string \"many\"")
        XCTAssertTrue(found.first { $0.path == "strategy.exit_layer" }?.expected.contains("1...4") ?? false)
    }

    func testStructuralProblems() {
        XCTAssertEqual(problems("model: tiny\nstrategy: autoregressive\n").map(\.path), ["prompts"])
        XCTAssertEqual(problems("[1, 2]").first?.path, "(top level)")
        XCTAssertEqual(problems("").first?.found, "an empty document")
        XCTAssertTrue(problems("model: [unclosed").first?.expected.contains("valid YAML") ?? false)
        XCTAssertEqual(problems("model: nope\nprompts: [x]").first?.path, "model")
        XCTAssertEqual(problems("model: tiny\nstrategy: warp-drive\nprompts: [x]").map(\.path), ["strategy.name"])
        XCTAssertEqual(problems("model: tiny\nprompts: [x]\nprompts_file: p.jsonl").map(\.path), ["prompts_file"])
        XCTAssertEqual(problems("model: tiny\nprompts: [{id: a, text: x}, {id: a, text: y}]").map(\.path), ["prompts"])
        XCTAssertEqual(problems("model: ./no/such/folder\nprompts: [x]").map(\.path), ["model"])
        XCTAssertTrue(problems("prompts: " + String(repeating: "[", count: 100_000)).first?.expected.contains("valid YAML") ?? false)
    }

    /// A few lines of aliases that expand to 10^10 values are refused quickly, not expanded.
    func testAliasBombIsRefused() {
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for i in 1..<10 { lines.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]") }
        let started = Date()
        let found = problems(lines.joined(separator: "\n") + "\nprompts: *a9\n")
        XCTAssertTrue(found.first?.found.contains("alias") ?? false, "\(found)")
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        // Ordinary anchors still work.
        XCTAssertEqual(problems("model: tiny\nbase: &p {id: a, text: x}\nprompts: [*p]\n").map(\.path), ["base"])
    }

    func testPromptsFileIsReadRelativeToTheJobFile() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "{\"id\": \"one\", \"text\": \"a\"}\n\n{\"text\": \"b\"}\n".write(to: dir.appendingPathComponent("p.jsonl"), atomically: true, encoding: .utf8)
        let job = try JobFileValidator.validate(Data("model: tiny\nprompts_file: p.jsonl\n".utf8), file: "j", context: context(dir)).get()
        XCTAssertEqual(job.spec.prompts.map(\.id), ["one", "2"])
        try "{\"id\": 1, \"text\": \"a\"}\nnot json\n".write(to: dir.appendingPathComponent("bad.jsonl"), atomically: true, encoding: .utf8)
        XCTAssertEqual(problems("model: tiny\nprompts_file: bad.jsonl\n", base: dir).map(\.path), ["bad.jsonl:2"])
        XCTAssertEqual(problems("model: tiny\nprompts_file: missing.jsonl\n", base: dir).map(\.path), ["prompts_file"])
    }

    func testModelFolderPathRelativeToJobFile() throws {
        let job = try JobFileValidator.validate(Data("model: ../Tests/Fixtures/tiny-bytelevel-gqa-f32\nprompts: [x]\n".utf8),
                                                file: "j", context: context()).get()
        XCTAssertEqual(job.modelDirectory.path, Paths.tinyModel.path)
    }

    func testDaemonConfigReportsEveryProblem() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("c.yaml")
        try "state_directory: s\nlog_level: loud\ncache_memory_budget: lots\nwat: 1\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DaemonConfig.load(from: file)) { error in
            let text = "\(error)"
            for needle in ["log_level", "cache_memory_budget", "wat"] { XCTAssertTrue(text.contains(needle), text) }
        }
        try "state_directory: s\ncache_memory_budget: 512MiB\nmodels: {a: m}\n".write(to: file, atomically: true, encoding: .utf8)
        let config = try DaemonConfig.load(from: file)
        XCTAssertEqual(config.cacheMemoryBudget, 512 << 20)
        XCTAssertEqual(config.stateDirectory.path, dir.appendingPathComponent("s").path)
        XCTAssertEqual(config.spoolDirectory.path, dir.appendingPathComponent("s/spool").path)
        XCTAssertEqual(config.models["a"]?.path, dir.appendingPathComponent("m").path)
        XCTAssertNil(config.maxBatch, "max_batch is auto by default")
        for (value, expected) in [("auto", nil), ("8", 8 as Int?)] {
            try "state_directory: s\nmax_batch: \(value)\n".write(to: file, atomically: true, encoding: .utf8)
            XCTAssertEqual(try DaemonConfig.load(from: file).maxBatch, expected)
        }
        for bad in ["0", "257", "lots", "2.5"] {
            try "state_directory: s\nmax_batch: \(bad)\n".write(to: file, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try DaemonConfig.load(from: file)) { XCTAssertTrue("\($0)".contains("max_batch"), "\($0)") }
        }
        XCTAssertNil(config.activations, "activations: the kernels' default unless set")
        try "state_directory: s\nactivations: f32\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try DaemonConfig.load(from: file).activations, .f32)
        // bf16 is accepted only where the CPU runs it; elsewhere the error says why, naming the key.
        try "state_directory: s\nactivations: bf16\n".write(to: file, atomically: true, encoding: .utf8)
        if ActivationPrecision.isAvailable(.bf16) {
            XCTAssertEqual(try DaemonConfig.load(from: file).activations, .bf16)
        } else {
            XCTAssertThrowsError(try DaemonConfig.load(from: file)) {
                XCTAssertTrue("\($0)".contains("activations") && "\($0)".contains("AVX512_BF16"), "\($0)")
            }
        }
        try "state_directory: s\nactivations: f16\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try DaemonConfig.load(from: file)) { XCTAssertTrue("\($0)".contains("activations: expected f32 or bf16"), "\($0)") }
    }

    /// A model entry may be a mapping with `weights:`; bad values, unknown keys and one folder with
    /// two formats are named errors.
    func testModelEntriesCarryWeights() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("c.yaml")
        try "state_directory: s\nmodels:\n  a: {path: m, weights: int8}\n  b: n\n  c: {path: o, weights: q4}\n".write(to: file, atomically: true, encoding: .utf8)
        let config = try DaemonConfig.load(from: file)
        XCTAssertEqual(config.models["a"]?.path, dir.appendingPathComponent("m").path)
        XCTAssertEqual(config.modelWeights, [DaemonConfig.modelKey(dir.appendingPathComponent("m")): .int8,
                                             DaemonConfig.modelKey(dir.appendingPathComponent("o")): .q4])
        for (bad, needle) in [("a: {path: m, weights: int4}", "models.a.weights"), ("a: {path: m, wieghts: int8}", "models.a.wieghts"),
                              ("a: {weights: int8}", "models.a.path"), ("a: {path: m, weights: int8}\n  b: m", "models.b"),
                              ("a: {path: m, weights: int8}\n  b: {path: m, weights: stored}", "models.b.weights")] {
            try "state_directory: s\nmodels:\n  \(bad)\n".write(to: file, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try DaemonConfig.load(from: file), bad) { XCTAssertTrue("\($0)".contains(needle), "\(bad): \($0)") }
        }
    }

    /// `store:` is sqlite or a PostgreSQL URL without a password (the password from a file);
    /// `lease_seconds`, `worker_name` and `metrics_textfile` are checked; every problem is named.
    func testStoreKeys() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("c.yaml")
        try """
            state_directory: s
            store: {postgresql: "postgresql://ls@db.example/q?sslmode=require", password_file: pw}
            lease_seconds: 20
            worker_name: rack3-07
            metrics_textfile: m/layerskip.prom
            """.write(to: file, atomically: true, encoding: .utf8)
        let config = try DaemonConfig.load(from: file)
        XCTAssertEqual(config.store, .postgresql(PostgresLocation(url: "postgresql://ls@db.example/q?sslmode=require",
                                                                  passwordFile: dir.appendingPathComponent("pw"))))
        XCTAssertEqual(config.leaseSeconds, 20)
        XCTAssertEqual(config.worker.name, "rack3-07")
        XCTAssertEqual(config.worker.leaseSeconds, 20)
        XCTAssertEqual(config.metricsTextfile?.path, dir.appendingPathComponent("m/layerskip.prom").path)
        try "state_directory: s\n".write(to: file, atomically: true, encoding: .utf8)
        let plain = try DaemonConfig.load(from: file)
        XCTAssertEqual(plain.store, .sqlite)
        XCTAssertNil(plain.worker.models, "a single-host worker claims any job")
        XCTAssertTrue(plain.worker.name.hasSuffix(":" + dir.appendingPathComponent("s").path), plain.worker.name)
        for (bad, needle) in [("store: mysql", "store"), ("store: {postgresql: \"mysql://x\"}", "store.postgresql"),
                              ("store: {postgresql: \"postgresql://u:secret@h/db\"}", "without a password"),
                              ("store: {postgresql: \"postgresql://h/db\", pasword_file: x}", "store.pasword_file"),
                              ("lease_seconds: 1", "lease_seconds"), ("lease_seconds: soon", "lease_seconds"),
                              ("worker_name: \"\"", "worker_name"), ("metrics_textfile: \"\"", "metrics_textfile")] {
            try "state_directory: s\n\(bad)\n".write(to: file, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try DaemonConfig.load(from: file), bad) { XCTAssertTrue("\($0)".contains(needle), "\(bad): \($0)") }
        }
    }

    /// A job's model key is its configured name (or its folder) with the weights it runs with,
    /// and a worker on a shared store can run exactly the keys its config resolves.
    func testModelKeysNameTheModelAndItsWeights() throws {
        var config = DaemonConfig(stateDirectory: URL(fileURLWithPath: "/s"), models: ["tiny": Paths.tinyModel])
        XCTAssertEqual(config.modelKey(model: "tiny", directory: Paths.tinyModel), "tiny@stored")
        XCTAssertEqual(config.modelKey(model: Paths.tinyModel.path, directory: Paths.tinyModel), DaemonConfig.modelKey(Paths.tinyModel) + "@stored")
        config.modelWeights[DaemonConfig.modelKey(Paths.tinyModel)] = .q4
        XCTAssertEqual(config.modelKey(model: "tiny", directory: Paths.tinyModel), "tiny@q4")
        config.modelDirectories = [Paths.fixtures]
        let runnable = config.runnableModels()
        XCTAssertEqual(runnable["tiny@q4"], Paths.tinyModel)
        XCTAssertNil(runnable["tiny@stored"])
        let other = Paths.fixtures.appendingPathComponent("tiny-spm-mha-bf16-sharded")
        if FileManager.default.fileExists(atPath: other.appendingPathComponent("config.json").path) {
            XCTAssertEqual(runnable[DaemonConfig.modelKey(other) + "@stored"], other, "a model folder under model_directories, by path")
        }
        let job = try JobFileValidator.validate(Data("model: tiny\nprompts: [x]\n".utf8), file: "j",
                                                context: JobContext(baseDirectory: Paths.fixtures, models: config.models, registry: testRegistry,
                                                                    modelWeights: config.modelWeights)).get()
        XCTAssertEqual(job.modelKey, "tiny@q4")
    }

    /// The shipped config parses (its paths need not exist here).
    func testShippedConfigParses() throws {
        let config = try DaemonConfig.load(from: Paths.repository.appendingPathComponent("etc/layerskip.yaml"))
        XCTAssertEqual(config.stateDirectory.path, "/var/lib/layerskip")
        XCTAssertEqual(config.spoolDirectory.path, "/var/spool/layerskip")
        XCTAssertNil(config.maxBatch)
    }
}
