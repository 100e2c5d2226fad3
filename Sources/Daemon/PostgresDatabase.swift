import CLibPQ
import Foundation
import GRDB
import InputFiles

/// Where a PostgreSQL job store is: a libpq connection URI (never with a password in it) and where
/// its password comes from: `password_file` (its first line), else libpq's own sources
/// (PGPASSWORD, ~/.pgpass).
public struct PostgresLocation: Sendable, Equatable {
    public var url: String
    public var passwordFile: URL?

    public init(url: String, passwordFile: URL? = nil) {
        self.url = url
        self.passwordFile = passwordFile
    }

    /// Nil when `url` is a connection URI libpq accepts and carries no password; else what is wrong.
    public static func problem(_ url: String) -> String? {
        guard url.hasPrefix("postgresql://") || url.hasPrefix("postgres://") else {
            return "a postgresql:// URL (libpq's connection URI)"
        }
        var message: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(url, &message) else {
            let text = message.map { String(cString: $0).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "unreadable"
            if let message { PQfreemem(message) }
            return "a connection URI libpq accepts (\(text))"
        }
        defer { PQconninfoFree(options) }
        var option = options
        while let keyword = option.pointee.keyword {
            if String(cString: keyword) == "password", option.pointee.val != nil {
                return "a URL without a password (put it in password_file, or in PGPASSWORD or ~/.pgpass)"
            }
            option += 1
        }
        return nil
    }
}

/// The shared job store: PostgreSQL through libpq. libpq's calls block, which suits the daemon's
/// threads (the runner, the spool loop and the heartbeat each wait on their own statement); a
/// connection is used by one thread at a time, taken from a small pool and put back after each
/// transaction.
///
/// Every connection sets timeouts, so that a lost server or a cut network ends a statement with an
/// error instead of blocking a thread forever: connect 5 s; TCP keepalives and a 10 s TCP user
/// timeout; statements 30 s; lock waits 5 s; and the server ends a session idle in a transaction
/// for 30 s (a daemon stopped with SIGSTOP mid-transaction must not hold its rows' locks).
// `@unchecked Sendable`: `idle` is touched only under `lock`; a connection is used by the one
// thread that took it out of `idle`.
final class PostgresDatabase: StoreDatabase, @unchecked Sendable {
    var dialect: StoreDialect { .postgresql }
    let location: String
    private let keywords: [String]
    private let values: [String]
    private let lock = NSLock()
    private var idle: [OpaquePointer] = []
    private static let keptIdle = 4

    init(_ target: PostgresLocation, applicationName: String = "layerskip") throws {
        location = target.url
        if let problem = PostgresLocation.problem(target.url) {
            throw DaemonError.io("store.postgresql \(target.url): expected \(problem)")
        }
        var keywords = ["dbname"], values = [target.url]
        if let file = target.passwordFile {
            let text: String
            do { text = String(decoding: try RegularFile.read(file.path, limit: 4096), as: UTF8.self) } catch {
                throw DaemonError.io("store.password_file \(file.path): expected a readable file of at most 4 KiB, found a file that \(error.reason)")
            }
            let password = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !password.isEmpty else { throw DaemonError.io("store.password_file \(file.path): expected a password on its first line, found an empty line") }
            keywords.append("password")
            values.append(password)
        }
        let settings: [(String, String)] = [
            ("application_name", applicationName), ("connect_timeout", "5"),
            ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3"),
            ("tcp_user_timeout", "10000"),
            // client_min_messages: the server's NOTICEs (CREATE … IF NOT EXISTS) are not for users.
            ("options", "-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=30000 -c client_min_messages=warning"),
        ]
        for (k, v) in settings {
            keywords.append(k)
            values.append(v)
        }
        self.keywords = keywords
        self.values = values
        try migrate()
    }

    deinit {
        for connection in idle { PQfinish(connection) }
    }

    // MARK: Connections

    private func connect() throws -> OpaquePointer {
        let connection: OpaquePointer? = withCStrings(keywords) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let connection else { throw StoreError.unavailable("cannot reach the job store \(location): out of memory") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.errorText(connection)
            PQfinish(connection)
            throw StoreError.unavailable("cannot reach the job store \(location): \(message)")
        }
        return connection
    }

    /// An idle connection if there is one (`reused`), else a new one.
    private func take() throws -> (connection: OpaquePointer, reused: Bool) {
        lock.lock()
        let connection = idle.popLast()
        lock.unlock()
        if let connection { return (connection, true) }
        return (try connect(), false)
    }

