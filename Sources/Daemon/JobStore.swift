#if canImport(Glibc)
import Glibc
#endif
import Decoding
import Foundation
import InputFiles

/// The job database, on SQLite (the embedded default, one host) or PostgreSQL (one queue for the
/// daemons of many hosts): the same state machine and the same SQL on both (StoreDatabase).
// `@unchecked Sendable`: immutable after init; each database serialises access itself.
public final class JobStore: @unchecked Sendable {
    let database: any StoreDatabase
    var dialect: StoreDialect { database.dialect }
    /// Where the jobs are (the SQLite file, or the PostgreSQL URL), for messages.
    public var location: String { database.location }
    /// More than one daemon may share this queue: leases are what keep them apart.
    public var isShared: Bool { dialect == .postgresql }

    /// A SQLite store.
    /// - Parameter create: make the state directory and the database when missing (`serve`, `run`);
    ///   the query commands pass false, so that asking about a state directory that is not there
    ///   says so instead of leaving an empty one behind.
    public init(url: URL, create: Bool = true) throws {
        let directory = url.deletingLastPathComponent()
        if create {
            try StateDirectory.prepare(directory)
            try StateDirectory.createPrivateFile(url)
        } else {
            try StateDirectory.check(directory)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw DaemonError.notFound("no job database at \(url.path): nothing has been run with this state directory (is --config right?)")
            }
        }
        database = try SQLiteDatabase(url: url)
    }

    /// A PostgreSQL store; its schema is created or brought up to date on first use.
    public init(postgresql: PostgresLocation, applicationName: String = "layerskip") throws {
        database = try PostgresDatabase(postgresql, applicationName: applicationName)
    }

    /// The store a config names (`store:`).
    public static func open(_ config: DaemonConfig, create: Bool) throws -> JobStore {
        switch config.store {
        case .sqlite: return try JobStore(url: config.databaseURL, create: create)
        case let .postgresql(location): return try JobStore(postgresql: location)
        }
    }

    @discardableResult
    func write<T>(_ body: (any StoreConnection) throws -> T) throws -> T { try database.write(body) }
    func read<T>(_ body: (any StoreConnection) throws -> T) throws -> T { try database.read(body) }

    /// Client time, for the records' timestamps; leases use the database's clock (`dialect.now`).
    static var now: Double { Date().timeIntervalSince1970 }

    static func event(_ db: any StoreConnection, job: Int64, from: JobState?, to: JobState, note: String?, worker: String? = nil) throws {
        try db.execute("INSERT INTO events (job_id, at, from_state, to_state, note, worker) VALUES (?, ?, ?, ?, ?, ?)",
                       [job, now, from?.rawValue, to.rawValue, note, worker])
    }

    /// A damaged database is refused at start instead of failing a job later.
    public func verifyIntact() throws { try database.verifyIntact() }
}

/// The state directory holds prompts and outputs: it is created 0750 and its files 0640 whatever
/// the umask (outside systemd, whose StateDirectoryMode does the same), and it must be a directory.
enum StateDirectory {
    static func check(_ directory: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory) else {
            throw DaemonError.notFound("the state directory \(directory.path) does not exist: nothing has been run with it (is --config right?)")
        }
        guard isDirectory.boolValue else {
            throw DaemonError.io("state_directory \(directory.path) is \(kind(directory.path)), expected a directory")
        }
    }

    static func kind(_ path: String) -> String {
        var st = stat()
        return stat(path, &st) == 0 ? RegularFile.describe(mode: st.st_mode) : "missing"
    }

    static func prepare(_ directory: URL) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw DaemonError.io("state_directory \(directory.path) is \(kind(directory.path)), expected a directory")
            }
            return
        }
        let parent = directory.deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: parent.path) {
            do { try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true) } catch {
                throw DaemonError.io("cannot create \(parent.path): \(error.localizedDescription)")
            }
        }
        guard mkdir(directory.path, 0o750) == 0 || errno == EEXIST else {
            throw DaemonError.io("cannot create the state directory \(directory.path): \(FileOps.errnoText())")
        }
        chmod(directory.path, 0o750)
    }

    /// Creates `url` 0640 if it does not exist; never through a symbolic link.
    static func createPrivateFile(_ url: URL) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o640)
        if fd >= 0 {
            fchmod(fd, 0o640)
            close(fd)
        } else if errno != EEXIST {
            throw DaemonError.io("cannot create \(url.path): \(FileOps.errnoText())")
        }
    }
}

// MARK: - Intake

