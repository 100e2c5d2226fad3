import Decoding
import Foundation

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
    /// The worker that holds the lease.
    public var worker: String
}

/// Who claims: the daemon (or `run` command) a lease is given to.
public struct Worker: Sendable, Equatable {
    /// Unique among the daemons on one queue: the host's name and the state directory (which one
    /// live daemon holds, by its instance lock), so a restarted daemon knows its own old leases.
    public var name: String
    public var host: String
    /// A lease not renewed for this long has expired: any daemon puts its job back in the queue.
    public var leaseSeconds: Double
    /// The models this worker can run, by model key (`ResolvedJob.modelKey`), with the folder each
    /// is in on this host; nil: every job's model, from the folder recorded at intake (one host).
    public var models: [String: URL]?

    public init(name: String, host: String, leaseSeconds: Double = 60, models: [String: URL]? = nil) {
        self.name = name
        self.host = host
        self.leaseSeconds = leaseSeconds
        self.models = models
    }

    /// The worker of a single-host store (tests, and SQLite stores opened without a config).
    public static var local: Worker {
        let host = ProcessInfo.processInfo.hostName
        return Worker(name: host, host: host)
    }
}

public enum StoreError: Error, CustomStringConvertible {
    /// The job is no longer ours (cancelled, or another worker took it over): drop the work.
    case leaseLost(Int64)
    case corrupt(String)
    /// The database cannot be reached (connection refused or lost, timeout).
    case unavailable(String)
    /// The database refused a statement (SQLSTATE and its message).
    case server(String, sqlstate: String)

    public var description: String {
        switch self {
        case let .leaseLost(id): return "job \(id) is no longer held by this worker"
        case let .corrupt(m), let .unavailable(m): return m
        case let .server(m, sqlstate): return "the job store refused a statement (SQLSTATE \(sqlstate)): \(m)"
        }
    }
}

/// Every transition of DESIGN §4, each one transaction guarded by the state it leaves and, for a
/// running job, by the lease token of the worker that claimed it. On PostgreSQL the row a
/// transition reads is locked until it commits (`dialect.forUpdate`), so transitions of one job
/// by two daemons happen one after the other, each seeing the other's result.
extension JobStore {
    /// Jobs left `running` by an earlier run of this worker that died (its instance lock is ours
    /// now, so nobody else is running them): back to `queued` (the attempt stays counted),
    /// `cancelled` if a cancel was asked for. On a single-host store every running job is such a
    /// job. Returns how many were recovered.
    @discardableResult
    public func recoverInterrupted(worker: Worker = .local) throws -> Int {
        try write { db in
            var sql = "SELECT * FROM jobs WHERE state = 'running'"
            var arguments: SQLArguments = []
            if isShared {
                sql += " AND worker = ?"
                arguments = [worker.name]
            }
            let rows = try db.fetchAll(JobRow.self, sql + dialect.forUpdate, arguments)
            for row in rows {
                try putBack(db, row, note: "the daemon stopped during attempt \(row.attempts) of \(row.maxAttempts)", worker: worker.name)
            }
            return rows.count
        }
    }

