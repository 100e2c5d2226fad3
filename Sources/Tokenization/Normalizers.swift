import Foundation

/// The `normalizer` section: rewrites each text segment between added tokens before
/// pre-tokenization.
indirect enum Normalizer {
    case sequence([Normalizer])
    /// Prepends the string to non-empty input (SentencePiece's leading "▁").
    case prepend(Scalars)
    case replace(TextPattern, Scalars)
    case nfc, nfkc, nfd, nfkd

    static let supportedTypes = "Sequence, Prepend, Replace, NFC, NFKC, NFD, NFKD"

    static func parse(_ node: JSONNode) throws -> Normalizer {
        let (type, typeNode) = try node.typeTag()
        switch type {
        case "Sequence":
            return .sequence(try node.field("normalizers").asArray().map(parse))
        case "Prepend":
            return .prepend(Array(try node.string("prepend").unicodeScalars))
        case "Replace":
            let pattern = try TextPattern.parse(node.field("pattern"))
            return .replace(pattern, Array(try node.string("content").unicodeScalars))
        case "NFC": return .nfc
        case "NFKC": return .nfkc
        case "NFD": return .nfd
        case "NFKD": return .nfkd
        default:
            throw typeNode.unsupported("unsupported normalizer type \"\(type)\" (supported: \(supportedTypes))")
        }
    }

    func normalize(_ text: Scalars) throws -> Scalars {
        switch self {
        case .sequence(let steps):
            var out = text
            for step in steps { out = try step.normalize(out) }
            return out
        case .prepend(let prefix):
            return text.isEmpty ? text : prefix + text
        case .replace(let pattern, let content):
            return try pattern.replacingMatches(in: text, with: content)
        case .nfc:
            return Array(String(scalars: text).precomposedStringWithCanonicalMapping.unicodeScalars)
        case .nfkc:
            return Array(String(scalars: text).precomposedStringWithCompatibilityMapping.unicodeScalars)
        case .nfd:
            return Array(String(scalars: text).decomposedStringWithCanonicalMapping.unicodeScalars)
        case .nfkd:
            return Array(String(scalars: text).decomposedStringWithCompatibilityMapping.unicodeScalars)
        }
    }
}
