import TestFixtures
import Decoding
import Engine
import Foundation
import Tokenization
import XCTest

final class SamplerTests: XCTestCase {
    func distribution(_ logits: [Float], _ params: SamplingParameters) -> [Float] {
        var l = logits
        var p = [Float](repeating: -1, count: logits.count)
        let sampler = Sampler(parameters: params, vocabSize: logits.count)
        l.withUnsafeMutableBufferPointer { lb in p.withUnsafeMutableBufferPointer { sampler.distribution(lb, into: $0) } }
        return p
    }

    /// log-probabilities ln(0.5), ln(0.25), ln(0.15), ln(0.1): the kept sets are computed by hand.
    let logits: [Float] = [0.5, 0.25, 0.15, 0.1].map { Float(log($0)) }

    func testTemperatureOneIsSoftmax() {
        let p = distribution(logits, SamplingParameters(temperature: 1))
        for (a, b) in zip(p, [0.5, 0.25, 0.15, 0.1] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func testTopKKeepsTheKMostLikelyRenormalised() {
        let p = distribution(logits, SamplingParameters(temperature: 1, topK: 2))
        for (a, b) in zip(p, [2.0 / 3, 1.0 / 3, 0, 0] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func testTopPKeepsTheSmallestSetReachingP() {
        // 0.5 + 0.25 = 0.75 < 0.8, so 0.15 joins: {0.5, 0.25, 0.15} renormalised by 0.9.
        let p = distribution(logits, SamplingParameters(temperature: 1, topP: 0.8))
        for (a, b) in zip(p, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0] as [Float]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    func testTemperatureSharpens() {
        // T = 0.5 squares the probabilities before normalising.
        let p = distribution(logits, SamplingParameters(temperature: 0.5))
        let squares: [Float] = [0.25, 0.0625, 0.0225, 0.01]
        let total = squares.reduce(0, +)
        for (a, b) in zip(p, squares.map { $0 / total }) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }

    func testGreedyIsOneHotAtTheFirstMaximum() {
        XCTAssertEqual(distribution([1, 3, 3, 2], .greedy), [0, 1, 0, 0])
    }

    func testDrawFrequenciesFollowTheDistribution() {
        let sampler = Sampler(parameters: SamplingParameters(temperature: 1, seed: 5), vocabSize: 4)
        var probs: [Float] = [0.5, 0.25, 0.15, 0.1]
        var counts = [0, 0, 0, 0]
        probs.withUnsafeMutableBufferPointer { p in for _ in 0..<20000 { counts[sampler.draw(from: p)] += 1 } }
        for (c, p) in zip(counts, [0.5, 0.25, 0.15, 0.1]) {
            // 5 standard deviations of a binomial(20000, p).
            XCTAssertEqual(Double(c), 20000 * p, accuracy: 5 * (20000 * p * (1 - p)).squareRoot())
        }
    }
}

final class GenerationOutputTests: XCTestCase {
    static let tokenizer = try! Tokenizer(contentsOf: Fixtures.directory("tiny-bytelevel-gqa-f32").appendingPathComponent("tokenizer.json"))
    var tokenizer: Tokenizer { Self.tokenizer }

    func ids(_ text: String) -> [Int] { try! tokenizer.encode(text, addSpecialTokens: false) }

    /// Feeds one token per character so that a stop string necessarily spans tokens.
    func run(_ text: String, stop: [String], max: Int = 100) -> (GenerationOutput, [String]) {
        var pieces: [String] = []
        let request = GenerationRequest(prompt: [0], maxNewTokens: max, stopStrings: stop, eosTokenIds: [1])
        let output = GenerationOutput(request: request, tokenizer: tokenizer, onText: { pieces.append($0) })
        for ch in text {
            for id in ids(String(ch)) where !output.isFinished { output.append(id) }
        }
        output.finish(.length)
        return (output, pieces)
    }

    func testStopStringSpanningTokensIsCutFromTheOutput() {
        let (output, pieces) = run("abc END more", stop: ["END"])
        XCTAssertEqual(output.finishReason, .stop)
        XCTAssertEqual(output.text, "abc ")
        XCTAssertEqual(pieces.joined(), "abc ")
        XCTAssertFalse(pieces.joined().contains("E"), "a stop string's first letters are never streamed")
    }

    func testPartialStopPrefixIsReleasedWhenItTurnsOutNotToBeAStop() {
        let (output, pieces) = run("a EN b", stop: ["END"])
        XCTAssertEqual(output.finishReason, .length)
        XCTAssertEqual(output.text, "a EN b")
        XCTAssertEqual(pieces.joined(), "a EN b")
    }

    func testEarliestOfSeveralStopStringsWins() {
        let (output, _) = run("x = 1\n\ny = 2", stop: ["y =", "\n\n"])
        XCTAssertEqual(output.text, "x = 1")
    }

    func testEOSEndsUnlessBannedAndMaxLength() {
        let request = GenerationRequest(prompt: [0], maxNewTokens: 5, minNewTokens: 2, eosTokenIds: [1])
        let output = GenerationOutput(request: request, tokenizer: nil)
        XCTAssertTrue(output.bansEndOfSequence(atStep: 1))
        XCTAssertFalse(output.bansEndOfSequence(atStep: 2))
        XCTAssertTrue(output.append(7))
        XCTAssertTrue(output.append(8))
        XCTAssertFalse(output.append(1))
        XCTAssertEqual(output.finishReason, .eos)
        XCTAssertEqual(output.tokens, [7, 8, 1])

        let short = GenerationOutput(request: GenerationRequest(prompt: [0], maxNewTokens: 2, eosTokenIds: [1]), tokenizer: nil)
        XCTAssertTrue(short.append(5))
        XCTAssertFalse(short.append(6))
        XCTAssertEqual(short.finishReason, .length)
    }

    func testCancellationIsHonouredBetweenTokens() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-bytelevel-gqa-f32"))
        for spec in [StrategySpec(name: "autoregressive"), selfSpeculative(2, 4), StrategySpec(name: "early-exit", options: ["exit_layer": .int(2)])] {
            let request = GenerationRequest(prompt: [0, 5, 6], maxNewTokens: 50, minNewTokens: 50, eosTokenIds: [1])
            let strategy = try registry.make(spec, model: model)
            // Cancelled once 5 tokens are out: the loop asks before every pass and the output after every token.
            var watched: GenerationOutput?
            let output = GenerationOutput(request: request, tokenizer: nil, isCancelled: { (watched?.tokens.count ?? 0) >= 5 })
            watched = output
            let metrics = try DecodeLoop.generate(model: model, strategy: strategy, request: request, output: output)
            XCTAssertEqual(metrics.finishReason, .cancelled, spec.name)
            XCTAssertEqual(output.tokens.count, 5, spec.name)
        }
    }
}

final class DynamicEarlyExitTests: XCTestCase {
    func testConfidenceExitFillsSkippedLayersAndReportsTheAverageExit() throws {
        let model = try LlamaModel(directory: Fixtures.directory("tiny-spm-mha-bf16-sharded"))  // 6 layers
        let prompt = try Fixtures.expected("tiny-spm-mha-bf16-sharded").prompts[0].ids
        let n = 16
        // A threshold no distribution misses exits at the first candidate (layer 2 with check_every 2);
        // the first token always comes from the full prompt pass (layer 6).
        let eager = try generate(model, StrategySpec(name: "early-exit", options: ["confidence": .double(1e-9), "check_every": .int(2)]),
                                 prompt: prompt, maxNewTokens: n, minNewTokens: n)
        XCTAssertEqual(eager.metrics.averageExitLayer!, (6 + 2 * Double(n - 1)) / Double(n), accuracy: 1e-9)
        XCTAssertEqual(eager.metrics.layerEvaluationsPerToken, 2 * Double(n - 1) / Double(n), accuracy: 1e-9)
        // A middling threshold exits somewhere in between, and still produces n tokens.
        let middling = try generate(model, StrategySpec(name: "early-exit", options: ["confidence": .double(0.9), "check_every": .int(1)]),
                                    prompt: prompt, maxNewTokens: n, minNewTokens: n)
        XCTAssertEqual(middling.tokens.count, n)
        XCTAssertGreaterThanOrEqual(middling.metrics.averageExitLayer!, 1)
        XCTAssertLessThanOrEqual(middling.metrics.averageExitLayer!, 6)
    }
}
