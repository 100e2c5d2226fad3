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

    func makeStepper(for request: GenerationRequest) -> SequenceStepper { Stepper(layers: 0..<exit) }

    /// Greedy through the first `exit` layers: one row per pass, the loop does the rest.
    final class Stepper: SequenceStepper {
        let promptLayers: Range<Int>
        var rowsPerStep: Int { 1 }
        var logitsRowsPerStep: Int { 1 }
        private var logitsRow = 0
        init(layers: Range<Int>) { promptLayers = layers }
        func plan(_ sequence: DecodeSequence, into pass: SequencePass) {
            sequence.embed(sequence.pending, row: 0)
            logitsRow = pass.add(rows: 0..<1, firstPosition: sequence.position, layers: promptLayers, head: 0..<1)
        }
        func advance(_ sequence: DecodeSequence, logits: SequenceLogits) {
            sequence.commit(Sampler.argmax(logits.row(logitsRow, forToken: sequence.generated)))
        }
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
    func makeStepper(for request: GenerationRequest) -> SequenceStepper { inner.makeStepper(for: request) }
}

let testRegistry = StrategyRegistry([StrategyPlugin(TestFull.self), StrategyPlugin(TestGreedy.self)])
