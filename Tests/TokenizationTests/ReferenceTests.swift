import Foundation
import XCTest
@testable import Tokenization

/// Differential tests against the Hugging Face `tokenizers` library: the expectations in
/// Tests/Fixtures/tokenizer-reference were written by scripts/tokenizer-reference.py.
final class ReferenceTests: XCTestCase {
    private struct Case {
        let text: String
        let ids: [Int]
        let idsWithSpecial: [Int]
        let decoded: String
        let decodedWithSpecial: String
        let decodedWithSpecialSkipped: String
    }

    private struct DecodeCase {
        let ids: [Int]
        let decoded: String
        let decodedSkipSpecial: String
    }

    private func reference(_ name: String) throws -> (cases: [Case], decodeCases: [DecodeCase]) {
        let json = try Fixtures.json("tokenizer-reference/\(name).json")
        let rawCases = try XCTUnwrap(json["cases"] as? [[String: Any]])
        let cases = try rawCases.map { c in
            Case(text: try XCTUnwrap(c["text"] as? String),
                 ids: try XCTUnwrap(intArray(c["ids"])),
                 idsWithSpecial: try XCTUnwrap(intArray(c["ids_with_special"])),
                 decoded: try XCTUnwrap(c["decoded"] as? String),
                 decodedWithSpecial: try XCTUnwrap(c["decoded_with_special"] as? String),
                 decodedWithSpecialSkipped: try XCTUnwrap(c["decoded_with_special_skipped"] as? String))
        }
        let rawDecode = try XCTUnwrap(json["decode_cases"] as? [[String: Any]])
        let decodeCases = try rawDecode.map { c in
            DecodeCase(ids: try XCTUnwrap(intArray(c["ids"])),
                       decoded: try XCTUnwrap(c["decoded"] as? String),
                       decodedSkipSpecial: try XCTUnwrap(c["decoded_skip_special"] as? String))
        }
        XCTAssertGreaterThanOrEqual(cases.count, 60)
        return (cases, decodeCases)
    }

    private func checkEncodeDecode(_ tokenizer: Tokenizer, _ name: String) throws {
        let (cases, decodeCases) = try reference(name)
        for c in cases {
            let label = "\(name) \"\(visible(String(c.text.prefix(60))))\""
            try XCTAssertEqual(tokenizer.encode(c.text, addSpecialTokens: false), c.ids, "ids, \(label)")
            try XCTAssertEqual(tokenizer.encode(c.text, addSpecialTokens: true), c.idsWithSpecial, "ids with specials, \(label)")
            XCTAssertEqual(visible(tokenizer.decode(c.ids)), visible(c.decoded), "decode, \(label)")
            XCTAssertEqual(visible(tokenizer.decode(c.idsWithSpecial)), visible(c.decodedWithSpecial),
                           "decode with specials, \(label)")
            XCTAssertEqual(visible(tokenizer.decode(c.idsWithSpecial, skipSpecialTokens: true)),
                           visible(c.decodedWithSpecialSkipped), "decode skipping specials, \(label)")
        }
        for c in decodeCases {
            XCTAssertEqual(visible(tokenizer.decode(c.ids)), visible(c.decoded), "\(name) decode \(c.ids)")
            XCTAssertEqual(visible(tokenizer.decode(c.ids, skipSpecialTokens: true)), visible(c.decodedSkipSpecial),
                           "\(name) decode skipping specials \(c.ids)")
        }
    }

    private func checkStreaming(_ tokenizer: Tokenizer, _ name: String) throws {
        let (cases, decodeCases) = try reference(name)
        var sequences = cases.flatMap { [$0.ids, $0.idsWithSpecial] }
        sequences += decodeCases.map(\.ids)
        for ids in sequences {
            for skip in [false, true] {
                var stream = tokenizer.makeStreamingDecoder(skipSpecialTokens: skip)
                var pieces: [String] = []
                for id in ids { pieces.append(stream.push(id)) }
                pieces.append(stream.finish())
                XCTAssertEqual(visible(pieces.joined()), visible(tokenizer.decode(ids, skipSpecialTokens: skip)),
                               "\(name) streaming \(ids) skip=\(skip)")
            }
        }
    }

    func testLlama3MatchesReference() throws {
        try checkEncodeDecode(try Fixtures.llama3(), "llama3")
    }

    func testLlama2MatchesReference() throws {
        try checkEncodeDecode(try Fixtures.llama2(), "llama2")
    }

    func testLlama3Streaming() throws {
        try checkStreaming(try Fixtures.llama3(), "llama3")
    }

    func testLlama2Streaming() throws {
        try checkStreaming(try Fixtures.llama2(), "llama2")
    }

    private func synthetic(_ name: String) throws -> Tokenizer {
        let json = try Fixtures.json("tokenizer-reference/\(name).json")
        let path = try XCTUnwrap(json["tokenizer"] as? String)
        return try Tokenizer(contentsOf: Fixtures.url(path))
    }

    /// Synthetic tokenizers trained by the reference script to cover components the Llama
    /// files do not use (added-token flags, NFKC, Digits, Split behaviours, legacy merges,
    /// fuse_unk, ignore_merges, subword prefix/suffix, no decoder, normalized special tokens).
    func testSyntheticTokenizersMatchReference() throws {
        for name in ["synthetic-a", "synthetic-b", "synthetic-c", "synthetic-d"] {
            let tokenizer = try synthetic(name)
            try checkEncodeDecode(tokenizer, name)
            try checkStreaming(tokenizer, name)
        }
    }

    /// The embedded model's own tokenizer (trained by `layerskip train-tokenizer`, byte-level BPE with
    /// the Llama 3 split regex) on Python pieces it never saw: HF `tokenizers` and this engine agree.
    func testEmbeddedModelTokenizerMatchesReference() throws {
        let tokenizer = try synthetic("default-model")
        try checkEncodeDecode(tokenizer, "default-model")
        try checkStreaming(tokenizer, "default-model")
    }

    func testVocabularyLookups() throws {
        let l3 = try Fixtures.llama3()
        // This file's added tokens end with <|endoftext|> at 128256, one past the model vocabulary.
        XCTAssertEqual(l3.vocabularySize, 128_257)
        XCTAssertEqual(l3.id(of: "<|endoftext|>"), 128_256)
        XCTAssertEqual(l3.id(of: "<|begin_of_text|>"), 128_000)
        XCTAssertEqual(l3.token(of: 128_001), "<|end_of_text|>")
        XCTAssertTrue(l3.isSpecial(128_000))
        XCTAssertFalse(l3.isSpecial(9906))
        XCTAssertEqual(l3.token(of: 9906), "Hello")
        XCTAssertNil(l3.token(of: -1))
        XCTAssertNil(l3.token(of: 1_000_000))
        XCTAssertNil(l3.id(of: "definitely not a token"))

        let l2 = try Fixtures.llama2()
        XCTAssertEqual(l2.vocabularySize, 32_000)
        XCTAssertEqual(l2.id(of: "<s>"), 1)
        XCTAssertEqual(l2.id(of: "<0xE4>"), 231)
        XCTAssertTrue(l2.isSpecial(2))
        XCTAssertFalse(l2.isSpecial(231))
    }
}
