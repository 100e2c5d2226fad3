import Decoding
import Engine
import Foundation

/// The baseline: every token goes through all layers, one position per pass.
public final class AutoregressiveStrategy: DecodingStrategy {
    public struct Configuration: StrategyConfiguration {
        public static let keys: [String] = []
        public init() {}
    }

    public static let name = "autoregressive"
    public static let summary = "all layers, one token at a time (the baseline; exact)"
    public static let plugin = StrategyPlugin(AutoregressiveStrategy.self)

    let model: LlamaModel

    public init(configuration: Configuration, model: LlamaModel) {
        self.model = model
    }

    public static func problems(_ configuration: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] { [] }

    public func requiredPositions(for request: GenerationRequest) -> Int {
        request.prompt.count + request.maxNewTokens
    }

    public func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        let layers = 0..<model.layerCount
        let sampler = Sampler(parameters: request.sampling, vocabSize: model.config.vocabSize)
        var clock = PhaseClock()
        cache.reset()
        let h = model.makeActivations(capacity: min(request.prompt.count, PrefillChunk.positions))
        let logits = model.makeLogits()
        let last = prefill(model, prompt: request.prompt[...], layers: layers, activations: h, cache: cache)
        model.exitLogits(h, rows: last..<(last + 1), into: logits)
        clock.prefillDone()

        var position = request.prompt.count
        var evaluations = 0
        while true {
            let row = logits.row(0)
            output.applyBans(row, step: output.tokens.count)
            let token = sampler.sample(row)
            guard output.append(token) else { break }
            guard position < cache.capacity else { output.finish(.length); break }
            model.embed(CollectionOfOne(token), into: h)
            model.forward(h, layers: layers, positions: position..<(position + 1), cache: cache)
            model.exitLogits(h, rows: 0..<1, into: logits)
            evaluations += layers.count
            position += 1
        }
        var metrics = GenerationMetrics(strategy: Self.name, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                        finishReason: output.finishReason ?? .length, prefillSeconds: clock.prefillSeconds,
                                        decodeSeconds: clock.decodeSeconds, layerEvaluations: evaluations)
        metrics.seed = request.sampling.isGreedy ? nil : sampler.seed
        return metrics
    }
}
