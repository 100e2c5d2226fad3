import Foundation
import XCTest

/// `--model default` (and no --model at all) finds the embedded model; unknown names fail clearly.
final class ModelNameCLITests: XCTestCase {
    func testDefaultModelComesFromTheEnvironmentOverride() throws {
        let tiny = CLI.fixtures.appendingPathComponent("tiny-bytelevel-gqa-f32").path
        let r = try CLI.run(["generate", "--max-new-tokens", "3", "--json", "Hello"], environment: ["LAYERSKIP_DEFAULT_MODEL": tiny])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.json?["model"] as? String, tiny)
        let named = try CLI.run(["generate", "--model", "default", "--max-new-tokens", "3", "--json", "Hello"],
                                environment: ["LAYERSKIP_DEFAULT_MODEL": tiny])
        XCTAssertEqual(named.status, 0, named.stderr)
        XCTAssertEqual(named.json?["tokens"] as? [Int], r.json?["tokens"] as? [Int])
    }

    /// Inside a checkout the binary finds the committed models/default above .build without any
    /// setting, and on that trained model (not only on the random fixtures) greedy self-speculative
    /// decoding writes exactly what autoregressive decoding writes.
    func testEmbeddedDefaultModelIsFoundAndSelfSpeculationIsExactOnIt() throws {
        let repository = CLI.fixtures.deletingLastPathComponent().deletingLastPathComponent()
        let embedded = repository.appendingPathComponent("models/default")
        let prompt = "class Stack:\n    def __init__(self):\n"
        let plain = try CLI.run(["generate", "--max-new-tokens", "48", "--json", prompt], environment: ["LAYERSKIP_DEFAULT_MODEL": ""])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual((plain.json?["model"] as? String).map { URL(fileURLWithPath: $0).standardizedFileURL.path },
                       embedded.standardizedFileURL.path)
        let tokens = try XCTUnwrap(plain.json?["tokens"] as? [Int])
        XCTAssertGreaterThan(tokens.count, 8)
        for (exitLayer, speculations) in [(2, 4), (4, 3), (6, 6)] {
            let fast = try CLI.run(["generate", "--model", "default", "--strategy", "self-speculative", "--exit-layer", "\(exitLayer)",
                                    "--speculations", "\(speculations)", "--max-new-tokens", "48", "--json", prompt])
            XCTAssertEqual(fast.status, 0, fast.stderr)
            XCTAssertEqual(fast.json?["tokens"] as? [Int], tokens, "E=\(exitLayer) d=\(speculations)")
        }
    }

    func testUnknownModelNameIsAnError() throws {
        let r = try CLI.run(["generate", "--model", "no-such-model", "Hello"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("no-such-model") && r.stderr.contains("known: default"), r.stderr)
    }
}