/// A file as the spool (or `run`) found it: where from, its content hash, and the outcome of validation.
public struct Submission: Sendable {
    public var source: String
    public var contentHash: String
    public var outcome: Result<ResolvedJob, ConfigurationError>
    /// The file's identity in a spool several daemons share (name, content hash, inode, size and
    /// modification time: the same for every host that sees the file): unique in the store, so a
    /// file can become one job only, whatever a network filesystem's renames do.
    public var intakeKey: String?
    /// The worker whose spool intake recorded it (its interrupted intakes are its own to finish).
    public var intakeWorker: String?

    public init(source: String, contentHash: String, outcome: Result<ResolvedJob, ConfigurationError>,
                intakeKey: String? = nil, intakeWorker: String? = nil) {
        self.source = source
        self.contentHash = contentHash
        self.outcome = outcome
        self.intakeKey = intakeKey
        self.intakeWorker = intakeWorker
    }
}

extension JobStore {
    /// A job already recorded for this file name and content, if any.
    public func existingJob(source: String, contentHash: String) throws -> (id: Int64, intakePending: Bool)? {
        try read { db in
            try db.fetchOne(JobRow.self, "SELECT * FROM jobs WHERE source = ? AND content_hash = ? ORDER BY intake_pending DESC, id LIMIT 1",
                            [source, contentHash]).map { ($0.id, $0.intakePending) }
        }
    }

    /// The job recorded for a spool file's `intakeKey`, if any.
    public func job(intakeKey: String) throws -> (id: Int64, storedAs: String?)? {
        try read { db in
            try db.fetchOne(JobRow.self, "SELECT * FROM jobs WHERE intake_key = ?", [intakeKey]).map { ($0.id, $0.storedAs) }
        }
    }

    /// Records a job as `queued` or `rejected`; with `intakePending` until its file has been moved.
    @discardableResult
    public func insert(_ submission: Submission, defaultMaxAttempts: Int, intakePending: Bool, storedAs: String?) throws -> Int64 {
        try write { db in
            let t = JobStore.now
            switch submission.outcome {
            case let .success(job):
                let spec = String(decoding: try JSONEncoder().encode(job.spec), as: UTF8.self)
                let id = try insertedID(db, """
                    INSERT INTO jobs (source, content_hash, state, priority, name, model, model_directory, model_key, strategy, spec,
                                      max_attempts, intake_pending, stored_as, intake_key, intake_worker, created_at, updated_at)
                    VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                    """, [submission.source, submission.contentHash, job.spec.priority, job.spec.name, job.spec.model,
                          job.modelDirectory.path, job.modelKey, job.spec.strategy.name, spec,
                          job.spec.maxAttempts ?? defaultMaxAttempts, intakePending, storedAs, submission.intakeKey, submission.intakeWorker, t, t])
                for (i, p) in job.spec.prompts.enumerated() {
                    try db.execute("INSERT INTO prompts (job_id, idx, prompt_id, text, custom_id) VALUES (?, ?, ?, ?, ?)",
                                   [id, i, p.id, storedText(p.text), p.customId.map(storedText)])
                }
                try JobStore.event(db, job: id, from: nil, to: .queued, note: "accepted \(submission.source)")
                return id
            case let .failure(error):
                let problems = error.problems.map { ProblemRecord(path: $0.path, expected: $0.expected, found: $0.found) }
                let json = String(decoding: try JSONEncoder().encode(problems), as: UTF8.self)
                let id = try insertedID(db, """
                    INSERT INTO jobs (source, content_hash, state, problems, error, max_attempts, intake_pending, stored_as,
                                      intake_key, intake_worker, created_at, updated_at, finished_at)
                    VALUES (?, ?, 'rejected', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?) RETURNING id
                    """, [submission.source, submission.contentHash, json, "\(error.problems.count) problem(s) in the job file",
                          intakePending, storedAs, submission.intakeKey, submission.intakeWorker, t, t, t])
                try JobStore.event(db, job: id, from: nil, to: .rejected, note: "rejected \(submission.source)")
                return id
            }
        }
    }

    public func markIntakeDone(job: Int64, storedAs: String) throws {
        try write { db in
            try db.execute("UPDATE jobs SET intake_pending = 0, stored_as = ?, updated_at = ? WHERE id = ?", [storedAs, JobStore.now, job])
        }
    }

    public func storedName(job: Int64) throws -> String? {
        try read { db in try db.value(String.self, "SELECT stored_as FROM jobs WHERE id = ?", [job]) }
    }

    private func insertedID(_ db: any StoreConnection, _ sql: String, _ arguments: SQLArguments) throws -> Int64 {
        guard let id = try db.value(Int64.self, sql, arguments) else { throw StoreError.corrupt("an INSERT into jobs returned no id") }
        return id
    }
}
