import Foundation
import _FoundationICU

/// Text is handled as arrays of Unicode scalars throughout the pipeline.
///
/// Two reasons: the reference implementation works on Rust `char`s (scalars), and Swift's
/// `String` compares and hashes by canonical equivalence and slices by grapheme cluster, so
/// "é" (U+00E9) would equal "e\u{301}" and "\r\n" would be one unit. Either would silently
/// change token boundaries and vocabulary lookups.
typealias Scalars = [Unicode.Scalar]

extension String {
    init(scalars: Scalars) {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        self.init(view)
    }

    init<S: Sequence>(scalarSequence: S) where S.Element == Unicode.Scalar {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalarSequence)
        self.init(view)
    }
}

func appendUTF8(_ scalar: Unicode.Scalar, to bytes: inout [UInt8]) {
    let v = scalar.value
    switch v {
    case 0..<0x80:
        bytes.append(UInt8(v))
    case 0x80..<0x800:
        bytes.append(UInt8(0xC0 | (v >> 6)))
        bytes.append(UInt8(0x80 | (v & 0x3F)))
    case 0x800..<0x10000:
        bytes.append(UInt8(0xE0 | (v >> 12)))
        bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        bytes.append(UInt8(0x80 | (v & 0x3F)))
    default:
        bytes.append(UInt8(0xF0 | (v >> 18)))
        bytes.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
        bytes.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        bytes.append(UInt8(0x80 | (v & 0x3F)))
    }
}

/// A dictionary key that compares strings by their exact UTF-8 bytes (see `Scalars` for
/// why `String`'s own equality is wrong for vocabulary lookups).
struct ExactKey: Hashable {
    let string: String

    init(_ string: String) { self.string = string }
    init(_ scalars: Scalars) { self.string = String(scalars: scalars) }

    static func == (lhs: ExactKey, rhs: ExactKey) -> Bool {
        let l = lhs.string.utf8
        let r = rhs.string.utf8
        guard l.count == r.count else { return false }
        let fast: Bool?? = l.withContiguousStorageIfAvailable { lp in
            r.withContiguousStorageIfAvailable { rp in
                guard let a = lp.baseAddress, let b = rp.baseAddress else { return lp.count == 0 }
                return memcmp(a, b, lp.count) == 0
            }
        }
        if let outer = fast, let result = outer { return result }
        return l.elementsEqual(r)
    }

    func hash(into hasher: inout Hasher) {
        let done: Void? = string.utf8.withContiguousStorageIfAvailable {
            hasher.combine(bytes: UnsafeRawBufferPointer($0))
        }
        if done == nil {
            let copy = Array(string.utf8)
            copy.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }
}

/// Unicode predicates with the meaning of the Rust `char` methods the reference uses.
extension Unicode.Scalar {
    /// `char::is_whitespace`: the White_Space property.
    var isRustWhitespace: Bool { properties.isWhitespace }

    /// `char::is_numeric`: general categories Nd, Nl, No.
    var isRustNumeric: Bool {
        switch properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// `char::is_alphanumeric`: Alphabetic or numeric.
    var isRustAlphanumeric: Bool { properties.isAlphabetic || isRustNumeric }
}

/// A regular expression of the tokenizer file gave up on a text: it ran past its step budget
/// (catastrophic backtracking, e.g. `(a*)*b`) or past its backtracking memory.
struct RegexLimitExceeded: Error {
    /// JSON path of the pattern in tokenizer.json.
    let origin: String
    let pattern: String
    let textLength: Int
    let reason: String
}

/// An ICU regular expression that reports matches as ranges of scalar indices, with a bounded
/// amount of work per call.
///
/// ICU supports the constructs real tokenizer files use (`\p{L}`, `\p{N}`, `(?i:...)`,
/// lookahead), like the Oniguruma engine of the reference implementation. It is the ICU that
/// Foundation's `NSRegularExpression` uses (the toolchain's `_FoundationICU`, whose C entry points
/// carry a `swift_` prefix), called directly because only the C API can bound a match:
/// a match callback counts ICU's work units (each about 10,000 matcher operations) and stops the
/// match when the budget of the call is spent. The compiled pattern is immutable; each call
/// matches on its own clone, so one instance is safe to share between threads.
// `@unchecked Sendable`: the compiled ICU pattern is never used directly; each call works on its own clone.
final class ScalarRegex: @unchecked Sendable {
    let pattern: String
    /// JSON path of the pattern, for errors.
    let origin: String
    private let compiled: OpaquePointer

