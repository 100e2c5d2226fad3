/// A problem with a `tokenizer.json` file: it could not be read or parsed, or it uses
/// something this implementation does not support.
///
/// The description always names the file and, where there is one, the JSON path of the
/// offending component (e.g. `pre_tokenizer.pretokenizers[1].type`), so that a user who
/// hands us a new checkpoint learns exactly what to look at.
public struct TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The file could not be read.
        case unreadable
        /// The bytes are not valid JSON.
        case invalidJSON
        /// Valid JSON, but a required field is missing or has the wrong shape or value.
        case invalidValue
        /// A well-formed component that this implementation does not support.
        case unsupported
        /// A regular expression of the file gave up on a text (its work budget or memory ran out).
        case limitExceeded
    }

    public let kind: Kind
    /// The file (or caller-chosen source name) the error is about.
    public let file: String
    /// JSON path of the offending value, empty for whole-file problems.
    public let path: String
    public let message: String

    public init(kind: Kind, file: String, path: String, message: String) {
        self.kind = kind
        self.file = file
        self.path = path
        self.message = message
    }

    public var description: String {
        path.isEmpty ? "\(file): \(message)" : "\(file): \(path): \(message)"
    }
}
