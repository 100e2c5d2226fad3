import Foundation
import XCTest
@testable import Tokenization

/// A small valid tokenizer.json, with any section replaceable by raw JSON text.
func tokenizerJSON(
    model: String = #"{"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false, "byte_fallback": false, "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": ["a b", "ab c"]}"#,
    normalizer: String = "null",
    preTokenizer: String = "null",
    postProcessor: String = "null",
    decoder: String = "null",
    addedTokens: String = "[]",
    truncation: String = "null",
    padding: String = "null"
) -> String {
    """
    {"version": "1.0", "truncation": \(truncation), "padding": \(padding), "added_tokens": \(addedTokens),
     "normalizer": \(normalizer), "pre_tokenizer": \(preTokenizer), "post_processor": \(postProcessor),
     "decoder": \(decoder), "model": \(model)}
    """
}

/// Every rejected input must say which file, where in it (JSON path) and what was wrong.
final class ErrorTests: XCTestCase {
    private func error(_ json: String) -> TokenizerError? {
        assertTokenizerError { _ = try makeTokenizer(json, source: "bad/tokenizer.json") }
    }

    private func check(_ json: String, kind: TokenizerError.Kind, path: String, mentions: [String],
                       file: StaticString = #filePath, line: UInt = #line) {
        guard let e = error(json) else { return }
        XCTAssertEqual(e.kind, kind, "\(e)", file: file, line: line)
        XCTAssertEqual(e.file, "bad/tokenizer.json", file: file, line: line)
        XCTAssertEqual(e.path, path, "\(e)", file: file, line: line)
        XCTAssertTrue(e.description.hasPrefix("bad/tokenizer.json: "), e.description, file: file, line: line)
        if !path.isEmpty {
            XCTAssertTrue(e.description.contains(path), e.description, file: file, line: line)
        }
        for word in mentions {
            XCTAssertTrue(e.description.contains(word), "\"\(e.description)\" should mention \(word)", file: file, line: line)
        }
    }

    func testValidBaseline() throws {
        let tokenizer = try makeTokenizer(tokenizerJSON())
        try XCTAssertEqual(tokenizer.encode("abcab"), [4, 3])
        XCTAssertEqual(tokenizer.vocabularySize, 5)
    }

    func testMissingFile() {
        let url = URL(fileURLWithPath: "/nonexistent/dir/tokenizer.json")
        guard let e = assertTokenizerError({ _ = try Tokenizer(contentsOf: url) }) else { return }
        XCTAssertEqual(e.kind, .unreadable)
        XCTAssertEqual(e.file, "/nonexistent/dir/tokenizer.json")
        XCTAssertTrue(e.description.hasPrefix("/nonexistent/dir/tokenizer.json: no such file"), e.description)
    }

