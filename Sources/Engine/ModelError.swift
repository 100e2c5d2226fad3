import Foundation

/// Why a model folder could not be loaded. Every case names the file, and where it applies the
/// tensor or config field, with what was expected and what was found.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable {
        case missingFile, unreadableFile, invalidJSON, missingField, invalidField
        case unsupported, notLlama
        case corruptHeader, truncated, missingTensor, wrongShape, unsupportedDType
    }

    public let kind: Kind
    /// The file the problem is in (a path as the user gave it, or relative to the model folder).
    public let file: String
    /// The tensor or the config field (a JSON path such as `rope_scaling.rope_type`), if any.
    public let subject: String?
    public let message: String

    public init(_ kind: Kind, file: String, subject: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.subject = subject
        self.message = message
    }

    public var description: String {
        if let subject {
            return "\(file): \(subject): \(message)"
        }
        return "\(file): \(message)"
    }
}
