import Foundation
import XCTest
@testable import Tokenization

/// The tokenizer cases recorded with the two tiny reference models (Tests/Fixtures/README.md).
final class FixtureModelTests: XCTestCase {
    private func check(_ folder: String) throws {
        let tokenizer = try Tokenizer(contentsOf: Fixtures.url("\(folder)/tokenizer.json"))
        let expected = try Fixtures.json("\(folder)/expected.json")
        let cases = try XCTUnwrap(expected["tokenizer_cases"] as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String)
            let label = "\(folder) \"\(visible(text))\""
            try XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: false), try XCTUnwrap(intArray(c["ids"])), "ids, \(label)")
            try XCTAssertEqual(tokenizer.encode(text, addSpecialTokens: true), try XCTUnwrap(intArray(c["ids_with_special"])),
                           "ids with specials, \(label)")
            let ids = try XCTUnwrap(intArray(c["ids"]))
            XCTAssertEqual(tokenizer.decode(ids), try XCTUnwrap(c["decoded"] as? String), "decoded, \(label)")

            var stream = tokenizer.makeStreamingDecoder()
            let streamed = ids.map { stream.push($0) }.joined() + stream.finish()
            XCTAssertEqual(streamed, tokenizer.decode(ids), "streamed, \(label)")
        }
        let prompts = try XCTUnwrap(expected["prompts"] as? [[String: Any]])
        XCTAssertFalse(prompts.isEmpty)
        for p in prompts {
            let text = try XCTUnwrap(p["text"] as? String)
            try XCTAssertEqual(tokenizer.encode(text), try XCTUnwrap(intArray(p["ids"])), "prompt \(folder) \"\(visible(text))\"")
        }
    }

    func testByteLevelFixture() throws {
        try check("tiny-bytelevel-gqa-f32")
    }

    func testSentencePieceFixture() throws {
        try check("tiny-spm-mha-bf16-sharded")
    }
}
