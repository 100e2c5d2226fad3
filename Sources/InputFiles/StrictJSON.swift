/// A syntax problem in JSON, with the byte offset where it was found.
public struct JSONScanError: Error, CustomStringConvertible, Equatable, Sendable {
    public let offset: Int
    public let message: String
    public var description: String { "\(message) (at byte \(offset))" }
}

/// A pull scanner over JSON bytes (RFC 8259, nothing more) that builds no tree: callers read the
/// values they expect and `skipValue` the rest, so memory stays proportional to what is kept.
///
/// Stricter than Foundation's parser where a lenient reading would be ambiguous: an object with
/// the same key twice is an error (readers disagree on which one wins), nesting is limited, and
/// integers are read exactly or refused.
public struct JSONScanner {
    private let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0
    /// Objects and arrays nest at most this deep (real files nest a handful of levels).
    public static let maxDepth = 64

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var atEnd: Bool { offset >= bytes.count }

    public func error(_ message: String) -> JSONScanError { JSONScanError(offset: offset, message: message) }

    public mutating func skipWhitespace() {
        while offset < bytes.count {
            switch bytes[offset] {
            case 0x20, 0x09, 0x0A, 0x0D: offset += 1
            default: return
            }
        }
    }

    /// The next non-whitespace byte, not consumed.
    public mutating func peek() -> UInt8? {
        skipWhitespace()
        return offset < bytes.count ? bytes[offset] : nil
    }

    public mutating func expect(_ byte: UInt8, _ what: String) throws {
        guard peek() == byte else { throw error("expected \(what)") }
        offset += 1
    }

