import Decoding
import Engine
import Foundation

/// A small strategy registry for the in-process tests (the executable registers the real plugins;
/// the daemon itself never imports one). Greedy decoding through the first `exit_layer` layers.
final class TestGreedy: DecodingStrategy {
    struct Configuration: StrategyConfiguration {
        static let keys = ["exit_layer"]
        var exitLayer: Int?
    }
    static let name = "early-exit"
    static let summary = "test strategy"
    let model: LlamaModel
    let exit: Int

    static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        if let e = c.exitLayer, !(1..<model.layerCount).contains(e) {
            return [.init(path: "\(path).exit_layer", expected: "an integer in 1..<\(model.layerCount)", found: "\(e)")]
        }
        return []
    }

    init(configuration: Configuration, model: LlamaModel) {
        self.model = model
        exit = configuration.exitLayer ?? model.layerCount
    }

    func requiredPositions(for request: GenerationRequest) -> Int { request.prompt.count + request.maxNewTokens }

    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        cache.reset()
        var clock = PhaseClock()
        let h = model.makeActivations(capacity: max(1, request.prompt.count))
        let logits = model.makeLogits()
        let last = prefill(model, prompt: request.prompt[...], layers: 0..<exit, activations: h, cache: cache)
        model.exitLogits(h, rows: last..<(last + 1), into: logits)
        clock.prefillDone()
        var position = request.prompt.count
        while !output.isFinished {
            let row = logits.row(0)
            output.applyBans(row, step: output.tokens.count)
            if !output.append(Sampler.argmax(row)) { break }
            model.embed(CollectionOfOne(output.tokens.last!), into: h)
            model.forward(h, layers: 0..<exit, positions: position..<(position + 1), cache: cache)
            model.exitLogits(h, rows: 0..<1, into: logits)
            position += 1
        }
        return GenerationMetrics(strategy: Self.name, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                 finishReason: output.finishReason ?? .length, prefillSeconds: clock.prefillSeconds,
                                 decodeSeconds: clock.decodeSeconds, layerEvaluations: output.tokens.count * exit)
    }
}

final class TestFull: DecodingStrategy {
    struct Configuration: StrategyConfiguration { static let keys: [String] = [] }
    static let name = "autoregressive"
    static let summary = "test strategy"
    let inner: TestGreedy
    static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] { [] }
    init(configuration: Configuration, model: LlamaModel) { inner = TestGreedy(configuration: .init(exitLayer: nil), model: model) }
    func requiredPositions(for request: GenerationRequest) -> Int { inner.requiredPositions(for: request) }
    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        inner.generate(request, cache: cache, output: output)
    }
}

let testRegistry = StrategyRegistry([StrategyPlugin(TestFull.self), StrategyPlugin(TestGreedy.self)])
