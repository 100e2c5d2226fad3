import Foundation
import XCTest
@testable import Tokenization

final class StreamingDecoderTests: XCTestCase {
    private func stream(_ tokenizer: Tokenizer, _ ids: [Int], skip: Bool = false) -> [String] {
        var decoder = tokenizer.makeStreamingDecoder(skipSpecialTokens: skip)
        return ids.map { decoder.push($0) } + [decoder.finish()]
    }

    func testByteFallbackCharacterIsHeldUntilComplete() throws {
        let l2 = try Fixtures.llama2()
        let bytes = try ["<0xE4>", "<0xB8>", "<0xAD>"].map { try XCTUnwrap(l2.id(of: $0)) }
        XCTAssertEqual(l2.decode(bytes), "中")
        var decoder = l2.makeStreamingDecoder()
        XCTAssertEqual(decoder.push(bytes[0]), "")
        XCTAssertEqual(decoder.push(bytes[1]), "")
        // A later byte of the same run could still turn the whole run into U+FFFDs, so the
        // character is released with the next ordinary token (or by finish()).
        XCTAssertEqual(decoder.push(bytes[2]), "")
        XCTAssertEqual(decoder.push(3186), "中 world")  // "▁world"
        XCTAssertEqual(decoder.finish(), "")

        var ending = l2.makeStreamingDecoder()
        XCTAssertEqual(bytes.map { ending.push($0) }, ["", "", ""])
        XCTAssertEqual(ending.finish(), "中")
    }

    func testInvalidByteRunMatchesDecode() throws {
        let l2 = try Fixtures.llama2()
        let ids = try ["<0xE4>", "<0xB8>", "<0xAD>", "<0xE4>"].map { try XCTUnwrap(l2.id(of: $0)) } + [3186]
        let pieces = stream(l2, ids)
        XCTAssertEqual(pieces.joined(), l2.decode(ids))
        XCTAssertEqual(l2.decode(ids), "���� world")
    }

    func testByteLevelPartialCharacters() throws {
        let l3 = try Fixtures.llama3()
        // Byte-level tokens for the single bytes E4, B8, AD (the UTF-8 of 中).
        let ids = try [0xE4, 0xB8, 0xAD].map { byte -> Int in
            try XCTUnwrap(l3.id(of: String(Character(ByteLevelTable.byteToScalar[byte]))))
        }
        var decoder = l3.makeStreamingDecoder()
        XCTAssertEqual(decoder.push(ids[0]), "")
        XCTAssertEqual(decoder.push(ids[1]), "")
        XCTAssertEqual(decoder.push(ids[2]), "中")
        XCTAssertEqual(decoder.finish(), "")
    }

    func testSentencePieceLeadingSpace() throws {
        let l2 = try Fixtures.llama2()
        let ids = try l2.encode("Hello world again")
        XCTAssertEqual(ids.first, 1)
        XCTAssertEqual(stream(l2, ids), ["<s>", " Hello", " world", " again", ""])
        XCTAssertEqual(stream(l2, ids, skip: true), ["", "Hello", " world", " again", ""])
        XCTAssertEqual(stream(l2, Array(ids.dropFirst())), ["Hello", " world", " again", ""])
    }

    func testLegitimateReplacementCharacterIsFlushedByFinish() throws {
        let l3 = try Fixtures.llama3()
        let ids = try l3.encode("ok \u{FFFD}", addSpecialTokens: false)
        let pieces = stream(l3, ids)
        XCTAssertEqual(pieces.joined(), "ok \u{FFFD}")
        // Text ending in U+FFFD looks like an unfinished character, so it waits for finish().
        XCTAssertEqual(pieces[pieces.count - 2], "", "\(pieces)")
        XCTAssertEqual(pieces.last?.unicodeScalars.last, "\u{FFFD}", "\(pieces)")
    }

    func testDecoderIsReusableAfterFinish() throws {
        let l3 = try Fixtures.llama3()
        var decoder = l3.makeStreamingDecoder()
        let first = try l3.encode("one two", addSpecialTokens: false)
        let second = try l3.encode("three", addSpecialTokens: false)
        XCTAssertEqual(first.map { decoder.push($0) }.joined() + decoder.finish(), "one two")
        XCTAssertEqual(second.map { decoder.push($0) }.joined() + decoder.finish(), "three")
    }

    func testLongGenerationStaysConsistent() throws {
        let l3 = try Fixtures.llama3()
        let text = String(repeating: "Streaming 東京 🚀 test, with numbers 12345 and emoji 👨‍👩‍👧. ", count: 40)
        let ids = try l3.encode(text)
        XCTAssertEqual(stream(l3, ids).joined(), l3.decode(ids))
        XCTAssertEqual(stream(l3, ids, skip: true).joined(), text)
    }
}