    /// Work units a call may take: a fixed allowance plus one per 64 UTF-16 units of text. The
    /// Llama 3 and GPT-2 patterns need about one unit per 4,000 characters, so this is ≥ 60×
    /// what a sane pattern uses, and ends `(((a*)*)*)*b`-style backtracking within about a second.
    static func stepBudget(utf16Count: Int) -> Int32 { Int32(clamping: 2000 + utf16Count / 64) }
    /// ICU's backtracking stack per match (its default, 8 MB, is too small for `\s+(?!\S)` over a
    /// megabyte of spaces; the memory is bounded by this, not by the input).
    static let stackLimitBytes: Int32 = 256 << 20

    init(pattern: String, origin: String) throws {
        self.pattern = pattern
        self.origin = origin
        let translated = Array(Self.translateFromOniguruma(pattern).utf16)
        var status = U_ZERO_ERROR
        guard let compiled = swift_uregex_open(translated, Int32(translated.count), 0, nil, &status), status.rawValue <= 0 else {
            throw RegexLimitExceeded(origin: origin, pattern: pattern, textLength: 0,
                                     reason: "does not compile (ICU: \(String(cString: swift_u_errorName(status))))")
        }
        self.compiled = compiled
    }

    deinit { swift_uregex_close(compiled) }

    /// Rewrites the escapes whose meaning differs between Oniguruma (the reference's engine)
    /// and ICU. Oniguruma's `\w` is Letter | Mark | Number | Connector_Punctuation, while
    /// ICU's adds Join_Control (U+200C, U+200D) and uses Alphabetic and decimal digits only
    /// (so "½" would differ); Oniguruma's `\h` is a hex digit, ICU's horizontal space.
    /// `\s`, `\d` and `\p{...}` mean the same in both.
    static func translateFromOniguruma(_ pattern: String) -> String {
        let word = #"\p{L}\p{M}\p{N}\p{Pc}"#
        let hex = "0-9a-fA-F"
        var out = ""
        var classDepth = 0
        var scalars = pattern.unicodeScalars.makeIterator()
        var previousOpenedClass = false
        while let c = scalars.next() {
            let openedClass = previousOpenedClass
            previousOpenedClass = false
            if c == "\\" {
                guard let e = scalars.next() else {
                    out.unicodeScalars.append(c)
                    break
                }
                let inClass = classDepth > 0
                switch e {
                case "w": out += inClass ? word : "[\(word)]"
                case "W": out += "[^\(word)]"
                case "h": out += inClass ? hex : "[\(hex)]"
                case "H": out += "[^\(hex)]"
                default:
                    out.unicodeScalars.append(c)
                    out.unicodeScalars.append(e)
                }
                continue
            }
            if c == "[" {
                classDepth += 1
                previousOpenedClass = true
            } else if c == "^" && openedClass {
                previousOpenedClass = true  // a ']' right after "[^" is still literal
            } else if c == "]" && classDepth > 0 && !openedClass {
                classDepth -= 1
            }
            out.unicodeScalars.append(c)
        }
        return out
    }

    /// Counts the work units of one call and stops the match when they exceed the budget.
    private final class Meter {
        let budget: Int32
        var steps: Int32 = 0
        init(budget: Int32) { self.budget = budget }
    }

