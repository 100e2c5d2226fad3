import Foundation

/// A configuration value as written in a job file or given on the command line, before a plugin
/// decodes it into its typed configuration. Keeping the raw value lets every problem be reported
/// with its path and the value that was found.
public enum ConfigValue: Codable, Equatable, Sendable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([ConfigValue])
    case object([String: ConfigValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let v = try? c.decode(Bool.self) { self = .bool(v); return }
        if let v = try? c.decode(Int.self) { self = .int(v); return }
        if let v = try? c.decode(Double.self) { self = .double(v); return }
        if let v = try? c.decode(String.self) { self = .string(v); return }
        if let v = try? c.decode([ConfigValue].self) { self = .array(v); return }
        if let v = try? c.decode([String: ConfigValue].self) { self = .object(v); return }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "unsupported value")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(v): try c.encode(v)
        case let .int(v): try c.encode(v)
        case let .double(v): try c.encode(v)
        case let .string(v): try c.encode(v)
        case let .array(v): try c.encode(v)
        case let .object(v): try c.encode(v)
        }
    }

    /// How the value reads in an error message ("found …").
    public var description: String {
        switch self {
        case .null: return "null"
        case let .bool(v): return "the boolean \(v)"
        case let .int(v): return "the integer \(v)"
        case let .double(v): return "the number \(v)"
        case let .string(v): return "the string \"\(v)\""
        case .array: return "a list"
        case .object: return "a mapping"
        }
    }
}
