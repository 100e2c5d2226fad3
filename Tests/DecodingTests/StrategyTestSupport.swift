import AutoregressivePlugin
import Decoding
import EarlyExitPlugin
import Engine
import Foundation
import SelfSpeculativePlugin
import Tokenization

let registry = StrategyRegistry([AutoregressiveStrategy.plugin, EarlyExitStrategy.plugin, SelfSpeculativeStrategy.plugin])

/// Runs one generation with a strategy spec on a model; returns tokens, text and metrics.
func generate(_ model: LlamaModel, _ spec: StrategySpec, prompt: [Int], maxNewTokens: Int, minNewTokens: Int = 0,
              sampling: SamplingParameters = .greedy, stop: [String] = [], tokenizer: Tokenizer? = nil,
              context: StrategyContext = StrategyContext())
    throws -> (tokens: [Int], text: String, metrics: GenerationMetrics) {
    let strategy = try registry.make(spec, model: model, context: context)
    let request = GenerationRequest(prompt: prompt, maxNewTokens: maxNewTokens, minNewTokens: minNewTokens, sampling: sampling,
                                    stopStrings: stop, eosTokenIds: Set(model.config.eosTokenIds))
    let output = GenerationOutput(request: request, tokenizer: tokenizer)
    let metrics = try DecodeLoop.generate(model: model, strategy: strategy, request: request, output: output)
    return (output.tokens, output.text, metrics)
}

/// Self-speculation with early-exit drafts only (the tests of the exit's rounds, KV bookkeeping and
/// load-aware d); `drafter` picks another.
func selfSpeculative(_ e: Int, _ d: Int, adaptive: Bool = false, drafter: String = "early-exit") -> StrategySpec {
    var options: [String: ConfigValue] = ["exit_layer": .int(e), "speculations": .int(d), "drafter": .string(drafter)]
    if adaptive { options["adaptive"] = .bool(true) }
    return StrategySpec(name: "self-speculative", options: options)
}