    func matches(in scalars: Scalars) throws -> [Range<Int>] {
        if scalars.isEmpty { return [] }
        var utf16: [UInt16] = []
        utf16.reserveCapacity(scalars.count)
        for s in scalars { utf16.append(contentsOf: UTF16.encode(s)!) }
        var status = U_ZERO_ERROR
        guard let regex = swift_uregex_clone(compiled, &status), status.rawValue <= 0 else {
            throw RegexLimitExceeded(origin: origin, pattern: pattern, textLength: scalars.count,
                                     reason: "could not be prepared (ICU: \(String(cString: swift_u_errorName(status))))")
        }
        defer { swift_uregex_close(regex) }
        let meter = Meter(budget: Self.stepBudget(utf16Count: utf16.count))
        swift_uregex_setStackLimit(regex, Self.stackLimitBytes, &status)
        swift_uregex_setMatchCallback(regex, { context, steps in
            let meter = Unmanaged<Meter>.fromOpaque(context!).takeUnretainedValue()
            meter.steps = steps
            return steps <= meter.budget ? 1 : 0
        }, Unmanaged.passUnretained(meter).toOpaque(), &status)

        // NSRange-style offsets are UTF-16 code units; matches are ordered, so one forward walk
        // converts them to scalar indices (scalars outside the BMP take two units).
        var ranges: [Range<Int>] = []
        var scalarIndex = 0
        var utf16Offset = 0
        func advance(to target: Int) -> Int {
            while utf16Offset < target, scalarIndex < scalars.count {
                utf16Offset += scalars[scalarIndex].value > 0xFFFF ? 2 : 1
                scalarIndex += 1
            }
            return scalarIndex
        }
        withExtendedLifetime(meter) {
            utf16.withUnsafeBufferPointer { text in
                // ICU keeps a pointer to the text, not a copy: it must stay valid until the last match.
                swift_uregex_setText(regex, text.baseAddress, Int32(text.count), &status)
                while swift_uregex_findNext(regex, &status) != 0 {
                    let lower = Int(swift_uregex_start(regex, 0, &status))
                    let upper = Int(swift_uregex_end(regex, 0, &status))
                    guard status.rawValue <= 0, lower >= 0, upper >= lower else { break }
                    ranges.append(advance(to: lower)..<advance(to: upper))
                }
            }
        }
        if status.rawValue > 0 {
            let reason: String
            switch status {
            case U_REGEX_STOPPED_BY_CALLER:
                reason = "took more than \(meter.budget) units of matching work (catastrophic backtracking)"
            case U_REGEX_STACK_OVERFLOW:
                reason = "needed more than \(Self.stackLimitBytes >> 20) MB of backtracking memory"
            default:
                reason = "failed (ICU: \(String(cString: swift_u_errorName(status))))"
            }
            throw RegexLimitExceeded(origin: origin, pattern: pattern, textLength: scalars.count, reason: reason)
        }
        return ranges
    }
}

/// The `pattern` of Split, Replace: `{"String": literal}` or `{"Regex": pattern}`.
enum TextPattern {
    case literal(Scalars)
    case regex(ScalarRegex)

    static func parse(_ node: JSONNode) throws -> TextPattern {
        let object = try node.asObject()
        if let s = try node.optionalField("String") {
            return .literal(Array(try s.asString().unicodeScalars))
        }
        if let r = try node.optionalField("Regex") {
            let pattern = try r.asString()
            do {
                return .regex(try ScalarRegex(pattern: pattern, origin: r.path))
            } catch let error as RegexLimitExceeded {
                throw r.invalid("the regular expression \(error.reason): \(pattern)")
            }
        }
        throw node.invalid("expected an object with a \"String\" or \"Regex\" key, found keys [\(object.keys.joined(separator: ", "))]")
    }

    /// Non-overlapping matches, left to right.
    func matches(in scalars: Scalars) throws -> [Range<Int>] {
        switch self {
        case .regex(let regex):
            return try regex.matches(in: scalars)
        case .literal(let needle):
            guard !needle.isEmpty, needle.count <= scalars.count else { return [] }
            var result: [Range<Int>] = []
            var i = 0
            let last = scalars.count - needle.count
            while i <= last {
                var j = 0
                while j < needle.count, scalars[i + j] == needle[j] { j += 1 }
                if j == needle.count {
                    result.append(i..<(i + needle.count))
                    i += needle.count
                } else {
                    i += 1
                }
            }
            return result
        }
    }

    /// Every match replaced by `content` (taken literally, no group references).
    func replacingMatches(in scalars: Scalars, with content: Scalars) throws -> Scalars {
        let found = try matches(in: scalars)
        if found.isEmpty { return scalars }
        var out: Scalars = []
        out.reserveCapacity(scalars.count)
        var prev = 0
        for r in found {
            out.append(contentsOf: scalars[prev..<r.lowerBound])
            out.append(contentsOf: content)
            prev = r.upperBound
        }
        out.append(contentsOf: scalars[prev...])
        return out
    }
}
