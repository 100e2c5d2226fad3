import Daemon
import Decoding
import Foundation
import GRDB
import XCTest
import Logging

final class JobStoreTests: XCTestCase {
    var dir: URL!
    var store: JobStore!

    override func setUpWithError() throws {
        dir = try Paths.temporaryDirectory()
        store = try JobStore(url: dir.appendingPathComponent("jobs.sqlite"))
    }

    override func tearDown() {
        store = nil
        try? FileManager.default.removeItem(at: dir)
    }

    func submit(_ yaml: String, source: String = UUID().uuidString) throws -> Int64 {
        let context = JobContext(baseDirectory: dir, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        let outcome = JobFileValidator.validate(Data(yaml.utf8), file: source, context: context)
        return try store.insert(Submission(source: source, contentHash: JobFileValidator.contentHash(Data(yaml.utf8)), outcome: outcome),
                                defaultMaxAttempts: 3, intakePending: false, storedAs: nil)
    }

    func metrics() -> GenerationMetrics {
        GenerationMetrics(strategy: "autoregressive", promptTokens: 1, generatedTokens: 1, finishReason: .length,
                          prefillSeconds: 0.001, decodeSeconds: 0.001, layerEvaluations: 4)
    }

    func testMigrationsAreNamedAndANewerDatabaseIsRefused() throws {
        let url = dir.appendingPathComponent("jobs.sqlite")
        let names = try DatabaseQueue(path: url.path).read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        XCTAssertEqual(names, ["2026-11-29-jobs", "2026-12-01-not-before"])
        XCTAssertEqual(try DatabaseQueue(path: url.path).read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }, "wal")
        store = nil
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('2099-01-01-from-the-future')")
        }
        XCTAssertThrowsError(try JobStore(url: url)) { error in
            XCTAssertTrue("\(error)".contains("newer layerskip"), "\(error)")
            XCTAssertTrue("\(error)".contains("2099-01-01-from-the-future"), "\(error)")
        }
    }

    /// A row the daemon cannot read (a state outside the schema's list, written past the CHECK
    /// constraint; unreadable metrics) is an error naming the job and the column, not a default.
    func testCorruptRowsAreErrorsNotDefaults() throws {
        let id = try submit(jobYAML())
        let url = dir.appendingPathComponent("jobs.sqlite")
        try DatabaseQueue(path: url.path).writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA ignore_check_constraints = ON")
            try db.execute(sql: "UPDATE jobs SET state = 'exploded' WHERE id = ?", arguments: [id])
        }
        for read in [{ _ = try self.store.job(id) }, { _ = try self.store.jobs() }, { _ = try self.store.cancel(id) }] {
            XCTAssertThrowsError(try read()) { error in
                XCTAssertTrue("\(error)".contains("job \(id) has state \"exploded\" in jobs.state"), "\(error)")
            }
        }
        try DatabaseQueue(path: url.path).write { db in
            try db.execute(sql: "UPDATE jobs SET state = 'running' WHERE id = ?", arguments: [id])
            try db.execute(sql: "INSERT INTO outputs VALUES (?, 1, 0, 'x', '[1]', '{not json', 1, 0)", arguments: [id])
        }
        XCTAssertThrowsError(try store.stats()) { XCTAssertTrue("\($0)".contains("unreadable outputs.metrics"), "\($0)") }
        XCTAssertThrowsError(try store.outputs(id)) { XCTAssertTrue("\($0)".contains("prompt 0 has unreadable outputs.metrics"), "\($0)") }
    }

    func testClaimOrderIsPriorityThenAge() throws {
        let low = try submit(jobYAML(priority: 0))
        let high = try submit(jobYAML(priority: 5))
        let low2 = try submit(jobYAML(priority: 0))
        let rejected = try submit("model: tiny\n")
        XCTAssertEqual(try store.job(rejected)?.state, .rejected)
        var order: [Int64] = []
        while let job = try store.claimNext() {
            order.append(job.id)
            try store.finish(job, as: .succeeded)
        }
        XCTAssertEqual(order, [high, low, low2])
    }

    /// A worker whose lease is gone can neither commit an output nor finish the job.
    func testStaleLeaseCannotCommitOrFinish() throws {
        let id = try submit(jobYAML(prompts: 2))
        let first = try XCTUnwrap(try store.claimNext())
        try store.commitOutput(first, index: 0, text: "a", tokens: [1], metrics: metrics())
        // The daemon "crashes": recovery puts the job back; a new worker claims it.
        XCTAssertEqual(try store.recoverInterrupted(), 1)
        let second = try XCTUnwrap(try store.claimNext())
        XCTAssertEqual(second.finished, [0], "the finished prompt is not redone")
        XCTAssertEqual(second.attempt, 2)
        XCTAssertThrowsError(try store.commitOutput(first, index: 1, text: "stale", tokens: [2], metrics: metrics()))
        XCTAssertThrowsError(try store.finish(first, as: .succeeded))
        XCTAssertThrowsError(try store.commitOutput(second, index: 0, text: "again", tokens: [3], metrics: metrics()),
                             "a prompt's output is committed once")
        try store.commitOutput(second, index: 1, text: "b", tokens: [2], metrics: metrics())
        try store.finish(second, as: .succeeded)
        XCTAssertThrowsError(try store.finish(second, as: .failed), "a final job cannot be finished twice")
        XCTAssertEqual(try store.outputs(id).map(\.text), ["a", "b"])
        XCTAssertEqual(try store.outputs(id).map(\.attempt), [1, 2])
    }

    func testJobThatKeepsCrashingEndsFailed() throws {
        let id = try submit(jobYAML(extra: "max_attempts: 2"))
        for _ in 0..<2 {
            XCTAssertNotNil(try store.claimNext())
            try store.recoverInterrupted()
        }
        XCTAssertNil(try store.claimNext())
        let job = try XCTUnwrap(try store.job(id))
        XCTAssertEqual(job.state, .failed)
        XCTAssertTrue(job.error?.contains("attempt") ?? false, job.error ?? "")
    }

    func testCancelRequestedBeforeACrashEndsCancelled() throws {
        let id = try submit(jobYAML())
        XCTAssertNotNil(try store.claimNext())
        XCTAssertEqual(try store.cancel(id), .requested)
        try store.recoverInterrupted()
        XCTAssertEqual(try store.job(id)?.state, .cancelled)
        XCTAssertNil(try store.claimNext())
    }

    func testCleanStopDoesNotCountAnAttempt() throws {
        let id = try submit(jobYAML(extra: "max_attempts: 1"))
        for _ in 0..<3 {
            let job = try XCTUnwrap(try store.claimNext())
            try store.requeue(job, note: "stop")
        }
        XCTAssertEqual(try store.job(id)?.attempts, 0)
        XCTAssertEqual(try store.job(id)?.state, .queued)
    }

    func testCancelAndRetryKeepHistory() throws {
        let queued = try submit(jobYAML())
        XCTAssertEqual(try store.cancel(queued), .cancelled)
        XCTAssertEqual(try store.cancel(queued), .alreadyFinal(.cancelled))
        let running = try submit(jobYAML(prompts: 2))
        let job = try XCTUnwrap(try store.claimNext())
        XCTAssertEqual(job.id, running)
        try store.commitOutput(job, index: 0, text: "first run", tokens: [1], metrics: metrics())
        XCTAssertEqual(try store.cancel(running), .requested)
        XCTAssertTrue(try store.isCancelRequested(running))
        try store.finish(job, as: .cancelled)

        try store.retry(running)
        let rerun = try XCTUnwrap(try store.claimNext())
        XCTAssertEqual(rerun.run, 2)
        XCTAssertEqual(rerun.finished, [], "a retry is a new run")
        XCTAssertEqual(try store.job(running)?.cancelRequested, false)
        XCTAssertEqual(try store.events(running).map(\.to), ["queued", "running", "cancelled", "queued", "running"])
        XCTAssertThrowsError(try store.retry(running), "a running job cannot be retried")
        let rejected = try submit("prompts: 1")
        XCTAssertThrowsError(try store.retry(rejected))
        XCTAssertThrowsError(try store.cancel(999)) { XCTAssertTrue("\($0)".contains("no job 999")) }
    }

    /// The runner commits each prompt as it finishes and resumes a job without redoing them.
    func testRunnerResumesWithoutRedoingFinishedPrompts() throws {
        let id = try submit(jobYAML(prompts: 3, tokens: 4))
        let log = Logger.daemon(level: .error)
        let runner = JobRunner(store: store, models: ModelManager(budget: 1 << 30, log: log), caches: CacheManager(budget: 1 << 30),
                               registry: testRegistry, log: log)
        // First attempt: finish prompt 0 by hand, then "crash".
        let first = try XCTUnwrap(try store.claimNext())
        try store.commitOutput(first, index: 0, text: "kept", tokens: [7], metrics: metrics())
        try store.recoverInterrupted()
        XCTAssertEqual(try runner.runNext(), .finished(id, .succeeded))
        let outputs = try store.outputs(id)
        XCTAssertEqual(outputs.map(\.text?.isEmpty), [false, false, false])
        XCTAssertEqual(outputs[0].text, "kept")
        XCTAssertEqual(outputs.map(\.attempt), [1, 2, 2])
        XCTAssertEqual(outputs[1].metrics?["generated_tokens"]?.number, 4)
        XCTAssertEqual(try store.outputCommitCounts().max(), 1)
    }

    func testCacheBudgetTooSmallFailsClearly() throws {
        let id = try submit(jobYAML(tokens: 8))
        let log = Logger.daemon(level: .error)
        let runner = JobRunner(store: store, models: ModelManager(budget: 1 << 30, log: log), caches: CacheManager(budget: 1000),
                               registry: testRegistry, log: log)
        XCTAssertEqual(try runner.runNext(), .finished(id, .failed))
        let error = try XCTUnwrap(try store.job(id)?.error)
        XCTAssertTrue(error.contains("cache_memory_budget"), error)
    }

    func testPromptLongerThanTheModelFailsTheJobClearly() throws {
        let id = try submit("model: tiny\nmax_new_tokens: 8\nprompts: [\"\(String(repeating: "lorem ipsum ", count: 400))\"]\n")
        let log = Logger.daemon(level: .error)
        let runner = JobRunner(store: store, models: ModelManager(budget: 1 << 30, log: log), caches: CacheManager(budget: 1 << 30),
                               registry: testRegistry, log: log)
        XCTAssertEqual(try runner.runNext(), .finished(id, .failed))
        let error = try XCTUnwrap(try store.job(id)?.error)
        XCTAssertTrue(error.contains("positions") && error.contains("prompt 1"), error)
    }

    /// A folder configured with `weights: int8` loads as an int8 model, budgeted by its int8 bytes.
    func testModelManagerLoadsTheConfiguredFormat() throws {
        let models = ModelManager(budget: 1 << 30, log: Logger.daemon(level: .error),
                                  formats: [DaemonConfig.modelKey(Paths.tinyModel): .int8])
        let loaded = try models.acquire(Paths.tinyModel)
        XCTAssertEqual(loaded.model.format, .int8)
        XCTAssertEqual(loaded.byteCount, loaded.model.weightBytes)
        XCTAssertLessThan(loaded.byteCount, loaded.model.weights.byteCount)
        models.release(loaded)
        XCTAssertEqual(models.loadedDirectories.count, 1)
    }

    func testModelManagerLoadsOnceAndUnloadsBeyondBudget() throws {
        let models = ModelManager(budget: 1, log: Logger.daemon(level: .error))
        let a = try models.acquire(Paths.tinyModel)
        let b = try models.acquire(Paths.tinyModel)
        XCTAssertTrue(a === b)
        XCTAssertEqual(models.loads, 1)
        models.release(a)
        XCTAssertEqual(models.loadedDirectories.count, 1, "still in use")
        models.release(b)
        XCTAssertEqual(models.loadedDirectories, [], "over budget and idle: unloaded")
    }
}
