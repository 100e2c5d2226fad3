import Decoding
import Foundation
import GRDB

// One record type per table, as GRDB's guide has it: the columns as stored (snake_case in SQL,
// camelCase here), decoded by GRDB's Codable support. The public views (`JobRecord`,
// `OutputRecord`) are built from these; a value the schema's types allow but the daemon cannot
// read (an unknown state, unreadable JSON) is a `StoreError.corrupt` naming the job and column,
// never a silent default.

/// A row of `jobs`. Read-only here: every write is a guarded transition in SQL (JobTransitions).
/// Rows come from either database as GRDB `Row`s (StoreDatabase), so these decode the same on both.
struct JobRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase

    var id: Int64
    var source: String
    var contentHash: String
    var state: String
    var priority: Int
    var name: String?
    var model: String?
    var modelDirectory: String?
    var strategy: String?
    var spec: String?
    var problems: String?
    var error: String?
    var run: Int
    var attempts: Int
    var maxAttempts: Int
    var lease: String?
    var cancelRequested: Bool
    var intakePending: Bool
    var storedAs: String?
    var createdAt: Double
    var updatedAt: Double
    var startedAt: Double?
    var finishedAt: Double?
    var notBefore: Double?
    var worker: String?
    var leaseExpiresAt: Double?
    var modelKey: String?
    var intakeKey: String?
    var intakeWorker: String?

    func jobState() throws -> JobState {
        guard let s = JobState(rawValue: state) else {
            throw StoreError.corrupt("job \(id) has state \"\(state)\" in jobs.state; expected one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return s
    }

    func jobSpec() throws -> JobSpec {
        guard let spec, let decoded = try? JSONDecoder().decode(JobSpec.self, from: Data(spec.utf8)) else {
            throw StoreError.corrupt("job \(id) has no readable spec in jobs.spec")
        }
        return decoded
    }

    func record(promptCount: Int, finishedPrompts: Int) throws -> JobRecord {
        var problemList: [ProblemRecord]?
        if let problems {
            guard let decoded = try? JSONDecoder().decode([ProblemRecord].self, from: Data(problems.utf8)) else {
                throw StoreError.corrupt("job \(id) has unreadable jobs.problems")
            }
            problemList = decoded
        }
        return JobRecord(
            id: id, state: try jobState(), source: source, storedAs: storedAs, contentHash: contentHash, name: name, model: model,
            modelDirectory: modelDirectory, strategy: strategy, priority: priority, run: run, attempts: attempts,
            maxAttempts: maxAttempts, cancelRequested: cancelRequested, error: error, problems: problemList,
            promptCount: promptCount, finishedPrompts: finishedPrompts, worker: worker,
            createdAt: Date(timeIntervalSince1970: createdAt), updatedAt: Date(timeIntervalSince1970: updatedAt),
            startedAt: startedAt.map(Date.init(timeIntervalSince1970:)), finishedAt: finishedAt.map(Date.init(timeIntervalSince1970:)))
    }
}

/// Prompt and output counts of jobs (a grouped read over `prompts` and `outputs`).
struct JobCountsRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var jobId: Int64
    var promptCount: Int
    var finishedPrompts: Int

    /// Counts for the jobs `ids` (all jobs when nil), the outputs of each job's current run.
    static func fetch(_ db: any StoreConnection, ids: [Int64]?) throws -> [Int64: JobCountsRow] {
        var sql = """
            SELECT j.id AS job_id, (SELECT COUNT(*) FROM prompts p WHERE p.job_id = j.id) AS prompt_count,
              (SELECT COUNT(*) FROM outputs o WHERE o.job_id = j.id AND o.run = j.run) AS finished_prompts FROM jobs j
            """
        var arguments: SQLArguments = []
        if let ids {
            sql += " WHERE j.id IN (\(ids.isEmpty ? "NULL" : ids.map { _ in "?" }.joined(separator: ",")))"
            arguments = SQLArguments(ids.map(\.databaseValue))
        }
        let rows = try db.fetchAll(JobCountsRow.self, sql, arguments)
        return Dictionary(uniqueKeysWithValues: rows.map { ($0.jobId, $0) })
    }
}

/// A row of `prompts`.
struct PromptRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var jobId: Int64
    var idx: Int
    var promptId: String
    var text: String
    /// The request's `custom_id` when the job came from an OpenAI batch file.
    var customId: String?
}

/// A row of `outputs`: one finished prompt of one run; tokens and metrics as JSON text.
struct OutputRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var jobId: Int64
    var run: Int
    var idx: Int
    var text: String
    var tokens: String
    var metrics: String

    var attempt: Int
    var finishedAt: Double

    func tokenList() throws -> [Int] {
        guard let list = try? JSONDecoder().decode([Int].self, from: Data(tokens.utf8)) else {
            throw StoreError.corrupt("job \(jobId) prompt \(idx) has unreadable outputs.tokens")
        }
        return list
    }

    /// The metrics as the strategy reported them.
    func generationMetrics() throws -> GenerationMetrics {
        guard let m = try? JSONDecoder().decode(GenerationMetrics.self, from: Data(metrics.utf8)) else {
            throw StoreError.corrupt("job \(jobId) prompt \(idx) has unreadable outputs.metrics")
        }
        return m
    }

    /// The metrics as a flat JSON object, for `result --json` (every key, including ones a newer
    /// daemon may add).
    func metricsJSON() throws -> MetricsJSON {
        guard let m = try? JSONDecoder().decode(MetricsJSON.self, from: Data(metrics.utf8)) else {
            throw StoreError.corrupt("job \(jobId) prompt \(idx) has unreadable outputs.metrics")
        }
        return m
    }
}

/// A row of `events`: one state transition.
struct EventRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var id: Int64
    var jobId: Int64
    var at: Double
    var fromState: String?
    var toState: String
    var note: String?
    var worker: String?
}

/// A row of `workers`: one daemon on the queue, as its last heartbeat left it.
struct WorkerRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var name: String
    var host: String
    var pid: Int
    var startedAt: Double
    var heartbeatAt: Double
    var stoppedAt: Double?
    var inFlightJobs: Int
    var sequences: Int
    var tokensPerSecond: Double
    var models: String
    var leaseRenewals: Int
    var leasesExpired: Int
    /// Seconds since the heartbeat by the database's clock (a computed column of the query).
    var heartbeatAge: Double
}

/// A row of `tunings`: one model's `layerskip tune` result (the latest one wins).
struct TuningRow: Decodable, FetchableRecord {
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    var modelKey: String
    var model: String
    var weights: String
    var tunedAt: Double
    var machine: String
    /// JSON object of strategy options (`exit_layer`, `speculations`, `drafter`, …).
    var settings: String
    var speedup: Double
    /// JSON: what was measured (the E × d grid, the finalists' speeds).
    var report: String
    /// JSON array of token ids, most frequent first, or NULL (the tokenizer's merge order).
    var tokenRanking: String?
}
