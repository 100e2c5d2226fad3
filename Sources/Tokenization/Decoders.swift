/// The `decoder` section: turns token strings back into text. Each step maps a list of
/// strings to a list of strings (`decode_chain` in the reference); the results are joined.
indirect enum Decoder {
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, scheme: PrependScheme)
    case replace(TextPattern, Scalars)
    case byteFallback
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case sequence([Decoder])

    static let supportedTypes = "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence"

    static func parse(_ node: JSONNode) throws -> Decoder {
        let (type, typeNode) = try node.typeTag()
        switch type {
        case "ByteLevel":
            return .byteLevel
        case "Metaspace":
            let replacement = try node.optionalField("replacement")?.asScalar() ?? "\u{2581}"
            return .metaspace(replacement: replacement, scheme: try PrependScheme.parse(node))
        case "Replace":
            let pattern = try TextPattern.parse(node.field("pattern"))
            return .replace(pattern, Array(try node.string("content").unicodeScalars))
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Strip":
            let start = try node.int("start", default: 0)
            let stop = try node.int("stop", default: 0)
            guard start >= 0, stop >= 0 else { throw node.invalid("Strip start and stop must be non-negative") }
            return .strip(content: try node.field("content").asScalar(), start: start, stop: stop)
        case "Sequence":
            return .sequence(try node.field("decoders").asArray().map(parse))
        default:
            throw typeNode.unsupported("unsupported decoder type \"\(type)\" (supported: \(supportedTypes))")
        }
    }

    /// Whether the chain groups "<0xNN>" tokens (then a later byte can change how earlier
    /// bytes of the same run decode, which the streaming decoder must respect).
    var groupsByteTokens: Bool {
        switch self {
        case .byteFallback: return true
        case .sequence(let steps): return steps.contains { $0.groupsByteTokens }
        default: return false
        }
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let steps):
            var out = tokens
            for step in steps { out = step.decodeChain(out) }
            return out
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                let start = bytes.count
                var mapped = true
                for scalar in token.unicodeScalars {
                    guard let b = ByteLevelTable.byte(for: scalar) else {
                        mapped = false
                        break
                    }
                    bytes.append(b)
                }
                // A token with characters outside the table (e.g. an added token) is kept as text.
                if !mapped {
                    bytes.removeSubrange(start...)
                    bytes.append(contentsOf: token.utf8)
                }
            }
            // Invalid UTF-8 becomes U+FFFD per maximal invalid subsequence, as in Rust's
            // `String::from_utf8_lossy`.
            return [String(decoding: bytes, as: UTF8.self)]
        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { index, token in
                var out = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar == replacement {
                        // The reference drops every replacement in the first token, not just a leading one.
                        if index == 0 && scheme != .never { continue }
                        out.append(" ")
                    } else {
                        out.append(scalar)
                    }
                }
                return String(out)
            }
        case .replace(let pattern, let content):
            // Decoding cannot fail token by token; a pattern that runs out of budget on a token
            // (only a hostile file's can) leaves that token as it is.
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                return String(scalars: (try? pattern.replacingMatches(in: scalars, with: content)) ?? scalars)
            }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(validatingUTF8Bytes: pending) {
                    out.append(text)
                } else {
                    // One U+FFFD per byte when the run is not valid UTF-8 as a whole.
                    out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = Self.byteFallbackValue(token) {
                    pending.append(byte)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                var lower = 0
                while lower < min(start, scalars.count), scalars[lower] == content { lower += 1 }
                var upper = scalars.count
                var stripped = 0
                while stripped < stop, upper > 0, scalars[upper - 1] == content {
                    upper -= 1
                    stripped += 1
                }
                return lower < upper ? String(scalars: Array(scalars[lower..<upper])) : ""
            }
        }
    }

    /// The byte of a "<0xNN>" token, parsed like the reference: six bytes, "<0x" + two
    /// characters that Rust's `u8::from_str_radix(_, 16)` accepts + ">".
    static func byteFallbackValue(_ token: String) -> UInt8? {
        let utf8 = token.utf8
        guard utf8.count == 6 else { return nil }
        var it = utf8.makeIterator()
        guard it.next() == UInt8(ascii: "<"), it.next() == UInt8(ascii: "0"), it.next() == UInt8(ascii: "x"),
              let hi = it.next(), let lo = it.next(), it.next() == UInt8(ascii: ">") else { return nil }
        func digit(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        guard let l = digit(lo) else { return nil }
        if hi == UInt8(ascii: "+") { return l }  // from_str_radix accepts a leading '+'
        guard let h = digit(hi) else { return nil }
        return h << 4 | l
    }
}

extension String {
    /// Strict UTF-8 decoding: nil if the bytes are not valid UTF-8.
    init?(validatingUTF8Bytes bytes: [UInt8]) {
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        var view = String.UnicodeScalarView()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): view.append(scalar)
            case .emptyInput: self.init(view); return
            case .error: return nil
            }
        }
    }
}
