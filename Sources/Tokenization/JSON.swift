import Foundation
import InputFiles

/// A parsed JSON value.
///
/// We parse `tokenizer.json` ourselves rather than through `JSONSerialization` or `Codable`:
/// the Llama 3 file is 17 MB with 128k vocabulary entries and 280k merges, and a plain
/// byte scanner producing this small enum is several times faster than either (and stays
/// usable in debug builds, where generic Codable code is very slow).
enum JSONValue {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// Human-readable kind, for "expected X, found Y" messages.
    var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON object that keeps its keys in file order (the vocabulary is iterated, not
/// searched, so a hash table would only cost time).
struct JSONObject {
    var keys: [String] = []
    var values: [JSONValue] = []

    var count: Int { keys.count }

    /// Linear lookup; only used on small configuration objects.
    subscript(key: String) -> JSONValue? {
        for i in keys.indices where keys[i] == key { return values[i] }
        return nil
    }
}

struct JSONSyntaxError: Error {
    let line: Int
    let column: Int
    let message: String
}

/// Recursive-descent parser over UTF-8 bytes.
struct JSONParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var pos = 0
    private var depth = 0
    // Deeply nested input would otherwise overflow the stack; real files nest < 10 levels.
    private static let maxDepth = 512

    static func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { raw -> JSONValue in
            var parser = JSONParser(bytes: raw.bindMemory(to: UInt8.self))
            parser.skipWhitespace()
            let value = try parser.parseValue()
            parser.skipWhitespace()
            if parser.pos != parser.bytes.count {
                throw parser.syntaxError("unexpected data after the top-level value")
            }
            return value
        }
    }

    private init(bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    private func syntaxError(_ message: String) -> JSONSyntaxError {
        var line = 1
        var lineStart = 0
        let end = min(pos, bytes.count)
        var i = 0
        while i < end {
            if bytes[i] == UInt8(ascii: "\n") {
                line += 1
                lineStart = i + 1
            }
            i += 1
        }
        return JSONSyntaxError(line: line, column: end - lineStart + 1, message: message)
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    private mutating func parseValue() throws -> JSONValue {
        guard pos < bytes.count else { throw syntaxError("unexpected end of input") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw syntaxError("unexpected character '\(Unicode.Scalar(bytes[pos]))'")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let count = literal.utf8CodeUnitCount
        guard pos + count <= bytes.count else { throw syntaxError("unexpected end of input") }
        let lit = literal.utf8Start
        for i in 0..<count where bytes[pos + i] != lit[i] {
            throw syntaxError("invalid literal, expected '\(literal)'")
        }
        pos += count
    }

    private mutating func enter() throws {
        depth += 1
        if depth > JSONParser.maxDepth { throw syntaxError("nesting deeper than \(JSONParser.maxDepth) levels") }
    }

    private mutating func parseObject() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var object = JSONObject()
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") {
            pos += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else {
                throw syntaxError("expected a string key in object")
            }
            let key = try parseString()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else {
                throw syntaxError("expected ':' after object key")
            }
            pos += 1
            skipWhitespace()
            let value = try parseValue()
            object.keys.append(key)
            object.values.append(value)
            skipWhitespace()
            guard pos < bytes.count else { throw syntaxError("unexpected end of input in object") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return .object(object)
            }
            throw syntaxError("expected ',' or '}' in object")
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        pos += 1
        var array: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") {
            pos += 1
            return .array(array)
        }
        while true {
            skipWhitespace()
            array.append(try parseValue())
            skipWhitespace()
            guard pos < bytes.count else { throw syntaxError("unexpected end of input in array") }
            if bytes[pos] == UInt8(ascii: ",") {
                pos += 1
                continue
            }
            if bytes[pos] == UInt8(ascii: "]") {
                pos += 1
                return .array(array)
            }
            throw syntaxError("expected ',' or ']' in array")
        }
    }

    private mutating func parseString() throws -> String {
        pos += 1  // opening quote
        let start = pos
        var ascii = true
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                let raw = UnsafeBufferPointer(rebasing: bytes[start..<pos])
                if !ascii && !Self.isValidUTF8(raw) { throw syntaxError("invalid UTF-8 in string") }
                let s = String(decoding: raw, as: UTF8.self)
                pos += 1
                return s
            }
            if b == UInt8(ascii: "\\") { return try parseEscapedString(from: start) }
            if b < 0x20 { throw syntaxError("unescaped control character in string") }
            if b >= 0x80 { ascii = false }
            pos += 1
        }
        throw syntaxError("unterminated string")
    }

    /// Strict UTF-8 check (no overlong forms, surrogates or values above U+10FFFF), so that
    /// a corrupt file is reported instead of silently decoded with U+FFFD.
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 {
                i += 1
                continue
            }
            let length: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; high = 0x9F
            case 0xF0: length = 4; low = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; high = 0x8F
            default: return false
            }
            guard i + length <= n else { return false }
            let b1 = bytes[i + 1]
            guard b1 >= low && b1 <= high else { return false }
            var k = 2
            while k < length {
                guard bytes[i + k] & 0xC0 == 0x80 else { return false }
                k += 1
            }
            i += length
        }
        return true
    }

    /// Slow path for strings with escapes; `pos` is at the first backslash.
    private mutating func parseEscapedString(from start: Int) throws -> String {
        var out = Array(UnsafeBufferPointer(rebasing: bytes[start..<pos]))
        while pos < bytes.count {
            let b = bytes[pos]
            if b == UInt8(ascii: "\"") {
                pos += 1
                let valid = out.withUnsafeBufferPointer { Self.isValidUTF8($0) }
                if !valid { throw syntaxError("invalid UTF-8 in string") }
                return String(decoding: out, as: UTF8.self)
            }
            if b < 0x20 { throw syntaxError("unescaped control character in string") }
            if b != UInt8(ascii: "\\") {
                out.append(b)
                pos += 1
                continue
            }
            pos += 1
            guard pos < bytes.count else { break }
            let e = bytes[pos]
            pos += 1
            if let byte = JSONScanner.unescaped(e) {
                out.append(byte)
                continue
            }
            switch e {
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800...0xDBFF).contains(code) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                        let save = pos
                        pos += 2
                        let low = try parseHex4()
                        if (0xDC00...0xDFFF).contains(low) {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            pos = save
                            code = 0xFFFD
                        }
                    } else {
                        code = 0xFFFD
                    }
                } else if (0xDC00...0xDFFF).contains(code) {
                    code = 0xFFFD
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                appendUTF8(scalar, to: &out)
            default:
                throw syntaxError("invalid escape sequence '\\\(Unicode.Scalar(e))'")
            }
        }
        throw syntaxError("unterminated string")
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard pos + 4 <= bytes.count else { throw syntaxError("truncated \\u escape") }
        guard let value = JSONScanner.hex4(bytes, at: pos) else { throw syntaxError("invalid hex digit in \\u escape") }
        pos += 4
        return value
    }

    private mutating func parseNumber() throws -> JSONValue {
        let start = pos
        var isInteger = true
        if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        let digitsStart = pos
        while pos < bytes.count, bytes[pos] >= UInt8(ascii: "0"), bytes[pos] <= UInt8(ascii: "9") { pos += 1 }
        if pos == digitsStart { throw syntaxError("invalid number") }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            isInteger = false
            pos += 1
            let fracStart = pos
            while pos < bytes.count, bytes[pos] >= UInt8(ascii: "0"), bytes[pos] <= UInt8(ascii: "9") { pos += 1 }
            if pos == fracStart { throw syntaxError("invalid number") }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            isInteger = false
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            let expStart = pos
            while pos < bytes.count, bytes[pos] >= UInt8(ascii: "0"), bytes[pos] <= UInt8(ascii: "9") { pos += 1 }
            if pos == expStart { throw syntaxError("invalid number") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        if isInteger, let value = Int(text) { return .int(value) }
        guard let value = Double(text) else { throw syntaxError("invalid number") }
        return .double(value)
    }
}

