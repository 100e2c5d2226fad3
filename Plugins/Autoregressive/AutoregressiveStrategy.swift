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

    public func makeStepper(for request: GenerationRequest) -> SequenceStepper { Stepper(layers: 0..<model.layerCount) }

    /// [1 row, layers 0..<L, head] → sample → commit.
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
            sequence.commit(sequence.sample(logits.row(logitsRow, forToken: sequence.generated)))
        }
    }
}
