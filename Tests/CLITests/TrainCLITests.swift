import Foundation
import XCTest

/// train, train-tokenizer and eval through the real binary, on a tiny model and corpus.
final class TrainCLITests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-train-cli-\(getpid())-\(name.hashValue)")
        try? FileManager.default.removeItem(at: dir)
        let corpus = dir.appendingPathComponent("corpus")
        try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
        for f in 0..<8 {
            let text = (0..<10).map { "def f\($0 + f)(x):\n    return x * \($0)\n" }.joined(separator: "\n")
            try text.write(to: corpus.appendingPathComponent("m\(f).py"), atomically: true, encoding: .utf8)
        }
        let tokenizer = CLI.fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32/tokenizer.json").path
        let yaml = """
            tokenizer: \(tokenizer)
            model: {hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 1}
            data: {paths: [corpus], extensions: [.py], validation_fraction: 0.25, validation_sequences: 2}
            training: {steps: 4, batch_size: 2, sequence_length: 16, learning_rate: 0.01, warmup_steps: 1}
            layerskip: {dropout_max: 0.2, exit_scale: 1.0, curriculum: rotational}
            output: {dir: out, log_every: 1, eval_every: 2, checkpoint_every: 2, dtype: f32}
            """
        try yaml.write(to: dir.appendingPathComponent("train.yaml"), atomically: true, encoding: .utf8)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testTrainResumeAndEval() throws {
        let config = dir.appendingPathComponent("train.yaml").path
        let first = try CLI.run(["train", "--config", config, "--max-steps", "2"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stderr.contains("step 2/4"), first.stderr)
        let second = try CLI.run(["train", "--config", config])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stderr.contains("resumed from") && second.stderr.contains("at step 2"), second.stderr)
        XCTAssertTrue(second.stderr.contains("validation @ step 4"), second.stderr)
        XCTAssertTrue(second.stderr.contains("throughput:"), second.stderr)
        let out = dir.appendingPathComponent("out")
        for file in ["config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        let log = try String(contentsOf: out.appendingPathComponent("train_log.jsonl"), encoding: .utf8)
        XCTAssertEqual(log.split(separator: "\n").filter { $0.contains("\"loss\"") }.count, 4)

        let svg = dir.appendingPathComponent("chart.svg").path
        let eval = try CLI.run(["eval", "--model", out.path, "--data", dir.appendingPathComponent("corpus").path,
                                "--length", "16", "--max-tokens", "64", "--json", "--svg", svg])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let layers = try XCTUnwrap(eval.json?["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.count, 2)
        XCTAssertEqual(layers[1]["agreement"] as? Double, 1)
        XCTAssertEqual(eval.json?["tokens"] as? Int, 64)
        XCTAssertTrue(try String(contentsOfFile: svg, encoding: .utf8).contains("<polyline"))
        // --config evaluates the config's held-out files: 25% of the 8 corpus files, none of them training files.
        let listed = try CLI.run(["eval", "--model", out.path, "--config", config, "--list-files"])
        XCTAssertEqual(listed.status, 0, listed.stderr)
        let heldOut = listed.stdout.split(separator: "\n").map(String.init)
        XCTAssertFalse(heldOut.isEmpty)
        XCTAssertTrue(heldOut.allSatisfy { $0.hasSuffix(".py") && FileManager.default.fileExists(atPath: $0) }, listed.stdout)
        XCTAssertLessThan(heldOut.count, 8)
        let table = try CLI.run(["eval", "--model", out.path, "--data", dir.appendingPathComponent("corpus").path, "--length", "16", "--max-tokens", "32"])
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssertTrue(table.stdout.contains(" E   loss"), table.stdout)
    }

    func testConfigErrorsAreUsageErrors() throws {
        let config = dir.appendingPathComponent("train.yaml").path
        let bad = try CLI.run(["train", "--config", config, "--set", "training.batch_sise=3"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("training.batch_sise: unknown key"), bad.stderr)
        let missing = try CLI.run(["train", "--config", dir.appendingPathComponent("nope.yaml").path])
        XCTAssertEqual(missing.status, 3, missing.stderr)
        let noModel = try CLI.run(["eval", "--model", dir.appendingPathComponent("nope").path, "--data", dir.path])
        XCTAssertEqual(noModel.status, 3, noModel.stderr)
        // --config chooses its own held-out files, so --data beside it would be silently ignored.
        let both = try CLI.run(["eval", "--model", dir.path, "--config", config, "--data", dir.path])
        XCTAssertNotEqual(both.status, 0)
        XCTAssertTrue(both.stderr.contains("not both"), both.stderr)
    }

    /// `--out` is a command-line path, so it is relative to where the command runs; output.dir in the file
    /// stays relative to the config file.
    func testOutIsRelativeToTheWorkingDirectory() throws {
        let config = dir.appendingPathComponent("train.yaml").path
        let cwd = dir.appendingPathComponent("elsewhere")
        try FileManager.default.createDirectory(at: cwd, withIntermediateDirectories: true)
        let run = try CLI.run(["train", "--config", config, "--steps", "1", "--out", "mine"], directory: cwd)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: cwd.appendingPathComponent("mine/model.safetensors").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("mine").path))
    }

    func testTrainTokenizerWritesALoadableTokenizer() throws {
        let out = dir.appendingPathComponent("tok/tokenizer.json").path
        let r = try CLI.run(["train-tokenizer", "--data", dir.appendingPathComponent("corpus").path, "--extension", ".py",
                             "--vocab-size", "270", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("270 tokens (12 merges)"), r.stderr)
        let tok = try CLI.run(["tokenize", "--model", out, "--json", "def f3(x):\n    return x * 3\n"])
        XCTAssertEqual(tok.status, 0, tok.stderr)
        let ids = try XCTUnwrap(tok.json?["ids"] as? [Int])
        XCTAssertEqual(ids.first, 0)   // BOS from the post-processor
        XCTAssertLessThan(ids.count, 20)
    }
}

/// A training process killed with SIGKILL mid-run, then started again with the same command, ends
/// with the same weights, byte for byte, as a run that was never interrupted.
final class TrainKillResumeCLITests: XCTestCase {
    func testKilledRunResumesToIdenticalWeights() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-train-kill-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        let corpus = dir.appendingPathComponent("corpus")
        try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
        for f in 0..<6 {
            let text = (0..<20).map { "def g\($0 * f)(y):\n    return y - \($0)\n" }.joined(separator: "\n")
            try text.write(to: corpus.appendingPathComponent("m\(f).py"), atomically: true, encoding: .utf8)
        }
        let tokenizer = CLI.fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32/tokenizer.json").path
        let steps = 400
        func config(_ out: String) throws -> String {
            let path = dir.appendingPathComponent("\(out).yaml").path
            try """
                tokenizer: \(tokenizer)
                model: {hidden_size: 32, intermediate_size: 64, num_layers: 3, num_heads: 2, num_kv_heads: 1}
                data: {paths: [corpus], validation_fraction: 0}
                training: {steps: \(steps), batch_size: 2, accumulation: 2, sequence_length: 16, learning_rate: 0.005, warmup_steps: 5, seed: 3}
                layerskip: {dropout_max: 0.3, dropout_time: exp, exit_scale: 1.0, curriculum: rotational, rotation_period: 2}
                output: {dir: \(out), log_every: 1, checkpoint_every: 7, dtype: f32}
                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let straight = try CLI.run(["train", "--config", try config("straight")])
        XCTAssertEqual(straight.status, 0, straight.stderr)

        let killedConfig = try config("killed")
        let process = Process()
        process.executableURL = CLI.binary
        process.arguments = ["train", "--config", killedConfig]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Kill once a few checkpoints exist but well before the end.
        let log = dir.appendingPathComponent("killed/train_log.jsonl").path
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let lines = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 30 { break }
            usleep(2000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "the run ended before it could be killed; make it longer")
        let linesAtKill = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").count
        XCTAssertLessThan(linesAtKill, steps)

        let resumed = try CLI.run(["train", "--config", killedConfig])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resumed from"), resumed.stderr)
        let a = try Data(contentsOf: dir.appendingPathComponent("straight/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("killed/model.safetensors"))
        XCTAssertEqual(a, b, "weights after kill + resume differ from the uninterrupted run")
        // The log of the resumed run has each step once, as the uninterrupted one.
        func loggedSteps(_ run: String) throws -> [Int] {
            try String(contentsOf: dir.appendingPathComponent("\(run)/train_log.jsonl"), encoding: .utf8).split(separator: "\n").compactMap {
                (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] != nil
                    ? (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int : nil
            }
        }
        XCTAssertEqual(try loggedSteps("killed"), Array(1...steps))
        XCTAssertEqual(try loggedSteps("straight"), Array(1...steps))
    }
}