    func testInvalidJSON() {
        check("{\"model\": {\"type\": \"BPE\",\n  \"vocab\": {\"a\": 0,}}}", kind: .invalidJSON, path: "",
              mentions: ["invalid JSON", "line 2", "column"])
        check("", kind: .invalidJSON, path: "", mentions: ["unexpected end of input"])
        check(#"{"model": "unterminated}"#, kind: .invalidJSON, path: "", mentions: ["unterminated string"])
        check("{} trailing", kind: .invalidJSON, path: "", mentions: ["after the top-level value"])
        check(String(repeating: "[", count: 10_000), kind: .invalidJSON, path: "", mentions: ["nesting"])
        guard let e = assertTokenizerError({ _ = try Tokenizer(data: Data([0x7B, 0x22, 0xC3, 0x28, 0x22, 0x3A, 0x31, 0x7D]), source: "bad/tokenizer.json") }) else { return }
        XCTAssertEqual(e.kind, .invalidJSON)
        XCTAssertTrue(e.description.contains("invalid UTF-8"), e.description)
    }

    func testTopLevelNotAnObject() {
        check("[1, 2]", kind: .invalidValue, path: "", mentions: ["expected a JSON object", "an array"])
    }

    func testMissingModel() {
        check(#"{"version": "1.0", "added_tokens": []}"#, kind: .invalidValue, path: "model",
              mentions: ["missing required field 'model'"])
        check(#"{"model": null}"#, kind: .invalidValue, path: "model", mentions: ["missing"])
    }

    func testUnsupportedModelType() {
        check(tokenizerJSON(model: #"{"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0}}"#),
              kind: .unsupported, path: "model.type", mentions: ["unsupported model type \"WordPiece\"", "BPE"])
        check(tokenizerJSON(model: #"{"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}"#),
              kind: .unsupported, path: "model.type", mentions: ["\"Unigram\""])
    }

    func testUnsupportedNormalizer() {
        let json = tokenizerJSON(normalizer: #"{"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}"#)
        check(json, kind: .unsupported, path: "normalizer.normalizers[1].type",
              mentions: ["unsupported normalizer type \"Lowercase\"", "NFKC"])
        check(tokenizerJSON(normalizer: #"{"type": "BertNormalizer"}"#), kind: .unsupported,
              path: "normalizer.type", mentions: ["BertNormalizer"])
    }

    func testUnsupportedPreTokenizer() {
        let json = tokenizerJSON(preTokenizer: #"""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
              {"type": "Whitespace"}]}
            """#)
        check(json, kind: .unsupported, path: "pre_tokenizer.pretokenizers[1].type",
              mentions: ["unsupported pre-tokenizer type \"Whitespace\"", "Metaspace"])
    }

    func testUnsupportedDecoder() {
        check(tokenizerJSON(decoder: ###"{"type": "WordPiece", "prefix": "##", "cleanup": true}"###),
              kind: .unsupported, path: "decoder.type", mentions: ["unsupported decoder type \"WordPiece\""])
        let nested = tokenizerJSON(decoder: #"{"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "CTC"}]}"#)
        check(nested, kind: .unsupported, path: "decoder.decoders[2].type", mentions: ["\"CTC\""])
    }

    func testUnsupportedPostProcessor() {
        check(tokenizerJSON(postProcessor: #"{"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]}"#),
              kind: .unsupported, path: "post_processor.type",
              mentions: ["unsupported post-processor type \"BertProcessing\"", "TemplateProcessing"])
        check(tokenizerJSON(postProcessor: #"{"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "RobertaProcessing"}]}"#),
              kind: .unsupported, path: "post_processor.processors[1].type", mentions: ["RobertaProcessing"])
    }

    func testTemplateWithUnknownSpecialToken() {
        let json = tokenizerJSON(postProcessor: #"""
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": {}}
            """#)
        check(json, kind: .invalidValue, path: "post_processor.single[0].SpecialToken", mentions: ["\"<s>\"", "special_tokens"])
    }

    func testMergeWithUnknownToken() {
        let model = #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "a x"]}"#
        check(tokenizerJSON(model: model), kind: .invalidValue, path: "model.merges[1]",
              mentions: ["\"x\"", "not in the vocabulary"])
        let missingResult = #"{"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}"#
        check(tokenizerJSON(model: missingResult), kind: .invalidValue, path: "model.merges[0]", mentions: ["\"ab\""])
    }

    func testMalformedMerges() {
        let threeParts = #"{"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b c"]}"#
        check(tokenizerJSON(model: threeParts), kind: .invalidValue, path: "model.merges[0]",
              mentions: ["two tokens separated by one space", "a b c"])
        let badPair = #"{"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}"#
        check(tokenizerJSON(model: badPair), kind: .invalidValue, path: "model.merges[0]", mentions: ["pair of strings"])
        let number = #"{"type": "BPE", "vocab": {"a": 0}, "merges": [7]}"#
        check(tokenizerJSON(model: number), kind: .invalidValue, path: "model.merges[0]", mentions: ["found a number"])
    }

    func testBadModelFields() {
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": [], "merges": []}"#), kind: .invalidValue,
              path: "model.vocab", mentions: ["expected an object, found an array"])
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": -3}, "merges": []}"#), kind: .invalidValue,
              path: "model.vocab", mentions: ["must be an integer from 0"])
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 2000000000}, "merges": []}"#), kind: .invalidValue,
              path: "model.vocab", mentions: ["\"a\"", "must be an integer from 0"])
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}"#),
              kind: .invalidValue, path: "model.unk_token", mentions: ["\"<unk>\"", "not in the vocabulary"])
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}"#),
              kind: .unsupported, path: "model.dropout", mentions: ["dropout"])
        check(tokenizerJSON(model: #"{"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "yes"}"#),
              kind: .invalidValue, path: "model.byte_fallback", mentions: ["expected a boolean, found a string"])
        check(tokenizerJSON(model: #"{"type": "BPE", "merges": []}"#), kind: .invalidValue, path: "model.vocab",
              mentions: ["missing required field 'vocab'"])
    }

    func testBadComponentFields() {
        check(tokenizerJSON(preTokenizer: #"{"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}"#),
              kind: .invalidValue, path: "pre_tokenizer.pattern.Regex", mentions: ["does not compile", "(unclosed"])
        check(tokenizerJSON(preTokenizer: #"{"type": "Split", "pattern": {"String": "-"}, "behavior": "Sideways"}"#),
              kind: .invalidValue, path: "pre_tokenizer.behavior", mentions: ["\"Sideways\"", "MergedWithNext"])
        check(tokenizerJSON(preTokenizer: #"{"type": "Split", "pattern": {"Glob": "*"}, "behavior": "Isolated"}"#),
              kind: .invalidValue, path: "pre_tokenizer.pattern", mentions: ["\"String\" or \"Regex\"", "Glob"])
        check(tokenizerJSON(preTokenizer: #"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "sometimes"}"#),
              kind: .invalidValue, path: "pre_tokenizer.prepend_scheme", mentions: ["\"sometimes\""])
        check(tokenizerJSON(decoder: #"{"type": "Strip", "content": "ab", "start": 1, "stop": 0}"#),
              kind: .invalidValue, path: "decoder.content", mentions: ["single character"])
        check(tokenizerJSON(normalizer: #"{"normalizers": []}"#), kind: .invalidValue, path: "normalizer.type",
              mentions: ["missing required field 'type'"])
        check(tokenizerJSON(normalizer: #"{"type": 3}"#), kind: .invalidValue, path: "normalizer.type",
              mentions: ["expected a string, found a number"])
    }

    func testBadAddedTokens() {
        check(tokenizerJSON(addedTokens: #"[{"content": "<s>", "special": true}]"#), kind: .invalidValue,
              path: "added_tokens[0].id", mentions: ["missing required field 'id'"])
        check(tokenizerJSON(addedTokens: #"{"id": 1}"#), kind: .invalidValue, path: "added_tokens",
              mentions: ["expected an array, found an object"])
    }

    func testTruncationAndPadding() {
        check(tokenizerJSON(truncation: #"{"max_length": 512, "strategy": "LongestFirst", "stride": 0}"#),
              kind: .unsupported, path: "truncation", mentions: ["truncation is not supported"])
        check(tokenizerJSON(padding: #"{"strategy": {"Fixed": 128}, "pad_id": 0, "pad_token": "<pad>"}"#),
              kind: .unsupported, path: "padding", mentions: ["padding is not supported"])
        XCTAssertNoThrow(try makeTokenizer(tokenizerJSON(padding: #"{"strategy": "BatchLongest", "pad_to_multiple_of": null, "pad_id": 0, "pad_token": "<pad>"}"#)))
    }
}
