import Foundation
import InputFiles
#if canImport(Glibc)
import Glibc
#endif

/// A Hugging Face `tokenizer.json` tokenizer with the encode/decode semantics of the
/// `tokenizers` library, for the components Llama-family checkpoints use.
///
/// Unsupported components are rejected when loading (with the JSON path of the component)
/// rather than approximated. Immutable after `init` apart from an internal, locked word
/// cache and the merge ranking kept once computed, so one instance can be shared between threads.
// `@unchecked Sendable`: immutable after init; the word cache and the ranking are locked (see above).
public final class Tokenizer: @unchecked Sendable {
    /// Name used in error messages (the file path when loaded from a file).
    public let source: String

    private let model: BPEModel
    private let added: AddedVocabulary
    private let normalizer: Normalizer?
    private let preTokenizer: PreTokenizer?
    private let postProcessor: PostProcessor?
    private let decoder: Decoder?

    /// The largest tokenizer.json read: Llama 3's is 17 MB, the largest published ones about 35 MB.
    /// The parsed tree takes up to ~15× the file, so this also bounds what a hostile file costs.
    public static let maxFileBytes = 64 << 20

    public convenience init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try RegularFile.read(url.path, limit: Self.maxFileBytes)
        } catch {
            throw TokenizerError(kind: .unreadable, file: url.path, path: "", message: error.reason)
        }
        try self.init(data: data, source: url.path)
        // The parsed JSON tree (about 4× a 17 MB Llama 3 tokenizer.json, in small allocations) is
        // garbage now; glibc keeps freed heap resident unless asked, and a model's weights come
        // next: loading the tokenizer first and returning the tree keeps it out of the peak.
        Self.returnFreedHeap()
    }

    /// glibc's malloc_trim(0), looked up at run time (Swift's Glibc module does not export
    /// malloc.h); nothing elsewhere.
    private static func returnFreedHeap() {
        #if canImport(Glibc)
        typealias Trim = @convention(c) (Int) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") {
            _ = unsafeBitCast(symbol, to: Trim.self)(0)
        }
        #endif
    }

    public init(data: Data, source: String = "tokenizer.json") throws {
        self.source = source
        let value: JSONValue
        do {
            value = try JSONParser.parse(data)
        } catch let error as JSONSyntaxError {
            throw TokenizerError(kind: .invalidJSON, file: source, path: "",
                                 message: "invalid JSON at line \(error.line), column \(error.column): \(error.message)")
        }
        let root = JSONNode(value: value, path: "", file: source)
        guard case .object = value else {
            throw TokenizerError(kind: .invalidValue, file: source, path: "",
                                 message: "expected a JSON object at the top level, found \(value.kindDescription)")
        }

        // Both change the ids `encode` returns, so they cannot be ignored.
        if let truncation = try root.optionalField("truncation") {
            throw truncation.unsupported("truncation is not supported (expected null)")
        }
        if let padding = try root.optionalField("padding") {
            try Self.checkPadding(padding)
        }

        let modelNode = try root.field("model")
        let typeNode = try modelNode.optionalField("type")
        // Very old files omit the tag; the reference then recognises BPE by its merges.
        let modelType = try typeNode?.asString() ?? (try modelNode.optionalField("merges") != nil ? "BPE" : "")
        guard modelType == "BPE" else {
            let message = "unsupported model type \"\(modelType)\" (supported: BPE)"
            throw typeNode?.unsupported(message) ?? modelNode.unsupported(message)
        }
        model = try BPEModel(node: modelNode)

        normalizer = try root.optionalField("normalizer").map(Normalizer.parse)
        preTokenizer = try root.optionalField("pre_tokenizer").map(PreTokenizer.parse)
        postProcessor = try root.optionalField("post_processor").map(PostProcessor.parse)
        decoder = try root.optionalField("decoder").map(Decoder.parse)

        let addedTokens = try root.optionalField("added_tokens")?.asArray().map(AddedToken.init(node:)) ?? []
        do {
            added = try AddedVocabulary(tokens: addedTokens, normalizer: normalizer, model: model)
        } catch let error as RegexLimitExceeded {
            throw Self.error(error, source: source)
        }
        vocabularySize = max(model.idToToken.count, (added.maxId ?? -1) + 1)
        streamHoldsByteRuns = decoder?.groupsByteTokens ?? false
    }

    private static func checkPadding(_ node: JSONNode) throws {
        // Padding a single sequence to its own length ("BatchLongest") changes nothing.
        let strategy = try node.field("strategy")
        let multiple = try node.optionalField("pad_to_multiple_of")
        if case .string("BatchLongest") = strategy.value, multiple == nil { return }
        throw node.unsupported("padding is not supported (expected null or BatchLongest)")
    }

    /// Max id + 1 over the model vocabulary and the added tokens.
    public let vocabularySize: Int

    /// Whether the decoder groups byte-fallback tokens (see `StreamingDecoder`).
    let streamHoldsByteRuns: Bool

    static func error(_ e: RegexLimitExceeded, source: String) -> TokenizerError {
        TokenizerError(kind: .limitExceeded, file: source, path: e.origin,
                       message: "the regular expression \(e.pattern.debugDescription) \(e.reason) on a text of \(e.textLength) characters")
    }

    /// Token ids for `text`. `addSpecialTokens` applies the post-processor (e.g. Llama's BOS).
    /// Throws only `TokenizerError` of kind `.limitExceeded`: a regular expression of the file
    /// ran past its work budget on this text (see `ScalarRegex`).
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws -> [Int] {
        do {
            return try encodeUnchecked(text, addSpecialTokens: addSpecialTokens)
        } catch let error as RegexLimitExceeded {
            throw Self.error(error, source: source)
        }
    }

    private func encodeUnchecked(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        let scalars = Array(text.unicodeScalars)
        var ids: [Int] = []
        ids.reserveCapacity(scalars.count / 3 + 4)
        for segment in added.split(scalars, normalized: false) {
            if let id = segment.tokenId {
                ids.append(id)
                continue
            }
            let atOrigin = segment.range.lowerBound == 0
            var text = Array(scalars[segment.range])
            if let normalizer { text = try normalizer.normalize(text) }
            let parts = added.hasNormalizedTokens
                ? added.split(text, normalized: true)
                : (text.isEmpty ? [] : [Segment(range: 0..<text.count, tokenId: nil)])
            for part in parts {
                if let id = part.tokenId {
                    ids.append(id)
                    continue
                }
                let piece = Piece(scalars: Array(text[part.range]), atOrigin: atOrigin && part.range.lowerBound == 0)
                let words = try preTokenizer?.preTokenize([piece]) ?? [piece]
                for word in words { model.tokenize(word.scalars, into: &ids) }
            }
        }
        if addSpecialTokens, let postProcessor { ids = postProcessor.process(ids) }
        return ids
    }

    /// Text for `ids`. Unknown ids are skipped, as in the reference.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            guard let token = token(of: id) else { continue }
            if skipSpecialTokens && added.isSpecial(content: token) { continue }
            tokens.append(token)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    /// Id of a token string (added tokens first, then the model vocabulary).
    public func id(of token: String) -> Int? {
        if let id = added.id(of: token) { return id }
        return model.vocab[ExactKey(token)].map(Int.init)
    }

    /// Token string of an id (added tokens first, then the model vocabulary).
    public func token(of id: Int) -> String? {
        if let token = added.token(of: id) { return token }
        guard id >= 0, id < model.idToToken.count else { return nil }
        return model.idToToken[id]
    }

    /// Whether `decode(_, skipSpecialTokens: true)` drops this id: its text is that of a
    /// special added token.
    public func isSpecial(_ id: Int) -> Bool {
        guard let token = token(of: id) else { return false }
        return added.isSpecial(content: token)
    }

    /// Every token id, ranked by the merge order: a stand-in for frequency where no corpus was
    /// counted, since BPE training merges the most frequent pair first, so a token produced by an
    /// earlier merge is (roughly) a more frequent one. First the alphabet (the model's tokens that
    /// no merge produces and that are not added tokens, plus byte-fallback "<0xNN>" tokens however
    /// a file lists them), by id; then each merge's product, by the index of the first merge that
    /// produces it; then the added tokens (special tokens and any others), by id. Ids with no token
    /// at all are left out. Computed once, then kept (the 280k merges of Llama 3 take a while).
    public var mergeRanking: [Int] {
        rankingLock.lock()
        defer { rankingLock.unlock() }
        if let cachedRanking { return cachedRanking }
        let listed = Set(added.ids)
        func isAdded(_ id: Int) -> Bool { listed.contains(id) && !model.isByteToken(id) }
        let products = model.mergeProducts().filter { !isAdded($0) }
        let produced = Set(products)
        let alphabet = model.idToToken.indices.filter { model.idToToken[$0] != nil && !produced.contains($0) && !isAdded($0) }
        let ranking = alphabet + products + added.ids.filter(isAdded)
        cachedRanking = ranking
        return ranking
    }

    private let rankingLock = NSLock()
    private var cachedRanking: [Int]?

    public func makeStreamingDecoder(skipSpecialTokens: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}
