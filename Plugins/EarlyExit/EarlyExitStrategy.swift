import CKernels
import Decoding
import Engine
import Foundation

/// LayerSkip early exit: tokens leave the model before its last layer, through the shared exit
/// head. Fast and lossy.
///
/// - `exit_layer: E` — every token (and the prompt) runs the first E layers only.
/// - `confidence: c` — per token, the exit head is checked after every `check_every` layers and
///   the token leaves at the first check whose top probability is ≥ c (dynamic exit). The layers it
///   skipped still need K/V at its position for later tokens to attend to: they are filled from the
///   exited hidden state (CALM's state propagation), which is cheaper than running the layers but
///   differs from what the full model would have stored.
public final class EarlyExitStrategy: DecodingStrategy {
    public struct Configuration: StrategyConfiguration {
        public var exitLayer: Int?
        public var confidence: Double?
        public var checkEvery: Int?
        public var minExitLayer: Int?
        public static let keys = ["exit_layer", "confidence", "check_every", "min_exit_layer"]
        public init(exitLayer: Int? = nil, confidence: Double? = nil, checkEvery: Int? = nil, minExitLayer: Int? = nil) {
            self.exitLayer = exitLayer
            self.confidence = confidence
            self.checkEvery = checkEvery
            self.minExitLayer = minExitLayer
        }
    }

    public static let name = "early-exit"
    public static let summary = "leave after exit_layer layers, or per token at the first confident exit (lossy)"
    public static let plugin = StrategyPlugin(EarlyExitStrategy.self)

    let model: LlamaModel
    let configuration: Configuration

    public init(configuration: Configuration, model: LlamaModel) {
        self.model = model
        self.configuration = configuration
    }

    public static func problems(_ c: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem] {
        let L = model.layerCount
        var problems: [ConfigurationProblem] = []
        switch (c.exitLayer, c.confidence) {
        case (nil, nil):
            problems.append(.init(path: "\(path).exit_layer", expected: "exit_layer (1...\(L)) or confidence (0...1)", found: "neither"))
        case (.some, .some):
            problems.append(.init(path: "\(path).confidence", expected: "either exit_layer or confidence, not both", found: "both"))
        case let (e?, nil):
            if !(1...L).contains(e) {
                problems.append(.init(path: "\(path).exit_layer", expected: "an integer in 1...\(L) (the model has \(L) layers)", found: "\(e)"))
            }
            for (key, value) in [("check_every", c.checkEvery), ("min_exit_layer", c.minExitLayer)] where value != nil {
                problems.append(.init(path: "\(path).\(key)", expected: "only with confidence", found: "\(value!)"))
            }
        case let (nil, conf?):
            if !(conf > 0 && conf <= 1) {
                problems.append(.init(path: "\(path).confidence", expected: "a probability in (0, 1]", found: "\(conf)"))
            }
            if let k = c.checkEvery, !(1...L).contains(k) {
                problems.append(.init(path: "\(path).check_every", expected: "an integer in 1...\(L)", found: "\(k)"))
            }
            if let m = c.minExitLayer, !(1...L).contains(m) {
                problems.append(.init(path: "\(path).min_exit_layer", expected: "an integer in 1...\(L)", found: "\(m)"))
            }
        }
        return problems
    }

    public func requiredPositions(for request: GenerationRequest) -> Int {
        request.prompt.count + request.maxNewTokens
    }

    /// Layers after which the exit head is consulted in dynamic mode (the last layer always is).
    var candidateExits: [Int] {
        let L = model.layerCount
        let k = configuration.checkEvery ?? max(1, L / 8)
        let first = max(configuration.minExitLayer ?? k, 1)
        var exits = Array(stride(from: first, to: L, by: k))
        exits.append(L)
        return exits
    }

    public func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics {
        let L = model.layerCount
        let staticExit = configuration.exitLayer
        let sampler = Sampler(parameters: request.sampling, vocabSize: model.config.vocabSize)
        var clock = PhaseClock()
        cache.reset()
        let h = model.makeActivations(capacity: min(request.prompt.count, PrefillChunk.positions))
        let logits = model.makeLogits()
        // The prompt runs through the layers a static exit keeps, or all of them in dynamic mode.
        let promptLayers = 0..<(staticExit ?? L)
        let last = prefill(model, prompt: request.prompt[...], layers: promptLayers, activations: h, cache: cache)
        model.exitLogits(h, rows: last..<(last + 1), into: logits)
        clock.prefillDone()

        let exits = candidateExits
        var position = request.prompt.count
        var evaluations = 0
        var exitLayerSum = promptLayers.count  // the first token left where the prompt did
        while true {
            let row = logits.row(0)
            output.applyBans(row, step: output.tokens.count)
            let token = sampler.sample(row)
            guard output.append(token) else { break }
            guard position < cache.capacity else { output.finish(.length); break }
            model.embed(CollectionOfOne(token), into: h)
            if let e = staticExit {
                model.forward(h, layers: 0..<e, positions: position..<(position + 1), cache: cache)
                model.exitLogits(h, rows: 0..<1, into: logits)
                evaluations += e
                exitLayerSum += e
            } else {
                let exit = runUntilConfident(h, position: position, exits: exits, cache: cache, logits: logits)
                if exit < L {
                    model.fillKeysAndValues(from: h, rows: 0..<1, layers: exit..<L, positions: position..<(position + 1), cache: cache)
                }
                evaluations += exit
                exitLayerSum += exit
            }
            position += 1
        }
        var metrics = GenerationMetrics(strategy: Self.name, promptTokens: request.prompt.count, generatedTokens: output.tokens.count,
                                        finishReason: output.finishReason ?? .length, prefillSeconds: clock.prefillSeconds,
                                        decodeSeconds: clock.decodeSeconds, layerEvaluations: evaluations)
        metrics.averageExitLayer = output.tokens.isEmpty ? nil : Double(exitLayerSum) / Double(output.tokens.count)
        metrics.seed = request.sampling.isGreedy ? nil : sampler.seed
        return metrics
    }

    /// Runs layer segments up to each candidate exit; returns the exit taken, with its logits in
    /// `logits` row 0. Confidence is the top softmax probability of the raw logits.
    private func runUntilConfident(_ h: Activations, position: Int, exits: [Int], cache: KVCache, logits: Logits) -> Int {
        let threshold = Float(configuration.confidence ?? 1)
        var done = 0
        for exit in exits {
            model.forward(h, layers: done..<exit, positions: position..<(position + 1), cache: cache)
            done = exit
            model.exitLogits(h, rows: 0..<1, into: logits)
            if exit == model.layerCount || topProbability(logits.row(0)) >= threshold { return exit }
        }
        return done
    }

    private func topProbability(_ row: UnsafeMutableBufferPointer<Float>) -> Float {
        let best = row[Int(ck_argmax(row.baseAddress!, Int32(row.count)))]
        var sum = 0.0
        for x in row { sum += Double(Foundation.exp(x - best)) }
        return Float(1 / sum)
    }
}
