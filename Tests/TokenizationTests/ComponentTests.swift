import Foundation
import XCTest
@testable import Tokenization

/// Unit tests of single components; expectations are those of the Python `tokenizers`
/// package for the same inputs.
final class ComponentTests: XCTestCase {
    private func node(_ json: String) throws -> JSONNode {
        JSONNode(value: try JSONParser.parse(Data(json.utf8)), path: "x", file: "test.json")
    }

    private func preTokenize(_ json: String, _ text: String) throws -> [String] {
        let pre = try PreTokenizer.parse(node(json))
        return try pre.preTokenize([Piece(scalars: Array(text.unicodeScalars), atOrigin: true)]).map { String(scalars: $0.scalars) }
    }

    func testSplitBehaviors() throws {
        let expected: [(String, Bool, [String])] = [
            ("Removed", false, ["the", "final", "countdown"]),
            ("Removed", true, ["-", "-", "-"]),
            ("Isolated", false, ["the", "-", "final", "-", "-", "countdown"]),
            ("MergedWithPrevious", false, ["the-", "final-", "-", "countdown"]),
            ("MergedWithPrevious", true, ["the", "-final", "-", "-countdown"]),
            ("MergedWithNext", false, ["the", "-final", "-", "-countdown"]),
            ("MergedWithNext", true, ["the-", "final-", "-", "countdown"]),
            ("Contiguous", false, ["the", "-", "final", "--", "countdown"]),
        ]
        for (behavior, invert, pieces) in expected {
            let json = #"{"type": "Split", "pattern": {"String": "-"}, "behavior": "\#(behavior)", "invert": \#(invert)}"#
            XCTAssertEqual(try preTokenize(json, "the-final--countdown"), pieces, "\(behavior) invert=\(invert)")
        }
        XCTAssertEqual(try preTokenize(#"{"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Isolated"}"#, "ab12cd345"),
                       ["ab", "12", "cd", "345"])
    }

    func testDigits() throws {
        XCTAssertEqual(try preTokenize(#"{"type": "Digits", "individual_digits": true}"#, "Call 123 now ½²"),
                       ["Call ", "1", "2", "3", " now ", "½", "²"])
        XCTAssertEqual(try preTokenize(#"{"type": "Digits", "individual_digits": false}"#, "Call 123 now ½²"),
                       ["Call ", "123", " now ", "½²"])
    }

    func testMetaspace() throws {
        let text = "Hey  my friend "
        let cases: [(String, Bool, [String])] = [
            ("always", true, ["▁Hey", "▁", "▁my", "▁friend", "▁"]),
            ("always", false, ["▁Hey▁▁my▁friend▁"]),
            ("first", true, ["▁Hey", "▁", "▁my", "▁friend", "▁"]),
            ("never", true, ["Hey", "▁", "▁my", "▁friend", "▁"]),
            ("never", false, ["Hey▁▁my▁friend▁"]),
        ]
        for (scheme, split, pieces) in cases {
            let json = #"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "\#(scheme)", "split": \#(split)}"#
            XCTAssertEqual(try preTokenize(json, text), pieces, "\(scheme) split=\(split)")
        }
        // The legacy boolean stands for always/never.
        XCTAssertEqual(try preTokenize(#"{"type": "Metaspace", "replacement": "▁", "add_prefix_space": false}"#, "a b"), ["a", "▁b"])
        // "first" only prepends to a piece that starts the input.
        let first = try PreTokenizer.parse(node(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}"#))
        let later = try first.preTokenize([Piece(scalars: Array("how are".unicodeScalars), atOrigin: false)])
        XCTAssertEqual(later.map { String(scalars: $0.scalars) }, ["how▁are"])
    }

    func testByteLevelPreTokenizer() throws {
        XCTAssertEqual(try preTokenize(#"{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}"#, "Hello  world's 123 ü!"),
                       ["ĠHello", "Ġ", "Ġworld", "'s", "Ġ123", "ĠÃ¼", "!"])
        XCTAssertEqual(try preTokenize(#"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}"#, "Hello  world"),
                       ["HelloĠĠworld"])
    }

    func testByteLevelTableRoundTrips() {
        XCTAssertEqual(Set(ByteLevelTable.byteToScalar).count, 256)
        for b in 0..<256 {
            XCTAssertEqual(ByteLevelTable.byte(for: ByteLevelTable.byteToScalar[b]), UInt8(b))
        }
        XCTAssertEqual(ByteLevelTable.byteToScalar[0x20], "Ġ")
        XCTAssertEqual(ByteLevelTable.byteToScalar[0x0A], "Ċ")
        XCTAssertEqual(ByteLevelTable.byteToScalar[0x41], "A")
    }

    func testNormalizers() throws {
        func normalize(_ json: String, _ text: String) throws -> String {
            String(scalars: try Normalizer.parse(node(json)).normalize(Array(text.unicodeScalars)))
        }
        XCTAssertEqual(try normalize(#"{"type": "NFKC"}"#, "ﬁ ①  Å e\u{301}"), "fi 1  Å é")
        XCTAssertEqual(Array(try normalize(#"{"type": "NFC"}"#, "ﬁ Å e\u{301}").unicodeScalars),
                       Array("ﬁ \u{C5} \u{E9}".unicodeScalars))
        XCTAssertEqual(Array(try normalize(#"{"type": "NFD"}"#, "\u{E9}").unicodeScalars), ["e", "\u{301}"])
        XCTAssertEqual(try normalize(#"{"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": "_"}"#, "a  b\t\nc"), "a_b_c")
        XCTAssertEqual(try normalize(#"{"type": "Replace", "pattern": {"String": "$1"}, "content": "$0"}"#, "a$1b"), "a$0b")
        let spm = #"{"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}"#
        XCTAssertEqual(try normalize(spm, "hi there"), "▁hi▁there")
        XCTAssertEqual(try normalize(spm, ""), "")
    }

    func testDecoders() throws {
        func decode(_ json: String, _ tokens: [String]) throws -> String {
            try Decoder.parse(node(json)).decodeChain(tokens).joined()
        }
        XCTAssertEqual(try decode(#"{"type": "Strip", "content": " ", "start": 2, "stop": 1}"#, ["  a  ", "b ", " ", ""]), "a b")
        XCTAssertEqual(try decode(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}"#, ["▁Hey", "▁▁friend"]), "Hey  friend")
        XCTAssertEqual(try decode(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"}"#, ["▁Hey", "▁friend"]), " Hey friend")
        XCTAssertEqual(try decode(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}"#, ["a▁b▁", "▁c"]), "ab c")
        XCTAssertEqual(try decode(#"{"type": "ByteFallback"}"#, ["<0x61>", "<0xe4>", "<0xB8>", "<0xAD>", "x", "<0x+A>", "<0xZZ>"]),
                       "a中x\n<0xZZ>")
        XCTAssertEqual(try decode(#"{"type": "ByteFallback"}"#, ["<0xE4>", "<0xB8>", "y"]), "\u{FFFD}\u{FFFD}y")
        XCTAssertEqual(try decode(#"{"type": "ByteLevel"}"#, ["ĠHello", "Ġä¸", "Ń", "<|x|>"]), " Hello 中<|x|>")
        XCTAssertEqual(try decode(#"{"type": "ByteLevel"}"#, ["ð", "Ł", "A"]), "\u{FFFD}A")
        XCTAssertEqual(try decode(#"{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}"#, ["▁a▁", "b"]), " a b")
    }

    func testMergesAsArraysOrStrings() throws {
        let vocab = #"{"h": 0, "e": 1, "l": 2, "o": 3, "he": 4, "ll": 5, "llo": 6, "hello": 7}"#
        let strings = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": \#(vocab), "merges": ["h e", "l l", "ll o", "he llo"]}"#))
        let arrays = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": \#(vocab), "merges": [["h", "e"], ["l", "l"], ["ll", "o"], ["he", "llo"]]}"#))
        for text in ["hello", "hellohe", "lloh", "ollehh"] {
            try XCTAssertEqual(strings.encode(text), arrays.encode(text), text)
        }
        try XCTAssertEqual(strings.encode("hello"), [7])
        try XCTAssertEqual(strings.encode("ollehh"), [3, 5, 1, 0, 0])
    }

    func testMergePriorityFollowsRankNotPosition() throws {
        // "abc": merge "b c" ranks before "a b", so the result is a + bc, not ab + c.
        let model = #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ["b c", "a b"]}"#
        let tokenizer = try makeTokenizer(tokenizerJSON(model: model))
        try XCTAssertEqual(tokenizer.encode("abc"), [0, 4])
        try XCTAssertEqual(tokenizer.encode("abab"), [3, 3])
        // Equal pairs merge left to right: "aaa" -> "aa" + "a".
        let repeated = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "aa": 1}, "merges": ["a a"]}"#))
        try XCTAssertEqual(repeated.encode("aaa"), [1, 0])
        try XCTAssertEqual(repeated.encode("aaaa"), [1, 1])
    }

    func testUnknownsByteFallbackAndFusing() throws {
        func model(fuse: Bool, fallback: Bool) -> String {
            #"{"type": "BPE", "unk_token": "<unk>", "fuse_unk": \#(fuse), "byte_fallback": \#(fallback), "vocab": {"<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3}, "merges": []}"#
        }
        let plain = try makeTokenizer(tokenizerJSON(model: model(fuse: false, fallback: false)))
        try XCTAssertEqual(plain.encode("axya"), [1, 0, 0, 1])
        let fused = try makeTokenizer(tokenizerJSON(model: model(fuse: true, fallback: false)))
        try XCTAssertEqual(fused.encode("axya"), [1, 0, 1])
        let fallback = try makeTokenizer(tokenizerJSON(model: model(fuse: true, fallback: true)))
        try XCTAssertEqual(fallback.encode("aéxy"), [1, 2, 3, 0])
        // Without an unk token unknown characters are dropped, as in the reference.
        let noUnk = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0}, "merges": []}"#))
        try XCTAssertEqual(noUnk.encode("axa"), [0, 0])
    }

    func testIgnoreMerges() throws {
        // With ignore_merges a word that is itself in the vocabulary is taken whole.
        let base = #""vocab": {"a": 0, "b": 1, "c": 2, "bc": 3, "abc": 4}, "merges": ["b c"]"#
        let merging = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", \#(base)}"#))
        try XCTAssertEqual(merging.encode("abc"), [0, 3])
        let whole = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "ignore_merges": true, \#(base)}"#))
        try XCTAssertEqual(whole.encode("abc"), [4])
    }

    func testAddedTokenFlags() throws {
        // "b" is already in the model vocabulary: it keeps id 1 (its written id 9 is ignored,
        // as in the reference) but becomes special.
        let added = #"""
            [{"id": 3, "content": "<l>", "lstrip": true, "rstrip": false, "single_word": false, "normalized": false, "special": true},
             {"id": 4, "content": "<r>", "lstrip": false, "rstrip": true, "single_word": false, "normalized": false, "special": true},
             {"id": 5, "content": "ab", "lstrip": false, "rstrip": false, "single_word": true, "normalized": false, "special": false},
             {"id": 9, "content": "b", "lstrip": false, "rstrip": false, "single_word": false, "normalized": false, "special": true}]
            """#
        let model = #"{"type": "BPE", "vocab": {"a": 0, "b": 1, " ": 2}, "merges": []}"#
        let tokenizer = try makeTokenizer(tokenizerJSON(model: model, addedTokens: added))
        try XCTAssertEqual(tokenizer.encode("a  <l> b"), [0, 3, 2, 1])
        try XCTAssertEqual(tokenizer.encode("a <r>  b"), [0, 2, 4, 1])
        try XCTAssertEqual(tokenizer.encode("ab aab ab_ ab"), [5, 2, 0, 0, 1, 2, 0, 1, 2, 5])
        XCTAssertEqual(tokenizer.vocabularySize, 6)
        XCTAssertEqual(tokenizer.id(of: "b"), 1)
        XCTAssertTrue(tokenizer.isSpecial(3))
        XCTAssertTrue(tokenizer.isSpecial(1))
        XCTAssertFalse(tokenizer.isSpecial(5))
        XCTAssertEqual(tokenizer.decode([0, 3, 5, 1]), "a <l> ab b")  // no decoder: tokens joined by spaces
        XCTAssertEqual(tokenizer.decode([0, 3, 5, 1], skipSpecialTokens: true), "a ab")
    }

    func testAddedTokenIdsFollowTheVocabulary() throws {
        // New added tokens are numbered from the vocabulary's entry count, in file order.
        let added = #"""
            [{"id": 100, "content": "<x>", "special": true}, {"id": 200, "content": "<y>", "special": false}]
            """#
        let tokenizer = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}"#,
                                                        addedTokens: added))
        XCTAssertEqual(tokenizer.id(of: "<x>"), 2)
        XCTAssertEqual(tokenizer.id(of: "<y>"), 3)
        try XCTAssertEqual(tokenizer.encode("a<y>b<x>"), [0, 3, 1, 2])
        XCTAssertEqual(tokenizer.vocabularySize, 4)
    }

    func testLongestAddedTokenWins() throws {
        let added = #"""
            [{"id": 4, "content": "<a>", "special": true}, {"id": 5, "content": "<a><b>", "special": true}]
            """#
        let tokenizer = try makeTokenizer(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"<": 0, ">": 1, "a": 2, "b": 3}, "merges": []}"#,
                                                        addedTokens: added))
        try XCTAssertEqual(tokenizer.encode("<a><b><a>b"), [5, 4, 3])
    }

    func testTemplateProcessingForms() throws {
        let model = #"{"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2}, "merges": []}"#
        let specials = #""special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}"#
        let listForm = #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}], "pair": [], \#(specials)}"#
        let stringForm = #"{"type": "TemplateProcessing", "single": "<s> $A </s>", "pair": "<s> $A </s> $B:1", \#(specials)}"#
        for post in [listForm, stringForm, #"{"type": "Sequence", "processors": [{"type": "ByteLevel"}, \#(listForm)]}"#] {
            let tokenizer = try makeTokenizer(tokenizerJSON(model: model, postProcessor: post))
            try XCTAssertEqual(tokenizer.encode("aa"), [0, 2, 2, 1])
            try XCTAssertEqual(tokenizer.encode("aa", addSpecialTokens: false), [2, 2])
            try XCTAssertEqual(tokenizer.encode(""), [0, 1])
        }
    }

    func testExactStringKeys() throws {
        // "é" precomposed and decomposed are different tokens; Swift's String equality
        // would treat them as one.
        let model = #"{"type": "BPE", "vocab": {"\u00e9": 0, "e": 1, "\u0301": 2, "e\u0301": 3}, "merges": ["e \u0301"]}"#
        let tokenizer = try makeTokenizer(tokenizerJSON(model: model))
        try XCTAssertEqual(tokenizer.encode("\u{E9}"), [0])
        try XCTAssertEqual(tokenizer.encode("e\u{301}"), [3])
        XCTAssertEqual(tokenizer.id(of: "e\u{301}"), 3)
        XCTAssertEqual(tokenizer.id(of: "\u{E9}"), 0)
        XCTAssertEqual(tokenizer.vocabularySize, 4)
    }

    func testOnigurumaClassesInICU() throws {
        // Oniguruma's \w has no Join_Control (ZWNJ/ZWJ) but all numbers (½).
        let regex = try ScalarRegex(pattern: #"[^\w\s]"#, origin: "test")
        XCTAssertEqual(try regex.matches(in: Array("a\u{200C}\u{200D}½!".unicodeScalars)), [1..<2, 2..<3, 4..<5])
        XCTAssertEqual(ScalarRegex.translateFromOniguruma(#"\w+\\w[\W]"#), #"[\p{L}\p{M}\p{N}\p{Pc}]+\\w[[^\p{L}\p{M}\p{N}\p{Pc}]]"#)
        XCTAssertEqual(ScalarRegex.translateFromOniguruma(#"[]\w]"#), #"[]\p{L}\p{M}\p{N}\p{Pc}]"#)
    }

    func testRegexRangesAcrossAstralCharacters() throws {
        let regex = try ScalarRegex(pattern: #"\p{L}+"#, origin: "test")
        let text = Array("😀ab👍🏽cd中".unicodeScalars)
        XCTAssertEqual(try regex.matches(in: text), [1..<3, 5..<8])
    }

    func testJSONParser() throws {
        let value = try JSONParser.parse(Data(#"{"s": "a\"b\\c\/\n\t\u00e9\ud83d\ude00\ud800x", "n": [-12, 3.5e2, 0], "t": true, "f": false, "z": null}"#.utf8))
        guard case .object(let object) = value else { return XCTFail("not an object") }
        guard case .string(let s)? = object["s"] else { return XCTFail("no string") }
        XCTAssertEqual(Array(s.unicodeScalars), Array("a\"b\\c/\n\té😀\u{FFFD}x".unicodeScalars))
        guard case .array(let numbers)? = object["n"] else { return XCTFail("no array") }
        guard case .int(-12) = numbers[0], case .double(350) = numbers[1], case .int(0) = numbers[2] else {
            return XCTFail("numbers: \(numbers)")
        }
        XCTAssertThrowsError(try JSONParser.parse(Data("[01x]".utf8)))
        for invalid: [UInt8] in [[0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE4, 0xB8], [0xFF]] {
            XCTAssertThrowsError(try JSONParser.parse(Data([0x22] + invalid + [0x22])), "\(invalid)")
            XCTAssertThrowsError(try JSONParser.parse(Data([0x22, 0x5C, 0x6E] + invalid + [0x22])), "escaped \(invalid)")
        }
        XCTAssertNoThrow(try JSONParser.parse(Data("\"é中😀\u{10FFFF}\"".utf8)))
        XCTAssertThrowsError(try JSONParser.parse(Data("\"\u{1}\"".utf8)))
        XCTAssertThrowsError(try JSONParser.parse(Data("[1,]".utf8)))
    }

    func testConcurrentEncoding() throws {
        let l3 = try Fixtures.llama3()
        let texts = (0..<32).map { "Thread \($0): the quick brown fox \($0 * 7919) jumps — 東京 \($0) 🚀 over the lazy dog." }
        let expected = try texts.map { try l3.encode($0) }
        // Each iteration writes its own element only.
        nonisolated(unsafe) let results = UnsafeMutableBufferPointer<[Int]>.allocate(capacity: texts.count * 4)
        defer { results.deallocate() }
        _ = results.initialize(from: repeatElement([], count: texts.count * 4))
        DispatchQueue.concurrentPerform(iterations: texts.count * 4) { i in
            results[i] = (try? l3.encode(texts[i % texts.count])) ?? []
        }
        for i in 0..<(texts.count * 4) {
            XCTAssertEqual(results[i], expected[i % texts.count])
        }
    }

    func testPerformance() throws {
        let l3 = try Fixtures.llama3()
        let loadTime = Fixtures.llama3Loaded.seconds
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let text = String(source.prefix(4096))
        let encodeStart = Date()
        let ids = try l3.encode(text)
        let encodeTime = Date().timeIntervalSince(encodeStart)
        print("llama3 tokenizer.json load: \(String(format: "%.2f", loadTime)) s; encode 4 KB: \(String(format: "%.1f", encodeTime * 1000)) ms (\(ids.count) ids)")
        // Generous bounds: this also runs in debug builds on a busy machine.
        XCTAssertLessThan(loadTime, 15)
        XCTAssertLessThan(encodeTime, 1)
    }
}
