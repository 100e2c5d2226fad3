/// A piece of text on its way to the model.
struct Piece {
    var scalars: Scalars
    /// Whether the piece begins at offset 0 of the original input; Metaspace's
    /// `prepend_scheme: "first"` only adds its "▁" to such a piece.
    var atOrigin: Bool
}

/// How a Split keeps the delimiters it finds (`SplitDelimiterBehavior`).
enum SplitBehavior: String {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    /// Cuts `0..<count` at `matches` (ordered, non-overlapping) and returns the non-empty
    /// pieces to keep.
    func split(count: Int, matches: [Range<Int>], invert: Bool = false) -> [Range<Int>] {
        var marked: [(range: Range<Int>, isMatch: Bool)] = []
        var prev = 0
        for m in matches {
            if prev != m.lowerBound { marked.append((prev..<m.lowerBound, false)) }
            marked.append((m, true))
            prev = m.upperBound
        }
        if prev != count { marked.append((prev..<count, false)) }
        if invert {
            for i in marked.indices { marked[i].isMatch.toggle() }
        }

        var out: [Range<Int>] = []
        switch self {
        case .removed:
            out = marked.filter { !$0.isMatch }.map(\.range)
        case .isolated:
            out = marked.map(\.range)
        case .mergedWithPrevious:
            var previousMatch = false
            for (range, isMatch) in marked {
                if isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<range.upperBound
                } else {
                    out.append(range)
                }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            // Walk backwards so each delimiter joins the piece that follows it.
            var previousMatch = false
            for (range, isMatch) in marked.reversed() {
                if isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1] = range.lowerBound..<last.upperBound
                } else {
                    out.append(range)
                }
                previousMatch = isMatch
            }
            out.reverse()
        case .contiguous:
            var previousMatch = false
            for (index, (range, isMatch)) in marked.enumerated() {
                if index > 0 && isMatch == previousMatch, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<range.upperBound
                } else {
                    out.append(range)
                }
                previousMatch = isMatch
            }
        }
        return out.filter { !$0.isEmpty }
    }
}

enum PrependScheme: String {
    case always, first, never

    /// Reads `prepend_scheme`, or the older boolean `add_prefix_space` that it replaced.
    static func parse(_ node: JSONNode) throws -> PrependScheme {
        if let schemeNode = try node.optionalField("prepend_scheme") {
            let raw = try schemeNode.asString()
            guard let scheme = PrependScheme(rawValue: raw) else {
                throw schemeNode.invalid("expected \"always\", \"first\" or \"never\", found \"\(raw)\"")
            }
            return scheme
        }
        return try node.bool("add_prefix_space", default: true) ? .always : .never
    }
}

/// The `pre_tokenizer` section: cuts normalized text into the words the model sees.
indirect enum PreTokenizer {
    case sequence([PreTokenizer])
    case split(TextPattern, SplitBehavior, invert: Bool)
    case byteLevel(addPrefixSpace: Bool, regex: ScalarRegex?)
    case metaspace(replacement: Unicode.Scalar, scheme: PrependScheme, split: Bool)
    case digits(individual: Bool)

    static let supportedTypes = "Sequence, Split, ByteLevel, Metaspace, Digits"

    static func parse(_ node: JSONNode) throws -> PreTokenizer {
        let (type, typeNode) = try node.typeTag()
        switch type {
        case "Sequence":
            return .sequence(try node.field("pretokenizers").asArray().map(parse))
        case "Split":
            let pattern = try TextPattern.parse(node.field("pattern"))
            let behaviorNode = try node.field("behavior")
            let raw = try behaviorNode.asString()
            guard let behavior = SplitBehavior(rawValue: raw) else {
                throw behaviorNode.invalid("expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous, found \"\(raw)\"")
            }
            return .split(pattern, behavior, invert: try node.bool("invert", default: false))
        case "ByteLevel":
            let regex = try node.bool("use_regex", default: true)
                ? try ScalarRegex(pattern: ByteLevelTable.gpt2Pattern, origin: node.path.isEmpty ? "use_regex" : node.path + ".use_regex") : nil
            return .byteLevel(addPrefixSpace: try node.bool("add_prefix_space", default: true), regex: regex)
        case "Metaspace":
            let replacement = try node.optionalField("replacement")?.asScalar() ?? "\u{2581}"
            return .metaspace(replacement: replacement, scheme: try PrependScheme.parse(node),
                              split: try node.bool("split", default: true))
        case "Digits":
            return .digits(individual: try node.bool("individual_digits", default: false))
        default:
            throw typeNode.unsupported("unsupported pre-tokenizer type \"\(type)\" (supported: \(supportedTypes))")
        }
    }

    func preTokenize(_ pieces: [Piece]) throws -> [Piece] {
        switch self {
        case .sequence(let steps):
            var out = pieces
            for step in steps { out = try step.preTokenize(out) }
            return out
        case .split(let pattern, let behavior, let invert):
            return try pieces.flatMap { piece in
                let ranges = behavior.split(count: piece.scalars.count,
                                            matches: try pattern.matches(in: piece.scalars), invert: invert)
                return Self.cut(piece, ranges)
            }
        case .byteLevel(let addPrefixSpace, let regex):
            var out: [Piece] = []
            for var piece in pieces {
                if addPrefixSpace && piece.scalars.first != " " {
                    piece.scalars.insert(" ", at: 0)
                }
                var parts = [piece]
                if let regex {
                    let ranges = SplitBehavior.isolated.split(count: piece.scalars.count,
                                                              matches: try regex.matches(in: piece.scalars))
                    parts = Self.cut(piece, ranges)
                }
                for part in parts {
                    out.append(Piece(scalars: ByteLevelTable.encode(part.scalars), atOrigin: part.atOrigin))
                }
            }
            return out
        case .metaspace(let replacement, let scheme, let split):
            var out: [Piece] = []
            for var piece in pieces {
                for i in piece.scalars.indices where piece.scalars[i] == " " {
                    piece.scalars[i] = replacement
                }
                let startsWithReplacement = piece.scalars.first == replacement
                switch scheme {
                case .always where !startsWithReplacement,
                     .first where !startsWithReplacement && piece.atOrigin:
                    piece.scalars.insert(replacement, at: 0)
                default:
                    break
                }
                if split {
                    let delimiters = piece.scalars.indices.filter { piece.scalars[$0] == replacement }.map { $0..<($0 + 1) }
                    let ranges = SplitBehavior.mergedWithNext.split(count: piece.scalars.count, matches: delimiters)
                    out.append(contentsOf: Self.cut(piece, ranges))
                } else if !piece.scalars.isEmpty {
                    out.append(piece)
                }
            }
            return out
        case .digits(let individual):
            return pieces.flatMap { piece in
                let digits = piece.scalars.indices.filter { piece.scalars[$0].isRustNumeric }.map { $0..<($0 + 1) }
                let behavior: SplitBehavior = individual ? .isolated : .contiguous
                return Self.cut(piece, behavior.split(count: piece.scalars.count, matches: digits))
            }
        }
    }

    private static func cut(_ piece: Piece, _ ranges: [Range<Int>]) -> [Piece] {
        ranges.map { Piece(scalars: Array(piece.scalars[$0]), atOrigin: piece.atOrigin && $0.lowerBound == 0) }
    }
}
