import Foundation

/// A problem with a training run's inputs or state. Names the file and, where there is one, the
/// config field (a dotted path such as `training.batch_size`) or checkpoint part.
public struct TrainingError: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let field: String?
    public let message: String

    public init(file: String, field: String? = nil, _ message: String) {
        self.file = file
        self.field = field
        self.message = message
    }

    public var description: String { field.map { "\(file): \($0): \(message)" } ?? "\(file): \(message)" }
}
