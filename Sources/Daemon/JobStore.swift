#if canImport(Glibc)
import Glibc
#endif
import Decoding
import Foundation
import GRDB
import InputFiles

/// The job database: SQLite in WAL mode, so CLI readers never wait for the daemon, and every write
/// is one `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers queue on
/// the busy timeout instead of failing half-way with "database is locked").
// `@unchecked Sendable`: immutable after init; GRDB's DatabasePool serialises access itself.
public final class JobStore: @unchecked Sendable {
    public let url: URL
    let pool: DatabasePool

    /// - Parameter create: make the state directory and the database when missing (`serve`, `run`);
    ///   the query commands pass false, so that asking about a state directory that is not there
    ///   says so instead of leaving an empty one behind.
    public init(url: URL, create: Bool = true) throws {
        self.url = url
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
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            // A committed transition must survive power loss, not only a crash of this process.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: url.path, configuration: config)
            let migrator = Migrations.migrator
            // A read first: CLI readers of an up-to-date database never take the write lock.
            let (unknown, complete) = try pool.read { db in
                (try migrator.appliedIdentifiers(db).subtracting(migrator.migrations), try migrator.hasCompletedMigrations(db))
            }
            if !unknown.isEmpty { throw DaemonError.databaseTooNew(path: url.path, unknown: unknown.sorted()) }
            if !complete { try migrator.migrate(pool) }
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            throw JobStore.damaged(url, error.message ?? "\(error)")
        }
    }

    /// One write transaction that holds the write lock from its first statement.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(db)
                return .commit
            }
            return result!
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        try pool.read(body)
    }

    static var now: Double { Date().timeIntervalSince1970 }

    static func event(_ db: Database, job: Int64, from: JobState?, to: JobState, note: String?) throws {
        var event = EventRow(id: nil, jobId: job, at: now, fromState: from?.rawValue, toState: to.rawValue, note: note)
        try event.insert(db)
    }

    public func integrityCheck() throws -> String {
        try pool.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") ?? "no answer" }
    }

    /// `PRAGMA quick_check` (structure and record format, without the index cross-checks of
    /// integrity_check): a damaged database is refused at start instead of failing a job later.
    public func verifyIntact() throws {
        let report: [String]
        do { report = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") } } catch let error as DatabaseError {
            throw JobStore.damaged(url, error.message ?? "\(error)")
        }
        guard report == ["ok"] else { throw JobStore.damaged(url, report.prefix(3).joined(separator: "; ")) }
    }

    static func damaged(_ url: URL, _ detail: String) -> DaemonError {
        DaemonError.io("the job database \(url.path) is damaged (quick_check: \(detail)); "
            + "move it aside and restore a backup (sqlite3 \(url.path) .recover can salvage rows)")
    }
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

    public init(source: String, contentHash: String, outcome: Result<ResolvedJob, ConfigurationError>) {
        self.source = source
        self.contentHash = contentHash
        self.outcome = outcome
    }
}

extension JobStore {
    /// A job already recorded for this file name and content, if any.
    public func existingJob(source: String, contentHash: String) throws -> (id: Int64, intakePending: Bool)? {
        try read { db in
            try JobRow.filter(Column("source") == source && Column("content_hash") == contentHash)
                .order(Column("intake_pending").desc, Column("id")).fetchOne(db).map { ($0.id, $0.intakePending) }
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
                try db.execute(sql: """
                    INSERT INTO jobs (source, content_hash, state, priority, name, model, model_directory, strategy, spec,
                                      max_attempts, intake_pending, stored_as, created_at, updated_at)
                    VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [submission.source, submission.contentHash, job.spec.priority, job.spec.name, job.spec.model,
                                     job.modelDirectory.path, job.spec.strategy.name, spec,
                                     job.spec.maxAttempts ?? defaultMaxAttempts, intakePending, storedAs, t, t])
                let id = db.lastInsertedRowID
                for (i, p) in job.spec.prompts.enumerated() {
                    try PromptRow(jobId: id, idx: i, promptId: p.id, text: p.text).insert(db)
                }
                try JobStore.event(db, job: id, from: nil, to: .queued, note: "accepted \(submission.source)")
                return id
            case let .failure(error):
                let problems = error.problems.map { ProblemRecord(path: $0.path, expected: $0.expected, found: $0.found) }
                let json = String(decoding: try JSONEncoder().encode(problems), as: UTF8.self)
                try db.execute(sql: """
                    INSERT INTO jobs (source, content_hash, state, problems, error, max_attempts, intake_pending, stored_as,
                                      created_at, updated_at, finished_at)
                    VALUES (?, ?, 'rejected', ?, ?, 0, ?, ?, ?, ?, ?)
                    """, arguments: [submission.source, submission.contentHash, json, "\(error.problems.count) problem(s) in the job file",
                                     intakePending, storedAs, t, t, t])
                let id = db.lastInsertedRowID
                try JobStore.event(db, job: id, from: nil, to: .rejected, note: "rejected \(submission.source)")
                return id
            }
        }
    }

    public func markIntakeDone(job: Int64, storedAs: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE jobs SET intake_pending = 0, stored_as = ?, updated_at = ? WHERE id = ?",
                           arguments: [storedAs, JobStore.now, job])
        }
    }

    public func storedName(job: Int64) throws -> String? {
        try read { db in try String.fetchOne(db, sql: "SELECT stored_as FROM jobs WHERE id = ?", arguments: [job]) }
    }
}
