import Foundation
import XCTest

/// The Hugging Face reference fixtures copied into Tests/Fixtures (see its README).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let models = ["tiny-bytelevel-gqa-f32", "tiny-spm-mha-bf16-sharded"]

    static func directory(_ name: String) -> URL { root.appendingPathComponent(name) }

    static func expected(_ name: String) throws -> Expected {
        let data = try Data(contentsOf: directory(name).appendingPathComponent("expected.json"))
        return try JSONDecoder().decode(Expected.self, from: data)
    }

    /// Tolerance on logits: the fixtures were computed in f32 from the stored weights.
    static func logitTolerance(_ name: String) -> Float { name.contains("bf16") ? 1e-3 : 1e-4 }
}

struct Expected: Decodable {
    struct Prompt: Decodable {
        var text: String
        var ids: [Int]
        var logits_last: [String: [Float]]
        var greedy: [String: GreedyValue]
    }
    enum GreedyValue: Decodable {
        case tokens([Int]), number(Double)
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let t = try? c.decode([Int].self) { self = .tokens(t) } else { self = .number(try c.decode(Double.self)) }
        }
        var tokens: [Int]? { if case let .tokens(t) = self { return t }; return nil }
    }
    struct TokenizerCase: Decodable {
        var text: String
        var ids: [Int]
        var ids_with_special: [Int]
        var decoded: String
    }
    var num_layers: Int
    var exit_layers: [Int]
    var tokenizer_cases: [TokenizerCase]
    var prompts: [Prompt]
}
