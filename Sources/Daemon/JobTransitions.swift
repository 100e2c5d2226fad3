import Decoding
import Foundation
import GRDB

/// A job a worker has claimed: everything it needs to run without reading the file again.
public struct ClaimedJob: Sendable {
    public var id: Int64
    public var lease: String
    public var run: Int
    public var attempt: Int
    public var maxAttempts: Int
    public var spec: JobSpec
    public var modelDirectory: URL
    /// Prompt indexes already finished in this run (skipped on resume).
    public var finished: Set<Int>
}

public enum StoreError: Error, CustomStringConvertible {
    /// The job is no longer ours (cancelled, or another worker took it over): drop the work.
    case leaseLost(Int64)
    case corrupt(String)

    public var description: String {
        switch self {
        case let .leaseLost(id): return "job \(id) is no longer held by this worker"
        case let .corrupt(m): return m
        }
    }
}

/// Every transition of DESIGN §4, each one transaction guarded by the state it leaves and, for a
/// running job, by the lease token of the worker that claimed it.
extension JobStore {
    /// Jobs left `running` by a daemon that died: back to `queued` (the attempt stays counted),
    /// `cancelled` if a cancel was asked for. Returns how many were recovered.
    @discardableResult
    public func recoverInterrupted() throws -> Int {
        try write { db in
            let rows = try JobRow.filter(Column("state") == JobState.running.rawValue).fetchAll(db)
            for row in rows {
                let id = row.id
                if row.cancelRequested {
                    try db.execute(sql: "UPDATE jobs SET state = 'cancelled', lease = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                                   arguments: [JobStore.now, JobStore.now, id])
                    try JobStore.event(db, job: id, from: .running, to: .cancelled, note: "cancelled while the daemon was down")
                } else {
                    try db.execute(sql: "UPDATE jobs SET state = 'queued', lease = NULL, updated_at = ? WHERE id = ?",
                                   arguments: [JobStore.now, id])
                    try JobStore.event(db, job: id, from: .running, to: .queued,
                                       note: "the daemon stopped during attempt \(row.attempts) of \(row.maxAttempts)")
                }
            }
            return rows.count
        }
    }

    /// Claims the next queued job: highest priority first, then oldest. A job whose attempts are
    /// used up (each one ended by a daemon crash) ends `failed` here instead of running again.
    /// - Parameters:
    ///   - among: only these jobs (the foreground `run` command); nil for any.
    ///   - model: only jobs for this model folder (joining a batch that runs it); nil for any.
    public func claimNext(among ids: [Int64]? = nil, model: String? = nil) throws -> ClaimedJob? {
        try write { db in
            while true {
                var sql = "SELECT * FROM jobs WHERE state = 'queued' AND (not_before IS NULL OR not_before <= ?)"
                if let ids { sql += " AND id IN (\(ids.isEmpty ? "NULL" : ids.map(String.init).joined(separator: ",")))" }
                var arguments: StatementArguments = [JobStore.now]
                if let model {
                    sql += " AND model_directory = ?"
                    arguments += [model]
                }
                sql += " ORDER BY priority DESC, id LIMIT 1"
                guard let row = try JobRow.fetchOne(db, sql: sql, arguments: arguments) else { return nil }
                let id = row.id
                let attempts = row.attempts, max = row.maxAttempts
                if attempts >= max {
                    let reason = "the daemon stopped abnormally in each of its \(attempts) attempt(s); giving up (max_attempts \(max))"
                    try db.execute(sql: "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                                   arguments: [reason, JobStore.now, JobStore.now, id])
                    try JobStore.event(db, job: id, from: .queued, to: .failed, note: reason)
                    continue
                }
                let lease = UUID().uuidString
                try db.execute(sql: """
                    UPDATE jobs SET state = 'running', lease = ?, attempts = attempts + 1, not_before = NULL, started_at = ?, updated_at = ?
                    WHERE id = ? AND state = 'queued'
                    """, arguments: [lease, JobStore.now, JobStore.now, id])
                guard db.changesCount == 1 else { throw StoreError.corrupt("job \(id) changed under a write transaction") }
                try JobStore.event(db, job: id, from: .queued, to: .running, note: "attempt \(attempts + 1) of \(max)")
                let spec = try row.jobSpec()
                guard let modelDirectory = row.modelDirectory else { throw StoreError.corrupt("job \(id) has no jobs.model_directory") }
                let done = try OutputRow.filter(Column("job_id") == id && Column("run") == row.run).fetchAll(db).map(\.idx)
                return ClaimedJob(id: id, lease: lease, run: row.run, attempt: attempts + 1, maxAttempts: max, spec: spec,
                                  modelDirectory: URL(fileURLWithPath: modelDirectory), finished: Set(done))
            }
        }
    }

    private func requireLease(_ db: Database, _ job: ClaimedJob) throws {
        let held = try Bool.fetchOne(db, sql: "SELECT 1 FROM jobs WHERE id = ? AND state = 'running' AND lease = ?",
                                     arguments: [job.id, job.lease]) ?? false
        if !held { throw StoreError.leaseLost(job.id) }
    }

    /// Commits one prompt's output; the primary key makes a second commit for the same prompt fail.
    public func commitOutput(_ job: ClaimedJob, index: Int, text: String, tokens: [Int], metrics: GenerationMetrics) throws {
        try write { db in
            try requireLease(db, job)
            let tokensJSON = String(decoding: try JSONEncoder().encode(tokens), as: UTF8.self)
            let metricsJSON = String(decoding: try JSONEncoder().encode(metrics), as: UTF8.self)
            try OutputRow(jobId: job.id, run: job.run, idx: index, text: text, tokens: tokensJSON, metrics: metricsJSON,
                          attempt: job.attempt, finishedAt: JobStore.now).insert(db)
            try db.execute(sql: "UPDATE jobs SET updated_at = ? WHERE id = ?", arguments: [JobStore.now, job.id])
        }
    }

    /// running → succeeded | failed | cancelled.
    public func finish(_ job: ClaimedJob, as state: JobState, error: String? = nil) throws {
        precondition(state.isFinal && state != .rejected)
        try write { db in
            try requireLease(db, job)
            try db.execute(sql: """
                UPDATE jobs SET state = ?, error = ?, lease = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND state = 'running' AND lease = ?
                """, arguments: [state.rawValue, error, JobStore.now, JobStore.now, job.id, job.lease])
            try JobStore.event(db, job: job.id, from: .running, to: state, note: error)
        }
    }

    /// running → queued on a clean stop: the attempt does not count against max_attempts.
    public func requeue(_ job: ClaimedJob, note: String) throws {
        try write { db in
            try requireLease(db, job)
            try db.execute(sql: """
                UPDATE jobs SET state = 'queued', lease = NULL, attempts = MAX(attempts - 1, 0), updated_at = ?
                WHERE id = ? AND state = 'running' AND lease = ?
                """, arguments: [JobStore.now, job.id, job.lease])
            try JobStore.event(db, job: job.id, from: .running, to: .queued, note: note)
        }
    }

    /// running → queued after a store failure (disk full, I/O error) during a run: the attempt
    /// counts, and the job is not claimed again for `backoff` seconds. `failed` when its attempts
    /// are used up, `cancelled` when a cancel was asked for meanwhile. Returns the new state.
    @discardableResult
    public func release(_ job: ClaimedJob, after failure: String, backoff: TimeInterval) throws -> JobState {
        try write { db in
            try requireLease(db, job)
            guard let row = try JobRow.fetchOne(db, key: job.id) else { throw StoreError.leaseLost(job.id) }
            let attempts = row.attempts, max = row.maxAttempts
            let state: JobState
            let note: String
            if row.cancelRequested {
                (state, note) = (.cancelled, "cancelled by request (after a store failure: \(failure))")
            } else if attempts >= max {
                (state, note) = (.failed, "the job store failed during attempt \(attempts) of \(max): \(failure)")
            } else {
                (state, note) = (.queued, "the job store failed during attempt \(attempts) of \(max) (\(failure)); retrying in \(Int(backoff)) s")
            }
            if state == .queued {
                try db.execute(sql: "UPDATE jobs SET state = 'queued', lease = NULL, not_before = ?, updated_at = ? WHERE id = ? AND lease = ?",
                               arguments: [JobStore.now + backoff, JobStore.now, job.id, job.lease])
            } else {
                try db.execute(sql: """
                    UPDATE jobs SET state = ?, error = ?, lease = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND lease = ?
                    """, arguments: [state.rawValue, note, JobStore.now, JobStore.now, job.id, job.lease])
            }
            try JobStore.event(db, job: job.id, from: .running, to: state, note: note)
            return state
        }
    }

    public func isCancelRequested(_ id: Int64) throws -> Bool {
        try read { db in try Bool.fetchOne(db, sql: "SELECT cancel_requested FROM jobs WHERE id = ?", arguments: [id]) ?? true }
    }

    public enum CancelOutcome: Equatable, Sendable { case cancelled, requested, alreadyFinal(JobState) }

    /// queued → cancelled at once; running → a flag the worker honours between tokens.
    public func cancel(_ id: Int64) throws -> CancelOutcome {
        try write { db in
            guard let row = try JobRow.fetchOne(db, key: id) else { throw DaemonError.notFound("no job \(id)") }
            let state = try row.jobState()
            switch state {
            case .queued:
                try db.execute(sql: "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                               arguments: [JobStore.now, JobStore.now, id])
                try JobStore.event(db, job: id, from: .queued, to: .cancelled, note: "cancelled by request")
                return .cancelled
            case .running:
                try db.execute(sql: "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND state = 'running'",
                               arguments: [JobStore.now, id])
                return .requested
            default:
                return .alreadyFinal(state)
            }
        }
    }

    /// final → queued as a new run; the earlier run's outputs and events stay in the history.
    public func retry(_ id: Int64) throws {
        try write { db in
            guard let row = try JobRow.fetchOne(db, key: id) else { throw DaemonError.notFound("no job \(id)") }
            let state = try row.jobState()
            guard state.isFinal else { throw DaemonError.invalidTransition("job \(id) is \(state.rawValue); only a finished job can be retried") }
            guard state != .rejected else {
                throw DaemonError.invalidTransition("job \(id) was rejected (its file is invalid); fix the file and submit it again")
            }
            try db.execute(sql: """
                UPDATE jobs SET state = 'queued', run = run + 1, attempts = 0, cancel_requested = 0, error = NULL, lease = NULL, not_before = NULL,
                       started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ? AND state = ?
                """, arguments: [JobStore.now, id, state.rawValue])
            try JobStore.event(db, job: id, from: state, to: .queued, note: "retry")
        }
    }
}
