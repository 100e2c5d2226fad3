import Foundation
import XCTest
@testable import Training

enum TrainingFixtures {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    /// The 512-token byte-level BPE (Llama 3 split regex) of the tiny fixture model.
    static let tokenizer = fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32/tokenizer.json").path

    static func temporaryDirectory(_ name: String) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layerskip-training-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A small, learnable corpus of Python-like files (functions whose bodies repeat their names).
    static func writeCorpus(in directory: URL, files: Int = 24) -> URL {
        let corpus = directory.appendingPathComponent("corpus")
        try! FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
        let names = ["alpha", "beta", "gamma", "delta", "value", "count", "total", "item"]
        for f in 0..<files {
            var text = "# module \(f)\n\n"
            for i in 0..<12 {
                let a = names[(f + i) % names.count], b = names[(3 * f + i) % names.count]
                text += "def get_\(a)(\(b)):\n    return \(b) + \(i % 10)\n\n"
            }
            try! text.write(to: corpus.appendingPathComponent("m\(f).py"), atomically: true, encoding: .utf8)
        }
        return corpus
    }

    /// A tiny model and run settings as a config mapping (as the YAML file would give it).
    static func mapping(corpus: URL, output: URL, steps: Int = 30, extra: [String: [String: Any]] = [:]) -> [String: Any] {
        var m: [String: Any] = [
            "tokenizer": tokenizer,
            "model": ["hidden_size": 32, "intermediate_size": 64, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
                      "tie_embeddings": true, "max_positions": 128],
            "data": ["paths": [corpus.path], "extensions": [".py"], "validation_fraction": 0.2, "validation_sequences": 8],
            "training": ["steps": steps, "batch_size": 4, "sequence_length": 32, "learning_rate": 0.01,
                         "warmup_steps": 3, "seed": 5, "grad_clip": 1.0],
            "layerskip": ["dropout_max": 0.2, "exit_scale": 1.0, "curriculum": "rotational", "rotation_period": 2],
            "output": ["dir": output.path, "dtype": "f32"],
        ]
        for (section, values) in extra {
            var s = m[section] as? [String: Any] ?? [:]
            for (k, v) in values { s[k] = v }
            m[section] = s
        }
        return m
    }
}
