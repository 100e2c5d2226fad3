import Foundation
import GRDB

/// The embedded job store: SQLite in WAL mode, so CLI readers never wait for the daemon, and every
/// write is one `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers
/// queue on the busy timeout instead of failing half-way with "database is locked").
// `@unchecked Sendable`: immutable after init; GRDB's DatabasePool serialises access itself.
final class SQLiteDatabase: StoreDatabase, @unchecked Sendable {
    let url: URL
    let pool: DatabasePool
    var dialect: StoreDialect { .sqlite }
    var location: String { url.path }

    init(url: URL) throws {
        self.url = url
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            // A committed transition must survive power loss, not only a crash of this process.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: url.path, configuration: config)
            let migrator = Migrations.sqliteMigrator
            // A read first: CLI readers of an up-to-date database never take the write lock.
            let (unknown, complete) = try pool.read { db in
                (try migrator.appliedIdentifiers(db).subtracting(migrator.migrations), try migrator.hasCompletedMigrations(db))
            }
            if !unknown.isEmpty { throw DaemonError.databaseTooNew(path: url.path, unknown: unknown.sorted()) }
            if !complete { try migrator.migrate(pool) }
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            throw Self.damaged(url, error.message ?? "\(error)")
        }
    }

    struct Connection: StoreConnection {
        let db: Database
        func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
            try db.execute(sql: sql, arguments: StatementArguments(arguments.values))
            return db.changesCount
        }
        func rows(_ sql: String, _ arguments: SQLArguments) throws -> [Row] {
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(arguments.values))
        }
    }

    func write<T>(_ body: (any StoreConnection) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(Connection(db: db))
                return .commit
            }
            return result!
        }
    }

    func read<T>(_ body: (any StoreConnection) throws -> T) throws -> T {
        try pool.read { try body(Connection(db: $0)) }
    }

    /// `PRAGMA quick_check` (structure and record format, without the index cross-checks of
    /// integrity_check): a damaged database is refused at start instead of failing a job later.
    func verifyIntact() throws {
        let report: [String]
        do { report = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") } } catch let error as DatabaseError {
            throw Self.damaged(url, error.message ?? "\(error)")
        }
        guard report == ["ok"] else { throw Self.damaged(url, report.prefix(3).joined(separator: "; ")) }
    }

    static func damaged(_ url: URL, _ detail: String) -> DaemonError {
        DaemonError.io("the job database \(url.path) is damaged (quick_check: \(detail)); "
            + "move it aside and restore a backup (sqlite3 \(url.path) .recover can salvage rows)")
    }
}