    /// A connection that failed, or that is left inside a transaction, is closed instead; after a
    /// lost connection the idle ones are closed too (a server restart or a cut network has ended
    /// them all, and each would otherwise cost a failed transaction to find out).
    private func giveBack(_ connection: OpaquePointer) {
        guard PQstatus(connection) == CONNECTION_OK, PQtransactionStatus(connection) == PQTRANS_IDLE else {
            PQfinish(connection)
            lock.lock()
            let stale = idle
            idle = []
            lock.unlock()
            stale.forEach { PQfinish($0) }
            return
        }
        lock.lock()
        if idle.count < Self.keptIdle {
            idle.append(connection)
            lock.unlock()
        } else {
            lock.unlock()
            PQfinish(connection)
        }
    }

    static func errorText(_ connection: OpaquePointer) -> String {
        String(cString: PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    // MARK: Transactions

    /// SQLSTATEs after which the whole transaction is run again: serialization_failure and
    /// deadlock_detected (the server rolled it back; nothing of it is committed).
    private static let retryable: Set<String> = ["40001", "40P01"]

    func write<T>(_ body: (any StoreConnection) throws -> T) throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try transaction(begin: "BEGIN", body)
            } catch let error as StoreError {
                if case let .server(_, sqlstate) = error, Self.retryable.contains(sqlstate), attempt < 8 { continue }
                throw error
            }
        }
    }

