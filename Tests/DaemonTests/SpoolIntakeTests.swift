import Daemon
import Decoding
import Foundation
import XCTest
import Logging

/// The intake's crash windows, made deterministic: a job recorded but its file not yet moved, and
/// a file moved but its job still marked pending.
final class SpoolIntakeTests: XCTestCase {
    var dir: URL!
    var store: JobStore!
    var layout: SpoolLayout!
    var intake: SpoolIntake!

    override func setUpWithError() throws {
        dir = try Paths.temporaryDirectory()
        store = try JobStore(url: dir.appendingPathComponent("jobs.sqlite"))
        layout = SpoolLayout(root: dir.appendingPathComponent("spool"))
        try layout.create()
        var config = DaemonConfig(stateDirectory: dir)
        config.models = ["tiny": Paths.tinyModel]
        intake = SpoolIntake(folders: try SpoolFolders(layout: layout, lock: false), store: store, config: config, registry: testRegistry, log: Logger.daemon(level: .error))
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testInterruptedIntakeIsFinishedWithoutASecondJob() throws {
        let yaml = jobYAML()
        try yaml.write(to: layout.incoming.appendingPathComponent("a.yaml"), atomically: true, encoding: .utf8)
        // The daemon recorded the job, then died before moving the file.
        let context = JobContext(baseDirectory: layout.incoming, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        let submission = Submission(source: "a.yaml", contentHash: JobFileValidator.contentHash(Data(yaml.utf8)),
                                    outcome: JobFileValidator.validate(Data(yaml.utf8), file: "a.yaml", context: context))
        let id = try store.insert(submission, defaultMaxAttempts: 3, intakePending: true, storedAs: "a.yaml")
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
        let context = JobContext(baseDirectory: layout.incoming, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        let submission = Submission(source: "b.yaml", contentHash: JobFileValidator.contentHash(Data(yaml.utf8)),
                                    outcome: JobFileValidator.validate(Data(yaml.utf8), file: "b.yaml", context: context))
        let id = try store.insert(submission, defaultMaxAttempts: 3, intakePending: true, storedAs: "b.yaml")
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