    /// Calls `body` for each key of an object, the scanner placed on the key's value; `body` must
    /// consume that value. A key seen twice is an error naming it.
    public mutating func readObject(depth: Int = 0, _ body: (inout JSONScanner, String) throws -> Void) throws {
        guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "{"), "an object")
        var seen = Set<String>()
        if peek() == UInt8(ascii: "}") { offset += 1; return }
        while true {
            guard peek() == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let keyOffset = offset
            let key = try readString()
            guard seen.insert(key).inserted else {
                throw JSONScanError(offset: keyOffset, message: "the key \"\(key)\" appears twice in one object")
            }
            try expect(UInt8(ascii: ":"), "':' after a key")
            _ = peek()
            try body(&self, key)
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return
            default: throw error("expected ',' or '}' in an object")
            }
        }
    }

    /// Calls `body` for each element of an array, the scanner placed on the element.
    public mutating func readArray(depth: Int = 0, _ body: (inout JSONScanner, Int) throws -> Void) throws {
        guard depth < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        try expect(UInt8(ascii: "["), "an array")
        if peek() == UInt8(ascii: "]") { offset += 1; return }
        var index = 0
        while true {
            _ = peek()
            try body(&self, index)
            index += 1
            switch peek() {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return
            default: throw error("expected ',' or ']' in an array")
            }
        }
    }

    /// A string value, its escapes decoded; invalid UTF-8 and raw control characters are errors.
    public mutating func readString() throws -> String {
        try expect(UInt8(ascii: "\""), "a string")
        var out: [UInt8] = []
        var plainStart = offset
        while true {
            guard offset < bytes.count else { throw error("unterminated string") }
            let b = bytes[offset]
            if b == UInt8(ascii: "\"") {
                out.append(contentsOf: bytes[plainStart..<offset])
                offset += 1
                break
            }
            if b < 0x20 { throw error("a control character inside a string") }
            if b != UInt8(ascii: "\\") { offset += 1; continue }
            out.append(contentsOf: bytes[plainStart..<offset])
            offset += 1
            guard offset < bytes.count else { throw error("unterminated escape") }
            let e = bytes[offset]
            offset += 1
            if let byte = Self.unescaped(e) {
                out.append(byte)
                plainStart = offset
                continue
            }
            switch e {
            case UInt8(ascii: "u"):
                var scalar = try readHex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    guard offset + 1 < bytes.count, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u") else {
                        throw error("a lone UTF-16 surrogate in \\u escape")
                    }
                    offset += 2
                    let low = try readHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("a lone UTF-16 surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw error("a lone UTF-16 surrogate in \\u escape")
                }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
            default:
                throw error("an invalid escape \\\(Character(Unicode.Scalar(e)))")
            }
            plainStart = offset
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw error("a string that is not valid UTF-8") }
        return s
    }

    /// The byte a one-character escape (`\n`, `\"`, …) stands for; nil for `\u` and invalid ones.
    public static func unescaped(_ e: UInt8) -> UInt8? {
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return e
        case UInt8(ascii: "b"): return 0x08
        case UInt8(ascii: "f"): return 0x0C
        case UInt8(ascii: "n"): return 0x0A
        case UInt8(ascii: "r"): return 0x0D
        case UInt8(ascii: "t"): return 0x09
        default: return nil
        }
    }

    private mutating func readHex4() throws -> UInt32 {
        guard offset + 4 <= bytes.count else { throw error("a truncated \\u escape") }
        guard let v = Self.hex4(bytes, at: offset) else { throw error("a non-hex digit in a \\u escape") }
        offset += 4
        return v
    }

    /// The value of the four hex digits of a `\uXXXX` escape at `offset`, nil if one is not a hex digit.
    public static func hex4(_ bytes: some Collection<UInt8>, at offset: Int) -> UInt32? {
        var v: UInt32 = 0
        for c in bytes.dropFirst(offset).prefix(4) {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = v << 4 | UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = v << 4 | UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = v << 4 | UInt32(c - UInt8(ascii: "A") + 10)
            default: return nil
            }
        }
        return v
    }

    /// A non-negative integer written as plain digits (no sign, fraction or exponent), which must
    /// fit in `Int`; nil (nothing consumed) when the next value is not a number at all.
    public mutating func readNonNegativeInteger() throws -> Int? {
        guard let c = peek(), c == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { return nil }
        let start = offset
        var value = 0
        while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(bytes[offset] - UInt8(ascii: "0")))
            if o1 || o2 { throw JSONScanError(offset: start, message: "an integer larger than \(Int.max)") }
            value = sum
            offset += 1
        }
        if offset == start || (offset < bytes.count && [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[offset])) {
            offset = start
            try skipNumber()
            throw JSONScanError(offset: start, message: "expected a non-negative integer, found \(text(start..<offset))")
        }
        if offset - start > 1 && bytes[start] == UInt8(ascii: "0") { throw JSONScanError(offset: start, message: "a number with a leading zero") }
        return value
    }

    /// A number of any form RFC 8259 allows, as written (its syntax checked), for callers that
    /// decide themselves between integer and floating point; nil (nothing consumed) when the next
    /// value is not a number.
    public mutating func readNumberText() throws -> String? {
        guard let c = peek(), c == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { return nil }
        let start = offset
        try skipNumber()
        return String(decoding: bytes[start..<offset], as: UTF8.self)
    }

    private func text(_ range: Range<Int>) -> String {
        String(decoding: bytes[range.clamped(to: 0..<bytes.count)].prefix(40), as: UTF8.self)
    }

    private mutating func skipNumber() throws {
        let start = offset
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "-") { offset += 1 }
        var digits = 0
        let firstDigit = offset
        while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1; digits += 1 }
        if digits > 1 && bytes[firstDigit] == UInt8(ascii: "0") { throw JSONScanError(offset: start, message: "a number with a leading zero") }
        if offset < bytes.count, bytes[offset] == UInt8(ascii: ".") {
            offset += 1
            var fraction = 0
            while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1; fraction += 1 }
            if fraction == 0 { throw JSONScanError(offset: start, message: "a malformed number") }
        }
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E") {
            offset += 1
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") { offset += 1 }
            var exponent = 0
            while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1; exponent += 1 }
            if exponent == 0 { throw JSONScanError(offset: start, message: "a malformed number") }
        }
        if digits == 0 { throw JSONScanError(offset: start, message: "a malformed number") }
    }

    /// Consumes one value of any kind, checking its syntax (and duplicate keys inside it).
    public mutating func skipValue(depth: Int = 0) throws {
        switch peek() {
        case UInt8(ascii: "{")?: try readObject(depth: depth) { s, _ in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "[")?: try readArray(depth: depth) { s, _ in try s.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\"")?: _ = try readString()
        case UInt8(ascii: "t")?: try literal("true")
        case UInt8(ascii: "f")?: try literal("false")
        case UInt8(ascii: "n")?: try literal("null")
        case let c? where c == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c): try skipNumber()
        case nil: throw error("expected a value, found the end of the input")
        default: throw error("expected a value")
        }
    }

    private mutating func literal(_ word: String) throws {
        for b in word.utf8 {
            guard offset < bytes.count, bytes[offset] == b else { throw error("expected \(word)") }
            offset += 1
        }
    }

    /// Checks that `bytes` hold exactly one JSON value with no key repeated in any object.
    public static func validate(_ bytes: UnsafeRawBufferPointer) throws {
        var scanner = JSONScanner(bytes)
        try scanner.skipValue()
        scanner.skipWhitespace()
        guard scanner.atEnd else { throw scanner.error("unexpected data after the top-level value") }
    }
}
