#if canImport(Glibc)
import Glibc
#endif
import Daemon
import Foundation
import XCTest

/// The throwaway PostgreSQL cluster `scripts/test.sh` starts (scripts/pg-test-cluster.sh) and
/// names in $LAYERSKIP_TEST_POSTGRES (an admin URL). Each test gets a database of its own.
/// Without the variable the PostgreSQL tests are skipped, unless $LAYERSKIP_REQUIRE_POSTGRES is 1
/// (test.sh sets it, so CI cannot pass them by skipping): then they fail.
enum TestPostgres {
    static var adminURL: String? {
        ProcessInfo.processInfo.environment["LAYERSKIP_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The cluster's folder (for restarts), from $LAYERSKIP_TEST_POSTGRES_DIR.
    static var clusterDirectory: String? {
        ProcessInfo.processInfo.environment["LAYERSKIP_TEST_POSTGRES_DIR"].flatMap { $0.isEmpty ? nil : $0 }
    }

    static func requireAdminURL() throws -> String {
        if let adminURL { return adminURL }
        if ProcessInfo.processInfo.environment["LAYERSKIP_REQUIRE_POSTGRES"] == "1" {
            XCTFail("LAYERSKIP_REQUIRE_POSTGRES=1 but LAYERSKIP_TEST_POSTGRES is not set: scripts/test.sh starts the cluster")
        }
        throw XCTSkip("no PostgreSQL for the tests (run scripts/test.sh, or set LAYERSKIP_TEST_POSTGRES to an admin URL)")
    }

    /// A new empty database on the cluster; its URL.
    static func freshDatabase(_ name: String = #function) throws -> String {
        let admin = try requireAdminURL()
        let database = "t_" + name.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(30) + "_" + UUID().uuidString.prefix(8).lowercased()
        _ = try psql(admin, "CREATE DATABASE \(database)")
        guard let slash = admin.lastIndex(of: "/") else { throw XCTSkip("unexpected admin URL \(admin)") }
        return String(admin[..<slash]) + "/" + database
    }

    /// Runs SQL through psql (tab-separated, unaligned rows); throws with psql's stderr on failure.
    @discardableResult
    static func psql(_ url: String, _ sql: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["psql", url, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "psql", code: Int(p.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "psql: \(String(decoding: errors, as: UTF8.self))"])
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Stops and starts the server (same port): every open connection is cut.
    /// - Parameter listen: the server's listen_addresses after the restart (default: loopback only).
    static func restartServer(listen: String? = nil) throws {
        guard let dir = clusterDirectory else { throw XCTSkip("LAYERSKIP_TEST_POSTGRES_DIR is not set: cannot restart the test cluster") }
        let script = Paths.repository.appendingPathComponent("scripts/pg-test-cluster.sh").path
        if let listen { setenv("PGTEST_LISTEN", listen, 1) } else { unsetenv("PGTEST_LISTEN") }
        defer { unsetenv("PGTEST_LISTEN") }
        XCTAssertEqual(try spawnAndWait("/bin/bash", [script, "restart", dir]), 0, "pg-test-cluster.sh restart failed")
    }

    /// Lets hosts on `network` (CIDR) connect: a pg_hba.conf line, read at the next restart.
    static func allow(_ network: String) throws {
        guard let dir = clusterDirectory else { throw XCTSkip("LAYERSKIP_TEST_POSTGRES_DIR is not set") }
        let hba = URL(fileURLWithPath: dir).appendingPathComponent("data/pg_hba.conf")
        let current = try String(contentsOf: hba, encoding: .utf8)
        let line = "host all all \(network) trust"
        if !current.contains(line) { try (current + "\n" + line + "\n").write(to: hba, atomically: false, encoding: .utf8) }
    }

    static var port: String? {
        clusterDirectory.flatMap { try? String(contentsOfFile: $0 + "/port", encoding: .utf8) }?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs a program to its end with posix_spawn and waitpid. (Foundation's Process can miss the
    /// exit of a child whose grandchild — here the restarted server — lives on, and wait forever.)
    static func spawnAndWait(_ path: String, _ arguments: [String]) throws -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let status = posix_spawn(&pid, path, nil, nil, argv, environ)
        guard status == 0 else { throw NSError(domain: "posix_spawn", code: Int(status)) }
        var result: Int32 = 0
        while waitpid(pid, &result, 0) < 0 && errno == EINTR {}
        return (result & 0x7f) == 0 ? (result >> 8) & 0xff : -(result & 0x7f)
    }
}
