import Foundation
import Tokenization

/// Collects the tokens a strategy commits, in order, and decides when generation ends: maximum
/// length, an end-of-sequence token, a stop string in the text (cut from the output even when it
/// spans tokens), or cancellation (checked between tokens). Streams text as it becomes final:
/// text that might still turn out to be the start of a stop string is held back.
public final class GenerationOutput {
    public let request: GenerationRequest
    public private(set) var tokens: [Int] = []
    /// The output text so far, stop string removed; complete once `finishReason` is set.
    public private(set) var text = ""
    public private(set) var finishReason: FinishReason?

    private var decoder: StreamingDecoder?
    /// Decoded text not yet streamed because it could begin a stop string.
    private var held = ""
    private let onText: (String) -> Void
    private let isCancelled: () -> Bool
    private let longestStop: Int

    /// - Parameters:
    ///   - tokenizer: needed for text and stop strings; without one only ids are collected.
    ///   - onText: receives each piece of final text as soon as it is known.
    ///   - isCancelled: polled after every token.
    public init(request: GenerationRequest, tokenizer: Tokenizer?, onText: @escaping (String) -> Void = { _ in },
                isCancelled: @escaping () -> Bool = { false }) {
        self.request = request
        decoder = tokenizer?.makeStreamingDecoder(skipSpecialTokens: true)
        self.onText = onText
        self.isCancelled = isCancelled
        longestStop = request.stopStrings.map(\.count).max() ?? 0
        tokens.reserveCapacity(request.maxNewTokens)
        if request.maxNewTokens <= 0 { finishReason = .length }
    }

    public var isFinished: Bool { finishReason != nil }
    /// Tokens that may still be committed.
    public var remaining: Int { isFinished ? 0 : request.maxNewTokens - tokens.count }

    /// Whether end-of-sequence tokens are banned for the token that would be generated at `step`
    /// (0-based count of generated tokens before it).
    public func bansEndOfSequence(atStep step: Int) -> Bool { step < request.minNewTokens }

    /// Sets the end-of-sequence logits to -inf when they are banned at `step`.
    public func applyBans(_ logits: UnsafeMutableBufferPointer<Float>, step: Int) {
        guard bansEndOfSequence(atStep: step) else { return }
        for id in request.eosTokenIds where id >= 0 && id < logits.count { logits[id] = -.infinity }
    }

    /// Commits the next token. Returns false when generation is over (this token was the last).
    @discardableResult
    public func append(_ token: Int) -> Bool {
        precondition(!isFinished, "token appended after generation finished")
        tokens.append(token)
        if request.eosTokenIds.contains(token) && !bansEndOfSequence(atStep: tokens.count - 1) {
            finish(.eos)
            return false
        }
        if var d = decoder {
            let piece = d.push(token)
            decoder = d
            if !piece.isEmpty && consume(piece) { return false }
        }
        if tokens.count >= request.maxNewTokens {
            finish(.length)
            return false
        }
        if isCancelled() {
            finish(.cancelled)
            return false
        }
        return true
    }

    /// Ends generation as cancelled if the cancellation check says so (the decode loop asks
    /// before every pass, so a sequence that commits nothing for a while still stops).
    @discardableResult
    public func checkCancellation() -> Bool {
        guard !isFinished else { return false }
        if isCancelled() { finish(.cancelled); return true }
        return false
    }

    /// Ends generation early (e.g. the context is full) and flushes held text.
    public func finish(_ reason: FinishReason) {
        guard finishReason == nil else { return }
        if var d = decoder {
            let tail = d.finish()
            decoder = d
            if !tail.isEmpty && consume(tail, final: true) { return }
        }
        finishReason = reason
        emit(held)
        held = ""
    }

    /// Adds decoded text; true when it completed a stop string (generation then ends).
    private func consume(_ piece: String, final: Bool = false) -> Bool {
        held += piece
        if longestStop == 0 {
            emit(held)
            held = ""
            return false
        }
        // The earliest stop string occurrence in the held text ends everything.
        var cut: String.Index?
        for stop in request.stopStrings where !stop.isEmpty {
            if let r = held.range(of: stop), cut == nil || r.lowerBound < cut! { cut = r.lowerBound }
        }
        if let cut {
            emit(String(held[..<cut]))
            held = ""
            finishReason = .stop
            return true
        }
        if final { return false }
        // Hold back the longest suffix that is a prefix of some stop string.
        var keep = 0
        for stop in request.stopStrings {
            let maxLen = min(stop.count - 1, held.count)
            if maxLen <= keep { continue }
            for len in stride(from: maxLen, to: keep, by: -1) where held.hasSuffix(stop.prefix(len)) {
                keep = len
                break
            }
        }
        let split = held.index(held.endIndex, offsetBy: -keep)
        emit(String(held[..<split]))
        held = String(held[split...])
        return false
    }

    private func emit(_ s: String) {
        guard !s.isEmpty else { return }
        text += s
        onText(s)
    }
}
