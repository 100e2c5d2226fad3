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
