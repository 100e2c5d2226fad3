import Foundation

/// A plugin's typed configuration. `keys` lists the option names it accepts (snake_case, as
/// written in job files) so that a typo is an error rather than silently ignored.
public protocol StrategyConfiguration: Decodable, Sendable {
    static var keys: [String] { get }
}

/// Decodes a typed configuration from raw options, reporting every problem with its path.
public enum OptionsDecoder {
    public static func decode<T: StrategyConfiguration>(_ type: T.Type, from options: [String: ConfigValue],
                                                        path: String = "strategy") -> Result<T, ConfigurationError> {
        var problems: [ConfigurationProblem] = []
        for key in options.keys.sorted() where !T.keys.contains(key) {
            let known = T.keys.isEmpty ? "no options" : "one of \(T.keys.joined(separator: ", "))"
            problems.append(ConfigurationProblem(path: "\(path).\(key)", expected: known, found: "an unknown key"))
        }
        if !problems.isEmpty { return .failure(ConfigurationError(problems)) }
        do {
            let data = try JSONEncoder().encode(ConfigValue.object(options))
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return .success(try decoder.decode(T.self, from: data))
        } catch let error as DecodingError {
            return .failure(ConfigurationError([problem(error, options: options, path: path)]))
        } catch {
            return .failure(ConfigurationError([ConfigurationProblem(path: path, expected: "valid options", found: "\(error)")]))
        }
    }

    static func problem(_ error: DecodingError, options: [String: ConfigValue], path: String) -> ConfigurationProblem {
        func location(_ codingPath: [CodingKey]) -> (String, ConfigValue?) {
            let keys = codingPath.map { snakeCase($0.stringValue) }
            let value = keys.first.flatMap { options[$0] }
            return (([path] + keys).joined(separator: "."), value)
        }
        switch error {
        case let .typeMismatch(type, context):
            let (where_, value) = location(context.codingPath)
            return ConfigurationProblem(path: where_, expected: describe(type), found: value?.description ?? "a different type")
        case let .valueNotFound(type, context):
            let (where_, _) = location(context.codingPath)
            return ConfigurationProblem(path: where_, expected: describe(type), found: "null")
        case let .keyNotFound(key, context):
            let (where_, _) = location(context.codingPath + [key])
            return ConfigurationProblem(path: where_, expected: "a value (required)", found: "nothing")
        case let .dataCorrupted(context):
            let (where_, value) = location(context.codingPath)
            return ConfigurationProblem(path: where_, expected: context.debugDescription, found: value?.description ?? "an invalid value")
        @unknown default:
            return ConfigurationProblem(path: path, expected: "valid options", found: "\(error)")
        }
    }

    static func describe(_ type: Any.Type) -> String {
        let name = "\(type)"
        if name.hasPrefix("Int") || name.hasPrefix("UInt") { return "an integer" }
        if name == "Double" || name == "Float" { return "a number" }
        if name == "Bool" { return "true or false" }
        if name == "String" { return "a string" }
        if name.hasPrefix("Array") { return "a list" }
        return "a value of type \(name)"
    }

    static func snakeCase(_ s: String) -> String {
        var out = ""
        for ch in s {
            if ch.isUppercase { out += "_" + ch.lowercased() } else { out.append(ch) }
        }
        return out
    }
}
