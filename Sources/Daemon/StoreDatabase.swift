import Foundation
import GRDB

// The job store's state machine (JobTransitions, JobQueries, intake) is written once, in SQL that
// SQLite and PostgreSQL both run, against this small interface; `SQLiteDatabase` (GRDB) and
// `PostgresDatabase` (libpq) implement it. Rows are GRDB `Row`s on both, so the record types of
// StoreRecords decode the same way whichever database the row came from.

/// The values bound to a statement's `?` placeholders, in order.
struct SQLArguments: ExpressibleByArrayLiteral {
    var values: [DatabaseValue]

    init(_ values: [DatabaseValue]) { self.values = values }
    init(arrayLiteral elements: (any DatabaseValueConvertible)?...) {
        values = elements.map { $0?.databaseValue ?? .null }
    }

    static func + (a: SQLArguments, b: SQLArguments) -> SQLArguments { SQLArguments(a.values + b.values) }
    static func += (a: inout SQLArguments, b: SQLArguments) { a.values += b.values }
}

/// One open transaction.
protocol StoreConnection {
    /// Runs one statement; returns the number of rows it inserted, updated or deleted.
    @discardableResult
    func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int
    /// Runs one statement that returns rows (a SELECT, or a write with RETURNING).
    func rows(_ sql: String, _ arguments: SQLArguments) throws -> [Row]
}

extension StoreConnection {
    @discardableResult
    func execute(_ sql: String) throws -> Int { try execute(sql, []) }

    func fetchAll<R: FetchableRecord>(_ type: R.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> [R] {
        try rows(sql, arguments).map { try R(row: $0) }
    }

    func fetchOne<R: FetchableRecord>(_ type: R.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> R? {
        try rows(sql, arguments).first.map { try R(row: $0) }
    }

    /// The first column of every row (the statement selects one column), NULLs left out.
    func values<V: DatabaseValueConvertible>(_ type: V.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> [V] {
        try rows(sql, arguments).compactMap { row in
            let value: DatabaseValue = row[0]
            return value.isNull ? nil : V.fromDatabaseValue(value)
        }
    }

    /// The first column of the first row; nil when there is no row or it is NULL.
    func value<V: DatabaseValueConvertible>(_ type: V.Type, _ sql: String, _ arguments: SQLArguments = []) throws -> V? {
        try values(type, sql, arguments).first
    }

    /// A job row, read for a write that follows in the same transaction: on PostgreSQL the row is
    /// locked until the commit, so a transition that checks a row's state and then changes it
    /// cannot interleave with another daemon's transition of the same job.
    func jobForUpdate(_ id: Int64, _ dialect: StoreDialect) throws -> JobRow? {
        try fetchOne(JobRow.self, "SELECT * FROM jobs WHERE id = ?\(dialect.forUpdate)", [id])
    }
}

/// A prompt's or an output's text as stored: its UTF-8 bytes, so that U+0000 survives (a prompt
/// may contain it and a model may emit it). PostgreSQL's TEXT cannot hold it (those columns are
/// BYTEA there), and a String bound to SQLite ends at it (GRDB binds text NUL-terminated); both
/// drivers read the bytes back as a String.
func storedText(_ s: String) -> DatabaseValue { Data(s.utf8).databaseValue }

/// What differs between the two databases in the store's SQL. Everything else is written once.
enum StoreDialect: Sendable {
    case sqlite, postgresql

    /// Appended to a SELECT whose rows the transaction goes on to change. SQLite has one writer at
    /// a time (every write transaction is BEGIN IMMEDIATE), so the rows are already its own.
    var forUpdate: String { self == .postgresql ? " FOR UPDATE" : "" }

    /// Appended to the claim's SELECT: rows another daemon's open transaction holds are passed
    /// over instead of waited for, so N daemons claim N different jobs at once.
    var skipLocked: String { self == .postgresql ? " FOR UPDATE SKIP LOCKED" : "" }

    /// The database's clock in seconds since 1970. Leases expire by this one clock, so hosts whose
    /// clocks disagree still agree on which lease has run out.
    var now: String {
        switch self {
        case .sqlite: return "((julianday('now') - 2440587.5) * 86400.0)"
        case .postgresql: return "(EXTRACT(EPOCH FROM clock_timestamp())::double precision)"
        }
    }
}

/// A database the job store runs on.
protocol StoreDatabase: AnyObject, Sendable {
    var dialect: StoreDialect { get }
    /// Where it is, for messages (a file path, or a URL without its password).
    var location: String { get }
    /// One write transaction. On SQLite it holds the write lock from its first statement; on
    /// PostgreSQL it is retried from the start when the server aborts it for a deadlock or a
    /// serialization conflict, so `body` must not act outside the database.
    func write<T>(_ body: (any StoreConnection) throws -> T) throws -> T
    /// One read-only transaction on a consistent snapshot.
    func read<T>(_ body: (any StoreConnection) throws -> T) throws -> T
    /// Refuses a damaged database (SQLite's quick_check; on PostgreSQL the server's own business).
    func verifyIntact() throws
}
