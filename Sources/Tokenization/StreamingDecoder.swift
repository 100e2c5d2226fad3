/// Incremental decoding for token-by-token generation.
///
/// `push` returns only text that can no longer change, and the concatenation of all pushes
/// and `finish()` equals `Tokenizer.decode` of all the ids. Text is held back while:
/// - it ends in U+FFFD, i.e. an unfinished UTF-8 character (its remaining bytes may follow);
/// - with a ByteFallback decoder, the last token is a "<0xNN>" byte token: the reference
///   turns a whole run of byte tokens into one U+FFFD per byte if any byte in the run is
///   invalid, so characters of a run are final only once the run has ended.
///
/// Each step decodes a short window of recent ids and emits the difference from the
/// window's previous text. The window starts at a token boundary where the text was
/// complete, so the first-token rules of the decoders (SentencePiece's leading-space strip)
/// affect both sides of the difference equally.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private var ids: [Int] = []
    /// Text of `ids[0..<prefixCount]`, already emitted.
    private var prefix = ""
    private var prefixCount = 0

    init(tokenizer: Tokenizer, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    public mutating func push(_ id: Int) -> String {
        ids.append(id)
        if tokenizer.streamHoldsByteRuns, let token = tokenizer.token(of: id),
           Decoder.byteFallbackValue(token) != nil,
           !(skipSpecialTokens && tokenizer.isSpecial(id)) {
            return ""
        }
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        guard text.utf8.count > prefix.utf8.count, text.unicodeScalars.last != "\u{FFFD}" else { return "" }
        let fresh = Self.suffix(of: text, after: prefix)
        // Slide the window: keep the ids behind the previous emission as context.
        let newPrefixCount = ids.count - prefixCount
        ids.removeFirst(prefixCount)
        prefix = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        prefixCount = newPrefixCount
        return fresh
    }

    /// Returns whatever is still held back and resets the decoder.
    public mutating func finish() -> String {
        let text = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        let rest = text.utf8.count > prefix.utf8.count ? Self.suffix(of: text, after: prefix) : ""
        ids = []
        prefix = ""
        prefixCount = 0
        return rest
    }

    /// `text` minus its leading `prefix`. The decoders keep earlier text stable, so the
    /// prefix always matches; if it ever did not, the text after the common part is used.
    private static func suffix(of text: String, after prefix: String) -> String {
        let t = Array(text.unicodeScalars)
        let p = Array(prefix.unicodeScalars)
        var common = 0
        while common < min(t.count, p.count), t[common] == p[common] { common += 1 }
        return String(scalars: Array(t[common...]))
    }
}
