import Foundation
import XCTest
@testable import Tokenization

/// Fixture locations and tokenizers shared across test classes (the Llama 3 file is 17 MB,
/// so each real tokenizer is loaded once per test run).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func url(_ relative: String) -> URL {
        root.appendingPathComponent(relative)
    }

    private static func load(_ relative: String) -> (tokenizer: Result<Tokenizer, Error>, seconds: Double) {
        let start = Date()
        let result = Result { try Tokenizer(contentsOf: url(relative)) }
        return (result, Date().timeIntervalSince(start))
    }

    // Static lets are initialised once, lazily and thread-safely.
    static let llama3Loaded = load("tokenizers/llama3/tokenizer.json")
    static let llama2Loaded = load("tokenizers/llama2/tokenizer.json")

    static func llama3() throws -> Tokenizer { try llama3Loaded.tokenizer.get() }
    static func llama2() throws -> Tokenizer { try llama2Loaded.tokenizer.get() }

    static func json(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(relative))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw NSError(domain: "Fixtures", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(relative) is not a JSON object"])
        }
        return object
    }
}

/// Reads ids from a JSON array of numbers.
func intArray(_ value: Any?) -> [Int]? {
    guard let array = value as? [Any] else { return nil }
    var out: [Int] = []
    for item in array {
        if let i = item as? Int { out.append(i) } else if let n = item as? NSNumber { out.append(n.intValue) } else { return nil }
    }
    return out
}

/// Escapes a string for failure messages, so invisible characters are visible.
func visible(_ s: String) -> String {
    s.unicodeScalars.map { scalar -> String in
        scalar.value < 0x20 || (0x7F...0xA0).contains(scalar.value) || scalar.properties.generalCategory == .format
            ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar)
    }.joined()
}

/// Builds a tokenizer from inline JSON (for component and error tests).
func makeTokenizer(_ json: String, source: String = "test.json") throws -> Tokenizer {
    try Tokenizer(data: Data(json.utf8), source: source)
}

/// Asserts that `body` throws a `TokenizerError` and returns it for further checks.
func assertTokenizerError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> TokenizerError? {
    do {
        try body()
        XCTFail("expected a TokenizerError", file: file, line: line)
    } catch let error as TokenizerError {
        return error
    } catch {
        XCTFail("expected a TokenizerError, got \(error)", file: file, line: line)
    }
    return nil
}