    func read<T>(_ body: (any StoreConnection) throws -> T) throws -> T {
        // One snapshot for the whole read, as SQLite's WAL gives its readers.
        try transaction(begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    private func transaction<T>(begin: String, _ body: (any StoreConnection) throws -> T) throws -> T {
        var (connection, reused) = try take()
        do { try Connection(connection: connection, location: location).execute(begin) } catch StoreError.unavailable where reused {
            // An idle connection the server ended meanwhile; nothing ran on it. Once more, anew.
            giveBack(connection)
            (connection, reused) = (try connect(), false)
            do { try Connection(connection: connection, location: location).execute(begin) } catch {
                giveBack(connection)
                throw error
            }
        } catch {
            giveBack(connection)
            throw error
        }
        defer { giveBack(connection) }
        let c = Connection(connection: connection, location: location)
        do {
            let result = try body(c)
            try c.execute("COMMIT")
            return result
        } catch {
            if PQstatus(connection) == CONNECTION_OK { _ = try? c.execute("ROLLBACK") }
            throw error
        }
    }

    func verifyIntact() throws {}

    // MARK: Schema

    /// Applies the migrations this build knows and the database lacks, under an advisory lock, so
    /// that daemons starting together apply each one once; refuses a database with migrations this
    /// build does not know (written by a newer layerskip).
    private func migrate() throws {
        try write { db in
            try db.execute("SELECT pg_advisory_xact_lock(4242001)")
            try db.execute("CREATE TABLE IF NOT EXISTS layerskip_migrations (identifier TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            let applied = Set(try db.values(String.self, "SELECT identifier FROM layerskip_migrations"))
            let unknown = applied.subtracting(Migrations.all.map(\.identifier))
            if !unknown.isEmpty { throw DaemonError.databaseTooNew(path: location, unknown: unknown.sorted()) }
            for migration in Migrations.all where !applied.contains(migration.identifier) {
                // Several statements: the simple-query protocol (no parameters) runs them all.
                try (db as! Connection).script(migration.postgresql)
                try db.execute("INSERT INTO layerskip_migrations (identifier, applied_at) VALUES (?, \(dialect.now))", [migration.identifier])
            }
        }
    }

    // MARK: Statements

    struct Connection: StoreConnection {
        let connection: OpaquePointer
        let location: String

        func execute(_ sql: String, _ arguments: SQLArguments) throws -> Int {
            let result = try run(sql, arguments)
            defer { PQclear(result) }
            return Int(String(cString: PQcmdTuples(result))) ?? 0
        }

        func rows(_ sql: String, _ arguments: SQLArguments) throws -> [Row] {
            let result = try run(sql, arguments)
            defer { PQclear(result) }
            let columns = (0..<PQnfields(result)).map { (name: String(cString: PQfname(result, $0)), type: PQftype(result, $0)) }
            return (0..<PQntuples(result)).map { r in
                var values: [String: (any DatabaseValueConvertible)?] = [:]
                for (c, column) in columns.enumerated() {
                    let c = Int32(c)
                    values[column.name] = PQgetisnull(result, r, c) != 0 ? nil
                        : Self.value(String(cString: PQgetvalue(result, r, c)), type: column.type)
                }
                return Row(values)
            }
        }

        func script(_ sql: String) throws {
            guard let result = PQexec(connection, sql) else { throw failure(nil) }
            defer { PQclear(result) }
            guard PQresultStatus(result) == PGRES_COMMAND_OK || PQresultStatus(result) == PGRES_TUPLES_OK else { throw failure(result) }
        }

        private func run(_ sql: String, _ arguments: SQLArguments) throws -> OpaquePointer {
            let texts = try arguments.values.map(Self.text)
            let result: OpaquePointer? = withOptionalCStrings(texts) { params in
                PQexecParams(connection, Self.numberedPlaceholders(sql), Int32(texts.count), nil, params, nil, nil, 0)
            }
            guard let result else { throw failure(nil) }
            let status = PQresultStatus(result)
            guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
                defer { PQclear(result) }
                throw failure(result)
            }
            return result
        }

        private func failure(_ result: OpaquePointer?) -> StoreError {
            if PQstatus(connection) != CONNECTION_OK {
                return .unavailable("lost the connection to the job store \(location): \(PostgresDatabase.errorText(connection))")
            }
            let sqlstate = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) } ?? ""
            let message = result.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0) } ?? PostgresDatabase.errorText(connection)
            return .server(message.trimmingCharacters(in: .whitespacesAndNewlines), sqlstate: sqlstate)
        }

        /// The store's SQL marks parameters with `?` (SQLite's way); PostgreSQL numbers them.
        /// A `?` inside a quoted literal or identifier is left alone.
        static func numberedPlaceholders(_ sql: String) -> String {
            var out = ""
            var n = 0
            var quote: Character?
            for ch in sql {
                if let q = quote {
                    if ch == q { quote = nil }
                    out.append(ch)
                } else if ch == "'" || ch == "\"" {
                    quote = ch
                    out.append(ch)
                } else if ch == "?" {
                    n += 1
                    out += "$\(n)"
                } else {
                    out.append(ch)
                }
            }
            return out
        }

        /// A parameter in libpq's text format (the server infers its type from where it stands).
        static func text(_ value: DatabaseValue) throws -> String? {
            switch value.storage {
            case .null: return nil
            case let .int64(i): return String(i)
            case let .double(d):
                guard d.isFinite else { return d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity") }
                return "\(d)"
            // PostgreSQL's TEXT cannot hold U+0000. Prompt and output text go in BYTEA columns
            // (`storedText`) and keep it; in a label (a job name, a prompt id, an error)
            // it is shown as U+FFFD.
            case let .string(s): return s.contains("\u{0}") ? s.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : s
            // bytea's hex input format.
            case let .blob(data):
                let digits = Array("0123456789abcdef".utf8)
                var hex: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
                hex.reserveCapacity(2 + 2 * data.count)
                for b in data { hex += [digits[Int(b >> 4)], digits[Int(b & 15)]] }
                return String(decoding: hex, as: UTF8.self)
            }
        }

        /// A result value as the SQLite store would have returned it: integers and booleans as
        /// Int64, floating types as Double, everything else as text. OIDs from pg_type.
        static func value(_ text: String, type: Oid) -> any DatabaseValueConvertible {
            switch type {
            case 20, 21, 23, 26: return Int64(text) ?? 0  // int8, int2, int4, oid
            case 16: return Int64(text == "t" ? 1 : 0)  // bool
            case 700, 701, 1700: return Double(text) ?? .nan  // float4, float8, numeric
            case 17: return String(decoding: hexBytes(text), as: UTF8.self)  // bytea: prompt and output text
            default: return text
            }
        }
    }
}

/// bytea's hex output format (`\x` then two hex digits a byte) as bytes.
private func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.utf8.dropFirst(2))
    func nibble(_ c: UInt8) -> UInt8 {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return c &- UInt8(ascii: "A") &+ 10
        }
    }
    return stride(from: 0, to: digits.count - 1, by: 2).map { nibble(digits[$0]) << 4 | nibble(digits[$0 + 1]) }
}

/// Passes `strings` to C as a NULL-free array of C strings for the call's duration.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafePointer<CChar>?] = strings.map { UnsafePointer(strdup($0)) }
    pointers.append(nil)
    defer { pointers.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// As `withCStrings`, with nil for SQL NULL.
private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let pointers: [UnsafePointer<CChar>?] = strings.map { $0.map { UnsafePointer(strdup($0)) } ?? nil }
    defer { pointers.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
