/// One entry of `added_tokens`.
struct AddedToken {
    /// The id written in the file (required, but see `AddedVocabulary.init`).
    let id: Int
    let content: String
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    let normalized: Bool
    let special: Bool

    init(node: JSONNode) throws {
        let idNode = try node.field("id")
        id = try idNode.asInt()
        guard id >= 0 else { throw idNode.invalid("token ids must be non-negative, found \(id)") }
        content = try node.string("content")
        guard !content.isEmpty else { throw node.invalid("an added token's content must not be empty") }
        singleWord = try node.bool("single_word", default: false)
        lstrip = try node.bool("lstrip", default: false)
        rstrip = try node.bool("rstrip", default: false)
        special = try node.bool("special", default: false)
        // The reference defaults `normalized` to the opposite of `special`.
        normalized = try node.bool("normalized", default: !special)
    }
}

/// A segment of input text: either a run of ordinary text or an added token.
struct Segment {
    var range: Range<Int>
    var tokenId: Int?
}

/// Finds added tokens in text. Matching is leftmost-longest, like the Aho-Corasick
/// automaton of the reference implementation.
struct TokenMatcher {
    private struct Node {
        var children: [UInt32: Int32] = [:]
        var token: Int32 = -1
    }

    private var nodes = [Node()]
    private(set) var isEmpty = true

    mutating func insert(_ pattern: Scalars, token: Int) {
        guard !pattern.isEmpty else { return }
        var node = 0
        for scalar in pattern {
            if let child = nodes[node].children[scalar.value] {
                node = Int(child)
            } else {
                nodes.append(Node())
                let child = nodes.count - 1
                nodes[node].children[scalar.value] = Int32(child)
                node = child
            }
        }
        // The first registration wins if two tokens share the same pattern.
        if nodes[node].token < 0 { nodes[node].token = Int32(token) }
        isEmpty = false
    }

    /// Non-overlapping matches as (range, token id), left to right.
    func matches(in text: Scalars) -> [(range: Range<Int>, token: Int)] {
        guard !isEmpty else { return [] }
        var result: [(range: Range<Int>, token: Int)] = []
        var start = 0
        while start < text.count {
            var node = 0
            var best: (end: Int, token: Int)? = nil
            var i = start
            while i < text.count, let child = nodes[node].children[text[i].value] {
                node = Int(child)
                i += 1
                if nodes[node].token >= 0 { best = (i, Int(nodes[node].token)) }
            }
            if let best {
                result.append((start..<best.end, best.token))
                start = best.end
            } else {
                start += 1
            }
        }
        return result
    }
}

/// The added vocabulary: special tokens such as `<|begin_of_text|>` or `<s>` and any other
/// `added_tokens`, which are cut out of the text before the normalizer and the model see it.
struct AddedVocabulary {
    private struct Entry {
        var token: AddedToken
        /// What `id -> token` reports: the reference gives the normalized form of a
        /// `normalized: true` token (so decoding shows e.g. "▁<s>" under a Prepend
        /// normalizer, and skip-special no longer recognises it).
        var reported: String
    }

    private var entries: [Int: Entry] = [:]
    private var idByContent: [ExactKey: Int] = [:]
    private var specialContents: Set<ExactKey> = []
    /// Tokens with `normalized: false`, matched in the raw input.
    private var rawMatcher = TokenMatcher()
    /// Tokens with `normalized: true`, matched (in normalized form) after normalization.
    private var normalizedMatcher = TokenMatcher()

    /// Ids are assigned the way the reference does when it loads a file: a token already
    /// in the vocabulary keeps that id, any other takes the next id after the model
    /// vocabulary (its entry count). The `id` written in the file is not used; the
    /// reference only warns when it differs, and for real files it never does.
    init(tokens: [AddedToken], normalizer: Normalizer?, model: BPEModel) throws {
        var nextId = model.vocab.count
        for token in tokens {
            let key = ExactKey(token.content)
            let id: Int
            if let existing = idByContent[key] ?? model.vocab[key].map(Int.init) {
                id = existing
            } else {
                id = nextId
                nextId += 1
            }
            var reported = token.content
            if token.normalized, let normalizer {
                reported = String(scalars: try normalizer.normalize(Array(token.content.unicodeScalars)))
            }
            idByContent[key] = id
            if token.special { specialContents.insert(key) }
            entries[id] = Entry(token: token, reported: reported)
        }
        for id in entries.keys.sorted() {
            guard let entry = entries[id] else { continue }
            if entry.token.normalized {
                normalizedMatcher.insert(Array(entry.reported.unicodeScalars), token: id)
            } else {
                rawMatcher.insert(Array(entry.token.content.unicodeScalars), token: id)
            }
        }
    }

    var hasNormalizedTokens: Bool { !normalizedMatcher.isEmpty }
    var maxId: Int? { entries.keys.max() }
    /// Every added token's id, ascending.
    var ids: [Int] { entries.keys.sorted() }

    func token(of id: Int) -> String? { entries[id]?.reported }
    func id(of content: String) -> Int? { idByContent[ExactKey(content)] }
    func isSpecial(content: String) -> Bool { specialContents.contains(ExactKey(content)) }

    /// Cuts `text` into ordinary runs and added tokens (`normalized` selects which set).
    func split(_ text: Scalars, normalized: Bool) -> [Segment] {
        let found = (normalized ? normalizedMatcher : rawMatcher).matches(in: text)
        if found.isEmpty { return text.isEmpty ? [] : [Segment(range: 0..<text.count, tokenId: nil)] }
        var segments: [Segment] = []
        var offset = 0
        for (range, id) in found {
            guard let token = entries[id]?.token else { continue }
            var start = range.lowerBound
            var stop = range.upperBound
            if token.singleWord {
                let startIsBoundary = start == 0 || !Self.isWordCharacter(text[start - 1])
                let stopIsBoundary = stop == text.count || !Self.isWordCharacter(text[stop])
                if !startIsBoundary || !stopIsBoundary { continue }
            }
            if token.lstrip {
                var s = start
                while s > 0 && text[s - 1].isRustWhitespace { s -= 1 }
                // Spaces already claimed by the previous token stay with it.
                start = max(s, offset)
            }
            if token.rstrip {
                while stop < text.count && text[stop].isRustWhitespace { stop += 1 }
            }
            // A previous token's rstrip may have swallowed part of this match.
            if stop <= offset { continue }
            start = max(start, offset)
            if offset < start { segments.append(Segment(range: offset..<start, tokenId: nil)) }
            segments.append(Segment(range: start..<stop, tokenId: id))
            offset = stop
        }
        if offset < text.count { segments.append(Segment(range: offset..<text.count, tokenId: nil)) }
        return segments
    }

    private static func isWordCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isRustAlphanumeric || scalar == "_"
    }
}
