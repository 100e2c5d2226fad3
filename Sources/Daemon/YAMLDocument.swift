import Decoding
import Foundation
import Yams

/// Reads one YAML document into `ConfigValue`s so that validation can report every problem with
/// its path and the value found, instead of stopping at the first mismatch a `Decoder` sees.
enum YAMLDocument {
    /// `file` names the document in messages (a path, or "job file").
    static func parse(_ data: Data, file: String) -> Result<ConfigValue, ConfigurationError> {
        guard let text = String(data: data, encoding: .utf8) else {
            return .failure(ConfigurationError([.init(path: file, expected: "UTF-8 text (a YAML document)",
                                                      found: "bytes that are not UTF-8 (binary data?)")]))
        }
        if text.contains("\u{0}") {
            return .failure(ConfigurationError([.init(path: file, expected: "a YAML text document", found: "NUL bytes (binary data?)")]))
        }
        let node: Node?
        do {
            let parser = try Parser(yaml: text)
            node = try parser.singleRoot()
        } catch {
            return .failure(ConfigurationError([.init(path: file, expected: "valid YAML (one document)", found: describe(error))]))
        }
        guard let node else {
            return .failure(ConfigurationError([.init(path: file, expected: "a YAML mapping", found: "an empty document")]))
        }
        var problems: [ConfigurationProblem] = []
        var budget = maxValues
        let value = convert(node, path: "", problems: &problems, budget: &budget)
        if budget < 0 {
            return .failure(ConfigurationError([.init(path: file, expected: "at most \(maxValues) values once YAML aliases are expanded",
                                                      found: "more (an alias bomb?)")]))
        }
        return problems.isEmpty ? .success(value) : .failure(ConfigurationError(problems))
    }

    /// Aliases make a small file expand into a huge tree ("billion laughs"); conversion stops here.
    static let maxValues = 200_000

    private static func convert(_ node: Node, path: String, problems: inout [ConfigurationProblem], budget: inout Int) -> ConfigValue {
        budget -= 1
        if budget < 0 { return .null }
        switch node {
        case let .scalar(scalar):
            switch Tag.Name(rawValue: node.tag.rawValue) {
            case .null: return .null
            case .bool: return node.bool.map(ConfigValue.bool) ?? .string(scalar.string)
            case .int: return node.int.map(ConfigValue.int) ?? .string(scalar.string)
            case .float: return node.float.map(ConfigValue.double) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case let .sequence(sequence):
            return .array(sequence.enumerated().map { convert($1, path: "\(path)[\($0)]", problems: &problems, budget: &budget) })
        case let .mapping(mapping):
            var object: [String: ConfigValue] = [:]
            for (key, value) in mapping {
                guard case let .scalar(k) = key else {
                    problems.append(.init(path: path.isEmpty ? "(top level)" : path, expected: "text keys",
                                          found: "a key that is a list or mapping"))
                    continue
                }
                let child = path.isEmpty ? k.string : "\(path).\(k.string)"
                if object[k.string] != nil {
                    problems.append(.init(path: child, expected: "each key once", found: "a duplicate key"))
                }
                object[k.string] = convert(value, path: child, problems: &problems, budget: &budget)
            }
            return .object(object)
        case .alias:
            problems.append(.init(path: path.isEmpty ? "(top level)" : path, expected: "plain values", found: "a YAML alias"))
            return .null
        }
    }

    /// Yams' messages repeat the whole document; keep the problem and its line and column.
    private static func describe(_ error: Error) -> String {
        if let e = error as? YamlError {
            switch e {
            case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
                 let .composer(context, problem, mark, _):
                let ctx = context.map { " \($0.text)" } ?? ""
                return "\(problem)\(ctx) at line \(mark.line), column \(mark.column)"
            case let .reader(problem, offset, _, _):
                return "\(problem)\(offset.map { " at byte \($0)" } ?? "")"
            case let .duplicatedKeysInMapping(duplicates, _):
                return "duplicate keys \(duplicates.joined(separator: ", "))"
            default:
                return "\(e)"
            }
        }
        return "\(error)"
    }
}

extension ConfigValue {
    var objectValue: [String: ConfigValue]? { if case let .object(o) = self { return o } else { return nil } }
    var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    var intValue: Int? { if case let .int(i) = self { return i } else { return nil } }
    var doubleValue: Double? {
        switch self {
        case let .double(d): return d
        case let .int(i): return Double(i)
        default: return nil
        }
    }
    var boolValue: Bool? { if case let .bool(b) = self { return b } else { return nil } }
}
