import TestFixtures
import Decoding
import Engine
import Foundation
import XCTest

/// Bad strategy configuration gives a clear error naming the key, and runs nothing.
final class ConfigurationTests: XCTestCase {
    let config = StandInShape.tiny.config  // 4 layers

    func problems(_ name: String, _ options: [String: ConfigValue]) -> [String] {
        registry.problems(StrategySpec(name: name, options: options), model: config).map(\.description)
    }

    func testSelfSpeculativeRanges() {
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(4)]),
                       ["strategy.exit_layer: expected an integer in 1...3 (the model has 4 layers; the verifier needs at least one), found 4"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "speculations": .int(0)]),
                       ["strategy.speculations: expected an integer in 1...64, found 0"])
        XCTAssertEqual(problems("self-speculative", [:]), [], "exit_layer comes from tune, or is L/2")
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .string("two")]),
                       ["strategy.exit_layer: expected an integer, found the string \"two\""])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "adaptive": .bool(false), "draft_confidence": .double(0.5)]),
                       ["strategy.draft_confidence: expected only with adaptive drafting (adaptive: true, the default), found a value"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_confidence": .double(0.5)]), [], "adaptive is the default")
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "adaptive": .bool(true)]), [])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_precision": .string("fp4")]),
                       ["strategy.draft_precision: expected one of exact, int8-head, int8, q4-head, q4, found \"fp4\""])
    }

    func testDrafterSettings() {
        XCTAssertEqual(problems("self-speculative", ["drafter": .string("lookup")]), [], "lookup needs no exit")
        XCTAssertEqual(problems("self-speculative", ["drafter": .string("lookup"), "lookup_ngram": .int(4), "lookup_span": .int(16)]), [])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "drafter": .string("medusa")]),
                       ["strategy.drafter: expected one of early-exit, lookup, hybrid, found \"medusa\""])
        XCTAssertEqual(problems("self-speculative", ["drafter": .string("lookup"), "exit_layer": .int(2), "speculations": .int(3)]),
                       ["strategy.exit_layer: expected only with drafter: early-exit or hybrid (lookup drafts use no exit), found a value",
                        "strategy.speculations: expected only with drafter: early-exit or hybrid (lookup drafts use no exit), found a value"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "drafter": .string("early-exit"), "lookup_span": .int(4)]),
                       ["strategy.lookup_span: expected only with drafter: lookup or hybrid, found a value"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "lookup_ngram": .int(0), "lookup_span": .int(65)]),
                       ["strategy.lookup_ngram: expected an integer in 1...16, found 0",
                        "strategy.lookup_span: expected an integer in 1...64, found 65"])
    }

    func testDraftVocabulary() {
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .int(1)]), [])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .int(512)]), [])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .string("full")]), [])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .int(513), "draft_precision": .string("int8-head")]),
                       ["strategy.draft_vocab: expected an integer in 1...512 (the model's vocabulary) or \"full\", found the integer 513"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .int(0)]),
                       ["strategy.draft_vocab: expected an integer in 1...512 (the model's vocabulary) or \"full\", found the integer 0"])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .string("half")]),
                       ["strategy.draft_vocab: expected an integer in 1...512 (the model's vocabulary) or \"full\", found the string \"half\""])
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "draft_vocab": .double(0.5)]),
                       ["strategy.draft_vocab: expected an integer in 1...512 (the model's vocabulary) or \"full\", found the number 0.5"])
        XCTAssertEqual(problems("self-speculative", ["drafter": .string("lookup"), "draft_vocab": .int(64)]),
                       ["strategy.draft_vocab: expected only with drafter: early-exit or hybrid (lookup drafts use no exit), found a value"])
    }

    func testUnknownKeysAndStrategies() {
        XCTAssertEqual(problems("self-speculative", ["exit_layer": .int(2), "speculation": .int(3)]),
                       ["strategy.speculation: expected one of exit_layer, speculations, adaptive, draft_confidence, max_speculations, draft_precision, drafter, lookup_ngram, lookup_span, draft_vocab, found an unknown key"])
        XCTAssertEqual(problems("autoregressive", ["exit_layer": .int(2)]),
                       ["strategy.exit_layer: expected no options, found an unknown key"])
        XCTAssertEqual(problems("medusa", [:]),
                       ["strategy.name: expected one of autoregressive, early-exit, self-speculative, found \"medusa\""])
    }

    func testEarlyExitModes() {
        XCTAssertEqual(problems("early-exit", [:]), ["strategy.exit_layer: expected exit_layer (1...4) or confidence (0...1), found neither"])
        XCTAssertEqual(problems("early-exit", ["exit_layer": .int(0)]), ["strategy.exit_layer: expected an integer in 1...4 (the model has 4 layers), found 0"])
        XCTAssertEqual(problems("early-exit", ["exit_layer": .int(2), "confidence": .double(0.9)]),
                       ["strategy.confidence: expected either exit_layer or confidence, not both, found both"])
        XCTAssertEqual(problems("early-exit", ["confidence": .double(1.5)]), ["strategy.confidence: expected a probability in (0, 1], found 1.5"])
        XCTAssertEqual(problems("early-exit", ["confidence": .double(0.9), "check_every": .int(2)]), [])
    }

    func testSamplingRanges() {
        XCTAssertEqual(SamplingParameters(temperature: -1).problems().map(\.description),
                       ["sampling.temperature: expected a number ≥ 0 (0 = greedy), found -1.0"])
        XCTAssertEqual(SamplingParameters(topK: -2, topP: 0).problems().map(\.description),
                       ["sampling.top_k: expected an integer ≥ 0 (0 = no limit), found -2",
                        "sampling.top_p: expected a number in (0, 1], found 0.0"])
    }

    func testMakeRefusesBadConfigurationBeforeRunning() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        XCTAssertThrowsError(try registry.make(StrategySpec(name: "self-speculative", options: ["exit_layer": .int(4)]), model: model)) { error in
            XCTAssertTrue("\(error)".contains("strategy.exit_layer"), "\(error)")
        }
    }

    func testShorthandAndMappingSpecsDecode() throws {
        let shorthand = try JSONDecoder().decode(StrategySpec.self, from: Data(#""autoregressive""#.utf8))
        XCTAssertEqual(shorthand, StrategySpec(name: "autoregressive"))
        let mapping = try JSONDecoder().decode(StrategySpec.self, from: Data(#"{"name": "self-speculative", "exit_layer": 4, "speculations": 6}"#.utf8))
        XCTAssertEqual(mapping, StrategySpec(name: "self-speculative", options: ["exit_layer": .int(4), "speculations": .int(6)]))
        XCTAssertThrowsError(try JSONDecoder().decode(StrategySpec.self, from: Data(#"{"exit_layer": 4}"#.utf8)))
    }
}
