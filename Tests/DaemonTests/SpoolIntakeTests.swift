import Daemon
import Decoding
import Foundation
import XCTest
import Logging

/// The intake's crash windows, made deterministic: a job recorded but its file not yet moved, and
/// a file moved but its job still marked pending.
/// `SharedSpoolIntakeTests` runs them again on PostgreSQL with a spool shared by several daemons.
class SpoolIntakeTests: XCTestCase {
    var dir: URL!
    var store: JobStore!
    var layout: SpoolLayout!
    var intake: SpoolIntake!
    var config: DaemonConfig!
    /// The worker name on a shared spool (nil: the spool is this daemon's alone).
    var sharedAs: String? { nil }

    func openStore() throws -> JobStore { try JobStore(url: dir.appendingPathComponent("jobs.sqlite")) }

    override func setUpWithError() throws {
        dir = try Paths.temporaryDirectory()
        store = try openStore()
        layout = SpoolLayout(root: dir.appendingPathComponent("spool"))
        try layout.create()
        config = DaemonConfig(stateDirectory: dir)
        config.models = ["tiny": Paths.tinyModel]
        config.workerName = sharedAs
        intake = SpoolIntake(folders: try SpoolFolders(layout: layout, lock: false, sharedAs: sharedAs), store: store, config: config,
                             registry: testRegistry, log: Logger.daemon(level: .error))
    }

    func submission(_ name: String, _ yaml: String) -> Submission {
        let context = JobContext(baseDirectory: layout.incoming, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        return Submission(source: name, contentHash: JobFileValidator.contentHash(Data(yaml.utf8)),
                          outcome: JobFileValidator.validate(Data(yaml.utf8), file: name, context: context), intakeWorker: sharedAs)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testInterruptedIntakeIsFinishedWithoutASecondJob() throws {
        let yaml = jobYAML()
        try yaml.write(to: layout.incoming.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        // The daemon recorded the job, then died before moving the file.
        let id = try store.insert(submission("a.yaml", yaml), defaultMaxAttempts: 3, intakePending: true, storedAs: "a.yaml")
        XCTAssertEqual(intake.scan(), 1)
        XCTAssertEqual(try store.jobs().map(\.id), [id])
        XCTAssertEqual(try store.job(id)?.storedAs, "a.yaml")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: layout.incoming.path), [])
        XCTAssertTrue(FileManager.default.fileExists(atPath: layout.accepted.appendingPathComponent("a.yaml").path))
        XCTAssertEqual(intake.scan(), 0)
    }

    func testMovedFileWithPendingMarkIsRecovered() throws {
        let yaml = jobYAML()
        try yaml.write(to: layout.accepted.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        let id = try store.insert(submission("b.yaml", yaml), defaultMaxAttempts: 3, intakePending: true, storedAs: "b.yaml")
        try intake.recover()
        // Recovered: dropping the same file again is now a duplicate, not the completion of an intake.
        try yaml.write(to: layout.incoming.appendingPathComponent("b.yaml"), atomically: true, encoding: .utf8)
        XCTAssertEqual(intake.scan(), 1)
        let jobs = try store.jobs()
        XCTAssertEqual(jobs.count, 2)
        XCTAssertEqual(jobs.first?.state, .rejected)
        XCTAssertEqual(try store.job(id)?.state, .queued)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: layout.accepted.path), ["b.yaml"])
    }

    func testNamesAreNeverOverwritten() throws {
        for round in 0..<3 {
            try jobYAML(tokens: 4 + round).write(to: layout.incoming.appendingPathComponent("same.yaml"), atomically: true, encoding: .utf8)
            XCTAssertEqual(intake.scan(), 1)
            try "nope".write(to: layout.incoming.appendingPathComponent("bad.yaml"), atomically: true, encoding: .utf8)
            try "nope \(round)".write(to: layout.incoming.appendingPathComponent("bad.yaml"), atomically: true, encoding: .utf8)
            XCTAssertEqual(intake.scan(), 1)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: layout.accepted.path).sorted(),
                       ["same.yaml", "same.yaml.1", "same.yaml.2"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: layout.rejected.path).sorted(),
                       ["bad.yaml", "bad.yaml.1", "bad.yaml.1.error", "bad.yaml.2", "bad.yaml.2.error", "bad.yaml.error"])
        XCTAssertEqual(try String(contentsOf: layout.rejected.appendingPathComponent("bad.yaml.2"), encoding: .utf8), "nope 2")
    }
}

/// The intake tests on PostgreSQL, with the spool shared: every file is claimed into
/// claimed/WORKER/ first, and a file claimed before a crash is taken in on recovery.
final class SharedSpoolIntakeTests: SpoolIntakeTests {
    var url: String!
    override var sharedAs: String? { "host-a" }

    override func openStore() throws -> JobStore {
        if url == nil { url = try TestPostgres.freshDatabase(name) }
        return try JobStore(postgresql: PostgresLocation(url: url))
    }

    var claimed: URL { layout.root.appendingPathComponent("claimed/\(try! FileManager.default.contentsOfDirectory(atPath: layout.root.appendingPathComponent("claimed").path)[0])") }

    /// Files this daemon claimed and then crashed on become one job each at the next start;
    /// another daemon's claimed files are not this one's to take.
    func testClaimedFilesAreTakenInOnRecovery() throws {
        try jobYAML().write(to: claimed.appendingPathComponent("c.yaml"), atomically: true, encoding: .utf8)
        let yaml = jobYAML(tokens: 5)
        try yaml.write(to: claimed.appendingPathComponent("d.yaml"), atomically: true, encoding: .utf8)
        let other = layout.root.appendingPathComponent("claimed/host-b-0000")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        try jobYAML().write(to: other.appendingPathComponent("e.yaml"), atomically: true, encoding: .utf8)
        try intake.recover()
        XCTAssertEqual(try store.jobs().map(\.source).sorted(), ["c.yaml", "d.yaml"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: claimed.path), [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: layout.accepted.path).sorted(), ["c.yaml", "d.yaml"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: other.path), ["e.yaml"])
        XCTAssertEqual(intake.scan(), 0)
    }

    // XCTest on Linux runs only the test methods a class declares itself, not inherited ones.
    override func testInterruptedIntakeIsFinishedWithoutASecondJob() throws { try super.testInterruptedIntakeIsFinishedWithoutASecondJob() }
    override func testMovedFileWithPendingMarkIsRecovered() throws { try super.testMovedFileWithPendingMarkIsRecovered() }
    override func testNamesAreNeverOverwritten() throws { try super.testNamesAreNeverOverwritten() }
}
