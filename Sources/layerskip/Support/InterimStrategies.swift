import Decoding
import Engine
import Foundation

// Stand-ins for the strategy plugins until they land on main: the same names and option keys,
// greedy or sampled decoding through the first `exit_layer` layers. The self-speculative stand-in
// decodes with the full model, which is what the real (lossless) plugin outputs under greedy decoding.
// Delete this file when the plugins are registered.

struct NoOptions: StrategyConfiguration {
    static let keys: [String] = []
}

struct ExitOptions: StrategyConfiguration {
    static let keys = ["exit_layer"]
    var exitLayer: Int
}

struct SpeculativeOptions: StrategyConfiguration {
    static let keys = ["exit_layer", "speculations"]
    var exitLayer: Int
    var speculations: Int
}

func exitLayerProblems(_ exit: Int, model: ModelConfig, path: String) -> [ConfigurationProblem] {
    guard exit >= 1 && exit < model.layerCount else {
        return [.init(path: "\(path).exit_layer", expected: "an integer in 1..<\(model.layerCount) (the model has \(model.layerCount) layers)",
                      found: "\(exit)")]
    }
    return []
}

/// Decodes through layers 0..<exit, one token per step.
func layeredDecode(_ model: LlamaModel, exit: Int, strategy: String, request: GenerationRequest, cache: KVCache,
                   output: GenerationOutput) -> GenerationMetrics {
    cache.reset()
    var clock = PhaseClock()
    let h = model.makeActivations(capacity: min(max(request.prompt.count, 1), 64))
    let logits = model.makeLogits()
    let sampler = Sampler(parameters: request.sampling, vocabSize: model.config.vocabSize)
    let last = prefill(model, prompt: request.prompt[...], layers: 0..<exit, activations: h, cache: cache)
    model.exitLogits(h, rows: last..<(last + 1), into: logits)
    clock.prefillDone()
    var position = request.prompt.count
    var evaluations = 0
    while !output.isFinished {
        let row = logits.row(0)
        output.applyBans(row, step: output.tokens.count)
        let next = request.sampling.isGreedy ? Sampler.argmax(row) : sampler.sample(row)
        if !output.append(next) { break }
        if position >= cache.capacity { output.finish(.length); break }
        model.embed(CollectionOfOne(next), into: h)
        model.forward(h, layers: 0..<exit, positions: position..<(position + 1), cache: cache)
        model.exitLogits(h, rows: 0..<1, into: logits)
        position += 1
        evaluations += exit
    }
    var metrics = GenerationMetrics(strategy: strategy, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                    finishReason: output.finishReason ?? .length, prefillSeconds: clock.prefillSeconds,
                                    decodeSeconds: clock.decodeSeconds, layerEvaluations: evaluations)
    metrics.seed = request.sampling.isGreedy ? nil : sampler.seed
    return metrics
}

final class InterimAutoregressive: DecodingStrategy {
    static let name = "autoregressive"
    static let summary = "every token through all layers"
    let model: LlamaModel
    static func problems(_ c: NoOptions, model: ModelConfig, path: String) -> [ConfigurationProblem] { [] }
    init(configuration: NoOptions, model: LlamaModel) { self.model = model }
    func requiredPositions(for request: GenerationRequest) -> Int { request.prompt.count + request.maxNewTokens }
    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        layeredDecode(model, exit: model.layerCount, strategy: Self.name, request: request, cache: cache, output: output)
    }
}

final class InterimEarlyExit: DecodingStrategy {
    static let name = "early-exit"
    static let summary = "every token through the first exit_layer layers and the exit head"
    let model: LlamaModel
    let exit: Int
    static func problems(_ c: ExitOptions, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        exitLayerProblems(c.exitLayer, model: model, path: path)
    }
    init(configuration: ExitOptions, model: LlamaModel) {
        self.model = model
        exit = configuration.exitLayer
    }
    func requiredPositions(for request: GenerationRequest) -> Int { request.prompt.count + request.maxNewTokens }
    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        var m = layeredDecode(model, exit: exit, strategy: Self.name, request: request, cache: cache, output: output)
        m.averageExitLayer = Double(exit)
        return m
    }
}

final class InterimSelfSpeculative: DecodingStrategy {
    static let name = "self-speculative"
    static let summary = "draft with the first exit_layer layers, verify with the rest (stand-in: full model)"
    let model: LlamaModel
    static func problems(_ c: SpeculativeOptions, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        var problems = exitLayerProblems(c.exitLayer, model: model, path: path)
        if c.speculations < 1 {
            problems.append(.init(path: "\(path).speculations", expected: "an integer ≥ 1", found: "\(c.speculations)"))
        }
        return problems
    }
    init(configuration: SpeculativeOptions, model: LlamaModel) { self.model = model }
    func requiredPositions(for request: GenerationRequest) -> Int { request.prompt.count + request.maxNewTokens }
    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        layeredDecode(model, exit: model.layerCount, strategy: Self.name, request: request, cache: cache, output: output)
    }
}

/// Every strategy this executable offers, in one list.
let strategyRegistry = StrategyRegistry([
    StrategyPlugin(InterimAutoregressive.self),
    StrategyPlugin(InterimEarlyExit.self),
    StrategyPlugin(InterimSelfSpeculative.self),
])
