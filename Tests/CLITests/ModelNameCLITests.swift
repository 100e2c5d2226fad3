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

    /// Inside a checkout the binary finds models/default above .build without any setting.
    func testDefaultModelInTheCheckoutIsFoundWithoutSettings() throws {
        let repository = CLI.fixtures.deletingLastPathComponent().deletingLastPathComponent()
        let embedded = repository.appendingPathComponent("models/default")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: embedded.appendingPathComponent("config.json").path),
                          "models/default has no trained model in this checkout")
        let r = try CLI.run(["generate", "--max-new-tokens", "8", "--json", "def "], environment: ["LAYERSKIP_DEFAULT_MODEL": ""])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual((r.json?["model"] as? String).map { URL(fileURLWithPath: $0).standardizedFileURL.path },
                       embedded.standardizedFileURL.path)
    }

    func testUnknownModelNameIsAnError() throws {
        let r = try CLI.run(["generate", "--model", "no-such-model", "Hello"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("no-such-model") && r.stderr.contains("known: default"), r.stderr)
    }
}
