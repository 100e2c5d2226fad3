import Foundation

/// The `strategy:` of a job: a plugin name and that plugin's options, still untyped.
/// Written either as a bare name (`strategy: autoregressive`) or as a mapping with `name:`.
public struct StrategySpec: Codable, Equatable, Sendable {
    public var name: String
    /// Every key of the mapping except `name`.
    public var options: [String: ConfigValue]

    public init(name: String, options: [String: ConfigValue] = [:]) {
        self.name = name
        self.options = options
    }

    public init(from decoder: Decoder) throws {
        let value = try ConfigValue(from: decoder)
        switch value {
        case let .string(name):
            self.init(name: name)
        case var .object(map):
            guard case let .string(name)? = map.removeValue(forKey: "name") else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath + [AnyKey("name")],
                                                        debugDescription: "a strategy mapping needs name: (a string)"))
            }
            self.init(name: name, options: map)
        default:
            throw DecodingError.typeMismatch(StrategySpec.self, .init(codingPath: decoder.codingPath,
                                             debugDescription: "expected a strategy name or a mapping with name:, found \(value)"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var map = options
        map["name"] = .string(name)
        try ConfigValue.object(map).encode(to: encoder)
    }
}

struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { stringValue = "\(intValue)"; self.intValue = intValue }
}
