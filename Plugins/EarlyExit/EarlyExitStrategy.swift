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

    public func makeStepper(for request: GenerationRequest) -> SequenceStepper {
        Stepper(layerCount: model.layerCount, staticExit: configuration.exitLayer, exits: candidateExits,
                threshold: Float(configuration.confidence ?? 1))
    }

    /// Static: [1 row, layers 0..<E, head] → sample → commit.
    /// Dynamic: [1 row, layers done..<next candidate exit, head] until the top probability reaches
    /// the threshold (or the last layer), then sample → commit; the next pass fills the skipped
    /// layers' K/V at that position from the exited state, riding along with the next token's
    /// first segment (which ends at the first candidate exit, so the two never share a layer).
    final class Stepper: SequenceStepper {
        let promptLayers: Range<Int>
        let layerCount: Int
        let staticExit: Int?
        let exits: [Int]
        let threshold: Float
        var rowsPerStep: Int { 2 }
        var logitsRowsPerStep: Int { 1 }

        private var logitsRow = 0
        /// Dynamic mode: layers the current token has been through, and its next candidate exit.
        private var done = 0
        private var nextExit = 0
        /// Which of rows 0 and 1 holds the current token (the other may hold the previous
        /// token's exited state, still to be projected into the skipped layers' K/V).
        private var row = 1
        private var fill: (row: Int, position: Int, exit: Int)?
        private var exitLayerSum: Int

        init(layerCount: Int, staticExit: Int?, exits: [Int], threshold: Float) {
            self.layerCount = layerCount
            self.staticExit = staticExit
            self.exits = exits
            self.threshold = threshold
            promptLayers = 0..<(staticExit ?? layerCount)
            // The first token leaves where the prompt did.
            exitLayerSum = promptLayers.count
        }

        func plan(_ sequence: DecodeSequence, into pass: SequencePass) {
            if let e = staticExit {
                sequence.embed(sequence.pending, row: 0)
                logitsRow = pass.add(rows: 0..<1, firstPosition: sequence.position, layers: 0..<e, head: 0..<1)
                return
            }
            if done == 0 {
                if let f = fill {
                    pass.fillKeysAndValues(row: f.row, position: f.position, layers: f.exit..<layerCount)
                    fill = nil
                }
                row = 1 - row
                sequence.embed(sequence.pending, row: row)
            }
            let exit = exits[nextExit]
            logitsRow = pass.add(rows: row..<(row + 1), firstPosition: sequence.position, layers: done..<exit, head: row..<(row + 1))
            done = exit
        }

        func advance(_ sequence: DecodeSequence, logits: SequenceLogits) {
            let r = logits.row(logitsRow, forToken: sequence.generated)
            if let e = staticExit {
                exitLayerSum += e
                sequence.commit(sequence.sample(r))
                return
            }
            guard done == layerCount || topProbability(r) >= threshold else {
                nextExit += 1
                return
            }
            if done < layerCount { fill = (row, sequence.position, done) }
            exitLayerSum += done
            done = 0
            nextExit = 0
            sequence.commit(sequence.sample(r))
        }

        func report(into metrics: inout GenerationMetrics) {
            metrics.averageExitLayer = metrics.generatedTokens > 0 ? Double(exitLayerSum) / Double(metrics.generatedTokens) : nil
        }

        private func topProbability(_ row: UnsafeMutableBufferPointer<Float>) -> Float {
            let best = row[Int(ck_argmax(row.baseAddress!, Int32(row.count)))]
            var sum = 0.0
            for x in row { sum += Double(Foundation.exp(x - best)) }
            return Float(1 / sum)
        }
    }
}