/// A JSON value together with where it sits in the file, so that every configuration
/// error can name the file and the JSON path of the bad component.
struct JSONNode {
    let value: JSONValue
    let path: String
    let file: String

    func invalid(_ message: String) -> TokenizerError {
        TokenizerError(kind: .invalidValue, file: file, path: path, message: message)
    }

    func unsupported(_ message: String) -> TokenizerError {
        TokenizerError(kind: .unsupported, file: file, path: path, message: message)
    }

    func expected(_ what: String) -> TokenizerError {
        invalid("expected \(what), found \(value.kindDescription)")
    }

    var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    private func childPath(_ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    /// The field, or nil when it is absent or null (serde treats both alike for Option fields).
    func optionalField(_ key: String) throws -> JSONNode? {
        guard case .object(let object) = value else { throw expected("an object") }
        guard let child = object[key] else { return nil }
        if case .null = child { return nil }
        return JSONNode(value: child, path: childPath(key), file: file)
    }

    func field(_ key: String) throws -> JSONNode {
        guard let child = try optionalField(key) else {
            throw TokenizerError(kind: .invalidValue, file: file, path: childPath(key),
                                 message: "missing required field '\(key)'")
        }
        return child
    }

    func asString() throws -> String {
        guard case .string(let s) = value else { throw expected("a string") }
        return s
    }

    func asBool() throws -> Bool {
        guard case .bool(let b) = value else { throw expected("a boolean") }
        return b
    }

    func asInt() throws -> Int {
        switch value {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int(d)
        default: throw expected("an integer")
        }
    }

    func asDouble() throws -> Double {
        switch value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: throw expected("a number")
        }
    }

    /// A string holding exactly one Unicode scalar (a Rust `char` in the reference implementation).
    func asScalar() throws -> Unicode.Scalar {
        let s = try asString()
        var it = s.unicodeScalars.makeIterator()
        guard let first = it.next(), it.next() == nil else {
            throw invalid("expected a single character, found \"\(s)\"")
        }
        return first
    }

    func asArray() throws -> [JSONNode] {
        guard case .array(let items) = value else { throw expected("an array") }
        var nodes: [JSONNode] = []
        nodes.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            nodes.append(JSONNode(value: item, path: "\(path)[\(i)]", file: file))
        }
        return nodes
    }

    func asObject() throws -> JSONObject {
        guard case .object(let object) = value else { throw expected("an object") }
        return object
    }

    func string(_ key: String) throws -> String { try field(key).asString() }
    func optionalString(_ key: String) throws -> String? { try optionalField(key)?.asString() }
    func bool(_ key: String, default fallback: Bool) throws -> Bool { try optionalField(key)?.asBool() ?? fallback }
    func int(_ key: String, default fallback: Int) throws -> Int { try optionalField(key)?.asInt() ?? fallback }

    /// The component's `type` tag.
    func typeTag() throws -> (name: String, node: JSONNode) {
        let node = try field("type")
        return (try node.asString(), node)
    }
}
