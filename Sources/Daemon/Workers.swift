import Foundation

/// A daemon on the queue, for `layerskip workers`.
public struct WorkerRecord: Codable, Sendable, Equatable {
    public var name: String
    public var host: String
    public var pid: Int
    public var startedAt: Date
    /// Seconds since its last heartbeat, by the database's clock.
    public var heartbeatAge: Double
    /// Stopped cleanly (SIGTERM, drain); nil while it runs or if it died.
    public var stoppedAt: Date?
    public var inFlightJobs: Int
    public var sequences: Int
    /// Tokens per second it generated over its last heartbeat interval.
    public var tokensPerSecond: Double
    /// The model keys it can run.
    public var models: [String]
    public var leaseRenewals: Int
    /// Leases of its jobs that expired (and were put back by some daemon).
    public var leasesExpired: Int
}

/// What a heartbeat reports.
public struct WorkerLoad: Sendable, Equatable {
    public var inFlightJobs: Int
    public var sequences: Int
    public var tokensPerSecond: Double
    public init(inFlightJobs: Int = 0, sequences: Int = 0, tokensPerSecond: Double = 0) {
        self.inFlightJobs = inFlightJobs
        self.sequences = sequences
        self.tokensPerSecond = tokensPerSecond
    }
}

extension JobStore {
    /// Records a daemon as started (again, under the same name after a restart).
    public func registerWorker(_ worker: Worker) throws {
        let models = String(decoding: try JSONEncoder().encode((worker.models?.keys).map { $0.sorted() } ?? ["*"]), as: UTF8.self)
        try write { db in
            try db.execute("""
                INSERT INTO workers (name, host, pid, started_at, heartbeat_at, stopped_at, models)
                VALUES (?, ?, ?, ?, \(dialect.now), NULL, ?)
                ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, started_at = excluded.started_at,
                  heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, models = excluded.models,
                  in_flight_jobs = 0, sequences = 0, tokens_per_second = 0
                """, [worker.name, worker.host, Int(getpid()), JobStore.now, models])
        }
    }

    public func heartbeat(_ worker: Worker, load: WorkerLoad) throws {
        try write { db in
            try db.execute("""
                UPDATE workers SET heartbeat_at = \(dialect.now), in_flight_jobs = ?, sequences = ?, tokens_per_second = ? WHERE name = ?
                """, [load.inFlightJobs, load.sequences, load.tokensPerSecond, worker.name])
        }
    }

    public func workerStopped(_ worker: Worker) throws {
        try write { db in
            try db.execute("UPDATE workers SET stopped_at = ?, in_flight_jobs = 0, sequences = 0, tokens_per_second = 0 WHERE name = ?",
                           [JobStore.now, worker.name])
        }
    }

    /// Every daemon that has run on this queue, most recent heartbeat first.
    public func workers() throws -> [WorkerRecord] {
        try read { db in
            try db.fetchAll(WorkerRow.self, "SELECT *, \(dialect.now) - heartbeat_at AS heartbeat_age FROM workers ORDER BY heartbeat_at DESC, name")
                .map { row in
                    guard let models = try? JSONDecoder().decode([String].self, from: Data(row.models.utf8)) else {
                        throw StoreError.corrupt("worker \(row.name) has unreadable workers.models")
                    }
                    return WorkerRecord(name: row.name, host: row.host, pid: row.pid, startedAt: Date(timeIntervalSince1970: row.startedAt),
                                        heartbeatAge: max(0, row.heartbeatAge), stoppedAt: row.stoppedAt.map(Date.init(timeIntervalSince1970:)),
                                        inFlightJobs: row.inFlightJobs, sequences: row.sequences, tokensPerSecond: row.tokensPerSecond,
                                        models: models, leaseRenewals: row.leaseRenewals, leasesExpired: row.leasesExpired)
                }
        }
    }
}