    /// A running job whose worker is gone goes back to `queued`, or to `cancelled` when a cancel
    /// was asked for; its attempt stays counted.
    private func putBack(_ db: any StoreConnection, _ row: JobRow, note: String, worker: String?) throws {
        if row.cancelRequested {
            try db.execute("UPDATE jobs SET state = 'cancelled', lease = NULL, lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
                           [JobStore.now, JobStore.now, row.id])
            try JobStore.event(db, job: row.id, from: .running, to: .cancelled, note: "cancelled while its worker was gone", worker: worker)
        } else {
            try db.execute("UPDATE jobs SET state = 'queued', lease = NULL, lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                           [JobStore.now, row.id])
            try JobStore.event(db, job: row.id, from: .running, to: .queued, note: note, worker: worker)
        }
    }

    /// Running jobs whose lease expired (their worker died, hung, or lost the database) go back
    /// to the queue; any daemon does this before it claims. Rows another transaction holds are
    /// left for the next sweep. Returns the jobs put back.
    @discardableResult
    public func requeueExpired(by worker: Worker = .local) throws -> [Int64] {
        try write { db in try requeueExpired(db, by: worker) }
    }

    @discardableResult
    private func requeueExpired(_ db: any StoreConnection, by worker: Worker) throws -> [Int64] {
        let rows = try db.fetchAll(JobRow.self, """
            SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at IS NOT NULL AND lease_expires_at < \(dialect.now)
            ORDER BY id\(dialect.skipLocked)
            """)
        for row in rows {
            try putBack(db, row, note: "the lease of \(row.worker ?? "its worker") expired during attempt \(row.attempts) of \(row.maxAttempts)",
                        worker: worker.name)
            if let holder = row.worker {
                try db.execute("UPDATE workers SET leases_expired = leases_expired + 1 WHERE name = ?", [holder])
            }
        }
        return rows.map(\.id)
    }

    /// Claims the next queued job: highest priority first, then oldest. A job whose attempts are
    /// used up (each one ended by a daemon crash) ends `failed` here instead of running again.
    /// Expired leases are put back first, so a dead worker's job is claimable at once.
    /// - Parameters:
    ///   - among: only these jobs (the foreground `run` command); nil for any.
    ///   - model: only jobs for this model folder (joining a batch that runs it); nil for any.
    ///   - worker: who claims; on a shared store only jobs for its `models` are claimed.
    public func claimNext(among ids: [Int64]? = nil, model: String? = nil, worker: Worker = .local) throws -> ClaimedJob? {
        try write { db in
            try requeueExpired(db, by: worker)
            while true {
                var sql = "SELECT * FROM jobs WHERE state = 'queued' AND (not_before IS NULL OR not_before <= ?)"
                if let ids { sql += " AND id IN (\(ids.isEmpty ? "NULL" : ids.map(String.init).joined(separator: ",")))" }
                var arguments: SQLArguments = [JobStore.now]
                if let model {
                    sql += " AND model_directory = ?"
                    arguments += [model]
                }
                if ids == nil, let models = worker.models {
                    let keys = models.keys.sorted()
                    sql += keys.isEmpty ? " AND 0 = 1" : " AND model_key IN (\(keys.map { _ in "?" }.joined(separator: ",")))"
                    arguments += SQLArguments(keys.map(\.databaseValue))
                }
                sql += " ORDER BY priority DESC, id LIMIT 1" + dialect.skipLocked
                guard let row = try db.fetchOne(JobRow.self, sql, arguments) else { return nil }
                let id = row.id
                let attempts = row.attempts, max = row.maxAttempts
                if attempts >= max {
                    let reason = "the daemon stopped abnormally in each of its \(attempts) attempt(s); giving up (max_attempts \(max))"
                    try db.execute("UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                                   [reason, JobStore.now, JobStore.now, id])
                    try JobStore.event(db, job: id, from: .queued, to: .failed, note: reason, worker: worker.name)
                    continue
                }
                let directory: URL
                if ids == nil, let models = worker.models {
                    guard let key = row.modelKey, let local = models[key] else { throw StoreError.corrupt("job \(id) has no jobs.model_key") }
                    directory = local
                } else {
                    guard let modelDirectory = row.modelDirectory else { throw StoreError.corrupt("job \(id) has no jobs.model_directory") }
                    directory = URL(fileURLWithPath: modelDirectory)
                }
                let lease = UUID().uuidString
                let changed = try db.execute("""
                    UPDATE jobs SET state = 'running', lease = ?, worker = ?, lease_expires_at = \(dialect.now) + ?, attempts = attempts + 1,
                                    not_before = NULL, started_at = ?, updated_at = ?
                    WHERE id = ? AND state = 'queued'
                    """, [lease, worker.name, worker.leaseSeconds, JobStore.now, JobStore.now, id])
                guard changed == 1 else { throw StoreError.corrupt("job \(id) changed under a write transaction") }
                try JobStore.event(db, job: id, from: .queued, to: .running, note: "attempt \(attempts + 1) of \(max) on \(worker.name)", worker: worker.name)
                let spec = try row.jobSpec()
                let done = try db.values(Int.self, "SELECT idx FROM outputs WHERE job_id = ? AND run = ?", [id, row.run])
                return ClaimedJob(id: id, lease: lease, run: row.run, attempt: attempts + 1, maxAttempts: max, spec: spec,
                                  modelDirectory: directory, finished: Set(done), worker: worker.name)
            }
        }
    }

    /// Extends the leases of `jobs` by their worker's lease time. Returns the jobs whose lease is
    /// no longer theirs (expired and taken over, cancelled while the worker was cut off): their
    /// work must be dropped.
    public func renewLeases(_ jobs: [ClaimedJob], worker: Worker) throws -> Set<Int64> {
        guard !jobs.isEmpty else { return [] }
        return try write { db in
            var lost: Set<Int64> = []
            for job in jobs {
                let changed = try db.execute("UPDATE jobs SET lease_expires_at = \(dialect.now) + ? WHERE id = ? AND state = 'running' AND lease = ?",
                                             [worker.leaseSeconds, job.id, job.lease])
                if changed == 0 { lost.insert(job.id) }
            }
            try db.execute("UPDATE workers SET lease_renewals = lease_renewals + ? WHERE name = ?", [jobs.count - lost.count, worker.name])
            return lost
        }
    }

    private func requireLease(_ db: any StoreConnection, _ job: ClaimedJob) throws {
        let held = try db.value(Int.self, "SELECT 1 FROM jobs WHERE id = ? AND state = 'running' AND lease = ?\(dialect.forUpdate)",
                                [job.id, job.lease]) != nil
        if !held { throw StoreError.leaseLost(job.id) }
    }

    /// Commits one prompt's output, once: a second, different output for the same prompt is
    /// refused. The same output again from the same attempt is not an error: it is the retry of a
    /// commit whose reply was lost (the server went away between COMMIT and its answer, so the
    /// runner could not know it had landed), and the row already holds it.
    public func commitOutput(_ job: ClaimedJob, index: Int, text: String, tokens: [Int], metrics: GenerationMetrics) throws {
        try write { db in
            try requireLease(db, job)
            let tokensJSON = String(decoding: try JSONEncoder().encode(tokens), as: UTF8.self)
            let metricsJSON = String(decoding: try JSONEncoder().encode(metrics), as: UTF8.self)
            let inserted = try db.execute("""
                INSERT INTO outputs (job_id, run, idx, text, tokens, metrics, attempt, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (job_id, run, idx) DO NOTHING
                """, [job.id, job.run, index, storedText(text), tokensJSON, metricsJSON, job.attempt, JobStore.now])
            if inserted == 0 {
                let existing = try db.fetchOne(OutputRow.self, "SELECT * FROM outputs WHERE job_id = ? AND run = ? AND idx = ?", [job.id, job.run, index])
                guard let existing, existing.attempt == job.attempt, try existing.tokenList() == tokens else {
                    throw StoreError.corrupt("job \(job.id) prompt \(index): an output from attempt \(existing.map { String($0.attempt) } ?? "?") is already committed, and this one (attempt \(job.attempt)) differs; a prompt's output is committed once")
                }
                return
            }
            try db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", [JobStore.now, job.id])
        }
    }

    /// running → succeeded | failed | cancelled. Finishing again as the same state, from the same
    /// attempt, is the retry of a finish whose reply was lost (see `commitOutput`) and succeeds.
    public func finish(_ job: ClaimedJob, as state: JobState, error: String? = nil) throws {
        precondition(state.isFinal && state != .rejected)
        try write { db in
            do { try requireLease(db, job) } catch StoreError.leaseLost {
                // Another worker's claim would have counted an attempt; so would this worker's next one.
                guard let row = try db.fetchOne(JobRow.self, "SELECT * FROM jobs WHERE id = ?", [job.id]),
                      row.state == state.rawValue, row.lease == nil, row.run == job.run, row.attempts == job.attempt,
                      row.worker == job.worker else { throw StoreError.leaseLost(job.id) }
                return
            }
            try db.execute("""
                UPDATE jobs SET state = ?, error = ?, lease = NULL, lease_expires_at = NULL, finished_at = ?, updated_at = ?
                WHERE id = ? AND state = 'running' AND lease = ?
                """, [state.rawValue, error, JobStore.now, JobStore.now, job.id, job.lease])
            try JobStore.event(db, job: job.id, from: .running, to: state, note: error, worker: job.worker)
        }
    }

    /// running → queued on a clean stop: the attempt does not count against max_attempts.
    public func requeue(_ job: ClaimedJob, note: String) throws {
        try write { db in
            try requireLease(db, job)
            try db.execute("""
                UPDATE jobs SET state = 'queued', lease = NULL, lease_expires_at = NULL,
                                attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = ?
                WHERE id = ? AND state = 'running' AND lease = ?
                """, [JobStore.now, job.id, job.lease])
            try JobStore.event(db, job: job.id, from: .running, to: .queued, note: note, worker: job.worker)
        }
    }

    /// running → queued after a store failure (disk full, I/O error) during a run: the attempt
    /// counts, and the job is not claimed again for `backoff` seconds. `failed` when its attempts
    /// are used up, `cancelled` when a cancel was asked for meanwhile. Returns the new state.
    @discardableResult
    public func release(_ job: ClaimedJob, after failure: String, backoff: TimeInterval) throws -> JobState {
        try write { db in
            try requireLease(db, job)
            guard let row = try db.jobForUpdate(job.id, dialect) else { throw StoreError.leaseLost(job.id) }
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
                try db.execute("UPDATE jobs SET state = 'queued', lease = NULL, lease_expires_at = NULL, not_before = ?, updated_at = ? WHERE id = ? AND lease = ?",
                               [JobStore.now + backoff, JobStore.now, job.id, job.lease])
            } else {
                try db.execute("""
                    UPDATE jobs SET state = ?, error = ?, lease = NULL, lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND lease = ?
                    """, [state.rawValue, note, JobStore.now, JobStore.now, job.id, job.lease])
            }
            try JobStore.event(db, job: job.id, from: .running, to: state, note: note, worker: job.worker)
            return state
        }
    }

    /// Which of `ids` have a cancel request (one read for a whole batch's jobs).
    public func cancelRequested(among ids: [Int64]) throws -> Set<Int64> {
        guard !ids.isEmpty else { return [] }
        return try read { db in
            Set(try db.values(Int64.self, "SELECT id FROM jobs WHERE cancel_requested = 1 AND id IN (\(ids.map { _ in "?" }.joined(separator: ",")))",
                              SQLArguments(ids.map(\.databaseValue))))
        }
    }

    public enum CancelOutcome: Equatable, Sendable { case cancelled, requested, alreadyFinal(JobState) }

    /// queued → cancelled at once; running → a flag the worker honours between tokens.
    public func cancel(_ id: Int64) throws -> CancelOutcome {
        try write { db in
            guard let row = try db.jobForUpdate(id, dialect) else { throw DaemonError.notFound("no job \(id)") }
            let state = try row.jobState()
            switch state {
            case .queued:
                try db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ? WHERE id = ? AND state = 'queued'",
                               [JobStore.now, JobStore.now, id])
                try JobStore.event(db, job: id, from: .queued, to: .cancelled, note: "cancelled by request")
                return .cancelled
            case .running:
                try db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND state = 'running'", [JobStore.now, id])
                return .requested
            default:
                return .alreadyFinal(state)
            }
        }
    }

    /// final → queued as a new run; the earlier run's outputs and events stay in the history.
    public func retry(_ id: Int64) throws {
        try write { db in
            guard let row = try db.jobForUpdate(id, dialect) else { throw DaemonError.notFound("no job \(id)") }
            let state = try row.jobState()
            guard state.isFinal else { throw DaemonError.invalidTransition("job \(id) is \(state.rawValue); only a finished job can be retried") }
            guard state != .rejected else {
                throw DaemonError.invalidTransition("job \(id) was rejected (its file is invalid); fix the file and submit it again")
            }
            try db.execute("""
                UPDATE jobs SET state = 'queued', run = run + 1, attempts = 0, cancel_requested = 0, error = NULL, lease = NULL,
                       lease_expires_at = NULL, not_before = NULL, started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ? AND state = ?
                """, [JobStore.now, id, state.rawValue])
            try JobStore.event(db, job: id, from: state, to: .queued, note: "retry")
        }
    }
}
