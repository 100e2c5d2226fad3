import CKernels
import Foundation

/// Plain greedy decoding through the first `exitLayer` layers (all of them by default): the
/// engine's own end-to-end check and what `layerskip generate` runs until the strategy plugins
/// take over. Buffers are made once per call; the per-token loop does not allocate.
public struct GreedyGeneration {
    public let model: LlamaModel
    public init(model: LlamaModel) { self.model = model }

    public struct Result: Sendable {
        public var tokens: [Int] = []
        public var finishReason: String = "length"
        public var prefillSeconds: Double = 0
        public var decodeSeconds: Double = 0
    }

    /// - Parameters:
    ///   - minNewTokens: the end-of-sequence ids are banned for this many tokens (as the fixtures were made).
    ///   - onToken: called with each new token; return false to stop.
    public func run(prompt: [Int], maxNewTokens: Int, exitLayer: Int? = nil, minNewTokens: Int = 0,
                    stopTokenIds: Set<Int>? = nil, onToken: (Int) -> Bool = { _ in true }) -> Result {
        precondition(!prompt.isEmpty, "a prompt needs at least one token")
        let exit = exitLayer ?? model.layerCount
        precondition(exit >= 1 && exit <= model.layerCount)
        let stops = stopTokenIds ?? Set(model.config.eosTokenIds)
        let total = min(prompt.count + maxNewTokens, model.maxPositions)
        let cache = model.makeCache(capacity: total)
        let h = model.makeActivations(capacity: prompt.count)
        let logits = model.makeLogits()
        var result = Result()
        result.tokens.reserveCapacity(maxNewTokens)

        let clock = ContinuousClock()
        var started = clock.now
        model.embed(prompt, into: h)
        model.forward(h, layers: 0..<exit, positions: 0..<prompt.count, cache: cache)
        model.exitLogits(h, rows: (prompt.count - 1)..<prompt.count, into: logits)
        result.prefillSeconds = (clock.now - started).seconds
        started = clock.now

        var position = prompt.count
        while result.tokens.count < maxNewTokens {
            let row = logits.row(0)
            if result.tokens.count < minNewTokens {
                for id in stops where id < row.count { row[id] = -.infinity }
            }
            let next = Int(ck_argmax(row.baseAddress!, Int32(row.count)))
            result.tokens.append(next)
            if stops.contains(next) { result.finishReason = "eos"; break }
            if !onToken(next) { result.finishReason = "stop"; break }
            if result.tokens.count == maxNewTokens || position >= total { break }
            model.embed(CollectionOfOne(next), into: h)
            model.forward(h, layers: 0..<exit, positions: position..<(position + 1), cache: cache)
            model.exitLogits(h, rows: 0..<1, into: logits)
            position += 1
        }
        result.decodeSeconds = (clock.now - started).seconds
        return result
    }
}

extension Duration {
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
