import Foundation

/// DESIGN §4. `final` states change only by `retry`.
public enum JobState: String, Codable, Sendable, CaseIterable {
    case queued, running, succeeded, failed, cancelled, rejected

    public var isFinal: Bool {
        switch self {
        case .queued, .running: return false
        case .succeeded, .failed, .cancelled, .rejected: return true
        }
    }
}

/// A job row as the CLI shows it.
public struct JobRecord: Codable, Sendable, Equatable {
    public var id: Int64
    public var state: JobState
    public var source: String
    public var storedAs: String?
    public var contentHash: String
    public var name: String?
    public var model: String?
    public var modelDirectory: String?
    public var strategy: String?
    public var priority: Int
    public var run: Int
    public var attempts: Int
    public var maxAttempts: Int
    public var cancelRequested: Bool
    public var error: String?
    public var problems: [ProblemRecord]?
    public var promptCount: Int
    public var finishedPrompts: Int
    /// The worker that holds (or last held) the job's lease.
    public var worker: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
}

/// A validation problem as stored with a rejected job.
public struct ProblemRecord: Codable, Sendable, Equatable {
    public var path: String
    public var expected: String
    public var found: String
}

/// One prompt's result in the job's current run.
public struct OutputRecord: Codable, Sendable, Equatable {
    public var index: Int
    public var promptId: String
    /// The request's `custom_id`, for a job that came from an OpenAI batch file.
    public var customId: String?
    public var prompt: String
    public var text: String?
    public var tokens: [Int]?
    public var metrics: MetricsJSON?
    public var attempt: Int?
    public var finishedAt: Date?
}

/// Metrics are stored as the strategy reported them (Decoding's `GenerationMetrics` JSON).
public typealias MetricsJSON = [String: JSONScalar]

/// A JSON leaf, enough to carry metrics through the store without tying the schema to one struct.
public enum JSONScalar: Codable, Sendable, Equatable {
    case number(Double), string(String), bool(Bool), null

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null } else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) } else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .number(d): try c.encode(d)
        case let .string(s): try c.encode(s)
        case let .bool(b): try c.encode(b)
        case .null: try c.encodeNil()
        }
    }

    public var number: Double? { if case let .number(d) = self { return d } else { return nil } }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
}
