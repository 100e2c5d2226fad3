import Foundation

/// One problem with a configuration: where (a dotted path such as `strategy.exit_layer`), what was
/// expected, and what was found.
public struct ConfigurationProblem: Error, Equatable, Sendable, Codable, CustomStringConvertible {
    public var path: String
    public var expected: String
    public var found: String

    public init(path: String, expected: String, found: String) {
        self.path = path
        self.expected = expected
        self.found = found
    }

    public var description: String { "\(path): expected \(expected), found \(found)" }
}

/// All the problems found at once, so a user fixes a file in one go.
public struct ConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var problems: [ConfigurationProblem]
    public init(_ problems: [ConfigurationProblem]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
