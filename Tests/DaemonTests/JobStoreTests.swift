import Daemon
import Decoding
import Foundation
import GRDB
import XCTest
import Logging

/// The store's state machine, on SQLite; `PostgresJobStoreTests` runs every test of this class
/// again on PostgreSQL (the subclass overrides the few hooks that reach the database directly).
class JobStoreTests: XCTestCase {
    var dir: URL!
    var store: JobStore!

    override func setUpWithError() throws {
        dir = try Paths.temporaryDirectory()
        store = try openStore()
    }

    // MARK: The database under the store (overridden for PostgreSQL)

    func openStore() throws -> JobStore { try JobStore(url: dir.appendingPathComponent("jobs.sqlite")) }

    /// Runs SQL on the database directly, past the store.
    func raw(_ sql: String) throws {
        try DatabaseQueue(path: dir.appendingPathComponent("jobs.sqlite").path).writeWithoutTransaction { try $0.execute(sql: sql) }
    }

    func appliedMigrations() throws -> [String] {
        try DatabaseQueue(path: dir.appendingPathComponent("jobs.sqlite").path).read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        }
    }

    func recordMigration(_ identifier: String) throws { try raw("INSERT INTO grdb_migrations (identifier) VALUES ('\(identifier)')") }

    func forgetMigration(_ identifier: String) throws { try raw("DELETE FROM grdb_migrations WHERE identifier = '\(identifier)'") }

    /// Sets a job's state to a value outside the schema's CHECK list.
    func forceState(_ id: Int64, _ state: String) throws {
        try raw("PRAGMA ignore_check_constraints = ON; UPDATE jobs SET state = '\(state)' WHERE id = \(id)")
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
        XCTAssertEqual(try appliedMigrations().sorted(), ["2026-11-29-jobs", "2026-12-01-not-before", "2026-12-02-leases-and-workers",
                                                          "2026-12-06-openai-batch-custom-ids", "2026-12-07-tunings",
                                                          "2026-12-08-tuning-token-ranking"])
        store = nil
        XCTAssertNoThrow(store = try openStore(), "reopening an up-to-date database")
        store = nil
        try recordMigration("2099-01-01-from-the-future")
        XCTAssertThrowsError(try openStore()) { error in
            XCTAssertTrue("\(error)".contains("newer layerskip"), "\(error)")
            XCTAssertTrue("\(error)".contains("2099-01-01-from-the-future"), "\(error)")
        }
    }

    /// The custom-id migration on a database the previous release left with jobs in it: it is
    /// applied when the store opens, the old prompts read as before with no custom id, and a batch
    /// job stored afterwards keeps its custom ids exactly (U+0000 included).
    func testCustomIdMigrationRunsOnAnExistingDatabase() throws {
        let migration = "2026-12-06-openai-batch-custom-ids"
        let old = try submit(jobYAML(prompts: 2))
        store = nil
        try raw("ALTER TABLE prompts DROP COLUMN custom_id")
        try forgetMigration(migration)
        XCTAssertFalse(try appliedMigrations().contains(migration))
        store = try openStore()
        XCTAssertTrue(try appliedMigrations().contains(migration))
        let before = try store.outputs(old)
        XCTAssertEqual(before.map(\.promptId), ["p0", "p1"])
        XCTAssertEqual(before.map(\.prompt), ["Hello 0", "Hello 1"])
        XCTAssertEqual(before.map(\.customId), [nil, nil])

        let ids = ["a\u{0}b", "plain", "ünï \"q\" \\"]
        let yaml = jobYAML(prompts: 3)
        let context = JobContext(baseDirectory: dir, models: ["tiny": Paths.tinyModel], registry: testRegistry)
        var job = try JobFileValidator.validate(Data(yaml.utf8), file: "b", context: context).get()
        for i in ids.indices { job.spec.prompts[i].customId = ids[i] }
        let id = try store.insert(Submission(source: "b", contentHash: JobFileValidator.contentHash(Data(yaml.utf8)), outcome: .success(job)),
                                  defaultMaxAttempts: 3, intakePending: false, storedAs: nil)
        XCTAssertEqual(try store.outputs(id).map(\.customId), ids)
        XCTAssertEqual(try store.outputs(id).map(\.promptId), ["p0", "p1", "p2"])
    }

    /// A row the daemon cannot read (a state outside the schema's list, written past the CHECK
    /// constraint; unreadable metrics) is an error naming the job and the column, not a default.
    func testCorruptRowsAreErrorsNotDefaults() throws {
        let id = try submit(jobYAML())
        try forceState(id, "exploded")
        for read in [{ _ = try self.store.job(id) }, { _ = try self.store.jobs() }, { _ = try self.store.cancel(id) }] {
            XCTAssertThrowsError(try read()) { error in
                XCTAssertTrue("\(error)".contains("job \(id) has state \"exploded\" in jobs.state"), "\(error)")
            }
        }
        try raw("UPDATE jobs SET state = 'running' WHERE id = \(id)")
        try raw("INSERT INTO outputs VALUES (\(id), 1, 0, 'x', '[1]', '{not json', 1, 0)")
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

    /// A commit whose reply was lost (the server went away after COMMIT) is tried again with the
    /// same output: that retry succeeds and leaves the row as it was; a different output is
    /// refused. The same for the job's end.
    func testRetriedCommitOfTheSameOutputIsNotADuplicate() throws {
        let id = try submit(jobYAML(prompts: 2))
        let job = try XCTUnwrap(try store.claimNext())
        try store.commitOutput(job, index: 0, text: "a", tokens: [1, 2], metrics: metrics())
        try store.commitOutput(job, index: 0, text: "a", tokens: [1, 2], metrics: metrics())
        XCTAssertThrowsError(try store.commitOutput(job, index: 0, text: "b", tokens: [3], metrics: metrics())) {
            XCTAssertTrue("\($0)".contains("prompt 0") && "\($0)".contains("already committed"), "\($0)")
        }
        try store.commitOutput(job, index: 1, text: "c", tokens: [4], metrics: metrics())
        try store.finish(job, as: .succeeded)
        try store.finish(job, as: .succeeded)
        XCTAssertThrowsError(try store.finish(job, as: .failed), "a finished job is not finished as something else")
        XCTAssertEqual(try store.job(id)?.state, .succeeded)
        XCTAssertEqual(try store.events(id).filter { $0.to == "succeeded" }.count, 1, "the retried finish left no second event")
        XCTAssertEqual(try store.outputs(id).map(\.text), ["a", "c"], "the first commit's row stands")
        XCTAssertEqual(try store.outputs(id).map(\.tokens), [[1, 2], [4]])
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
        XCTAssertEqual(try store.cancelRequested(among: [queued, running]), [running])
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

    /// Prompt and output text come back exactly, U+0000 and all (PostgreSQL's TEXT cannot hold it).
    func testTextWithNULAndAnyUnicodeRoundTrips() throws {
        let text = "nul:\u{0} bell:\u{7} é 漢字 🙂 \\x41 '?' ?"
        let id = try submit("model: tiny\nmax_new_tokens: 4\nprompts: [\"nul:\\0 bell:\\a é 漢字 🙂 \\\\x41 '?' ?\"]\n")
        let job = try XCTUnwrap(try store.claimNext())
        XCTAssertEqual(job.spec.prompts.map(\.text), [text])
        try store.commitOutput(job, index: 0, text: text + "\u{0}", tokens: [0, 1], metrics: metrics())
        let out = try store.outputs(id)
        XCTAssertEqual(out.map(\.prompt), [text])
        XCTAssertEqual(out.map(\.text), [text + "\u{0}"])
    }

    /// A lease not renewed in time expires: the next claim (by any worker) puts the job back and
    /// takes it, and the first worker's late writes and renewals are refused.
    func testExpiredLeaseIsTakenOverAndTheStaleWorkerIsRefused() throws {
        let id = try submit(jobYAML(prompts: 2))
        let a = Worker(name: "host-a:/state", host: "host-a", leaseSeconds: 0.5)
        let b = Worker(name: "host-b:/state", host: "host-b", leaseSeconds: 30)
        let first = try XCTUnwrap(try store.claimNext(worker: a))
        try store.commitOutput(first, index: 0, text: "a0", tokens: [1], metrics: metrics())
        XCTAssertNil(try store.claimNext(worker: b), "a live lease is not taken")
        Thread.sleep(forTimeInterval: 0.8)
        let second = try XCTUnwrap(try store.claimNext(worker: b), "an expired lease is put back and claimed")
        XCTAssertEqual(second.id, id)
        XCTAssertEqual(second.attempt, 2, "the expired attempt counts")
        XCTAssertEqual(second.finished, [0])
        XCTAssertEqual(try store.renewLeases([first], worker: a), [id])
        XCTAssertThrowsError(try store.commitOutput(first, index: 1, text: "late", tokens: [9], metrics: metrics())) {
            XCTAssertTrue("\($0)".contains("no longer held"), "\($0)")
        }
        XCTAssertThrowsError(try store.finish(first, as: .succeeded))
        XCTAssertEqual(try store.renewLeases([second], worker: b), [])
        try store.commitOutput(second, index: 1, text: "b1", tokens: [2], metrics: metrics())
        try store.finish(second, as: .succeeded)
        XCTAssertEqual(try store.outputs(id).map(\.text), ["a0", "b1"])
        XCTAssertEqual(try store.job(id)?.worker, b.name)
        let events = try store.events(id)
        XCTAssertEqual(events.map(\.to), ["queued", "running", "queued", "running", "succeeded"])
        XCTAssertEqual(events.map(\.worker), [nil, a.name, b.name, b.name, b.name])
        XCTAssertTrue(events[2].note?.contains("lease of \(a.name) expired") ?? false, events[2].note ?? "")
    }

    /// Renewals keep a lease alive past its length; a cancel asked for while a lease expires ends
    /// the job cancelled instead of queued.
    func testRenewedLeaseHoldsAndAnExpiredCancelledJobEndsCancelled() throws {
        let id = try submit(jobYAML())
        let a = Worker(name: "a", host: "a", leaseSeconds: 0.6)
        let b = Worker(name: "b", host: "b")
        let job = try XCTUnwrap(try store.claimNext(worker: a))
        for _ in 0..<4 {
            Thread.sleep(forTimeInterval: 0.25)
            XCTAssertEqual(try store.renewLeases([job], worker: a), [])
        }
        XCTAssertEqual(try store.requeueExpired(by: b), [], "a renewed lease has not expired")
        XCTAssertEqual(try store.cancel(id), .requested)
        Thread.sleep(forTimeInterval: 0.8)
        XCTAssertEqual(try store.requeueExpired(by: b), [id])
        XCTAssertEqual(try store.job(id)?.state, .cancelled)
    }

    /// A worker claims only jobs whose model it has (by model key), and runs it from its own folder.
    func testAWorkerClaimsOnlyJobsForItsModels() throws {
        let id = try submit(jobYAML())
        let elsewhere = URL(fileURLWithPath: "/elsewhere/tiny")
        let without = Worker(name: "w1", host: "w1", models: ["other@stored": elsewhere])
        XCTAssertNil(try store.claimNext(worker: without))
        let int8 = Worker(name: "w2", host: "w2", models: ["tiny@int8": elsewhere])
        XCTAssertNil(try store.claimNext(worker: int8), "the same name in another format is another model")
        let with = Worker(name: "w3", host: "w3", models: ["tiny@stored": elsewhere])
        let job = try XCTUnwrap(try store.claimNext(worker: with))
        XCTAssertEqual(job.id, id)
        XCTAssertEqual(job.modelDirectory, elsewhere, "the claiming host's own folder for the model")
    }

    /// Concurrent claims from several threads (several connections on PostgreSQL) never hand one
    /// job to two workers.
    func testConcurrentClaimsAreDistinct() throws {
        let ids = try (0..<12).map { _ in try submit(jobYAML()) }
        let results = Collected()
        let store = self.store!
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            let worker = Worker(name: "w\(i)", host: "w\(i)")
            while true {
                do {
                    guard let job = try store.claimNext(worker: worker) else { return }
                    results.add("\(job.id)")
                    try store.finish(job, as: .succeeded)
                } catch {
                    results.add("error: \(error)")
                    return
                }
            }
        }
        XCTAssertEqual(results.items.sorted { $0.count != $1.count ? $0.count < $1.count : $0 < $1 }, ids.map { "\($0)" })
    }

    func testWorkersAreListedWithTheirHeartbeat() throws {
        let a = Worker(name: "host-a:/var/lib/layerskip", host: "host-a", models: ["tiny@stored": Paths.tinyModel])
        try store.registerWorker(a)
        try store.heartbeat(a, load: WorkerLoad(inFlightJobs: 2, sequences: 7, tokensPerSecond: 41.5))
        var workers = try store.workers()
        XCTAssertEqual(workers.map(\.name), [a.name])
        XCTAssertEqual(workers[0].host, "host-a")
        XCTAssertEqual(workers[0].sequences, 7)
        XCTAssertEqual(workers[0].tokensPerSecond, 41.5)
        XCTAssertEqual(workers[0].models, ["tiny@stored"])
        XCTAssertLessThan(workers[0].heartbeatAge, 5)
        XCTAssertNil(workers[0].stoppedAt)
        try store.workerStopped(a)
        workers = try store.workers()
        XCTAssertNotNil(workers[0].stoppedAt)
        XCTAssertEqual(workers[0].sequences, 0)
    }

    /// A tune result is stored under its model key, replaced by the next one, and read back whole.
    func testTuningsAreStoredReplacedAndRead() throws {
        XCTAssertNil(try store.tuning(modelKey: "abc@stored"))
        let first = TuningRecord(modelKey: "abc@stored", model: "/models/a", weights: "stored", tunedAt: Date(timeIntervalSince1970: 1_800_000_000),
                                 machine: "AMD EPYC, 2 CPUs", settings: ["exit_layer": .int(3), "speculations": .int(2), "drafter": .string("hybrid")],
                                 speedup: 1.25, report: "{\"grid\": []}")
        try store.saveTuning(first)
        XCTAssertEqual(try store.tuning(modelKey: "abc@stored"), first)
        var second = first
        second.settings = ["exit_layer": .int(5), "speculations": .int(4), "drafter": .string("lookup")]
        second.tunedAt = Date(timeIntervalSince1970: 1_800_000_100)
        second.speedup = 0.97
        second.tokenRanking = [5, 0, 17, 3]
        try store.saveTuning(second)
        var other = first
        other.modelKey = "abc@int8"
        other.weights = "int8"
        try store.saveTuning(other)
        XCTAssertEqual(try store.tuning(modelKey: "abc@stored"), second, "the newer result replaces the older")
        XCTAssertEqual(try store.tunings().map(\.modelKey), ["abc@stored", "abc@int8"], "one per model key, newest first")
        try raw("UPDATE tunings SET settings = 'not json' WHERE model_key = 'abc@int8'")
        XCTAssertThrowsError(try store.tuning(modelKey: "abc@int8")) { XCTAssertTrue("\($0)".contains("tunings.settings"), "\($0)") }
        XCTAssertEqual(try store.tuning(modelKey: "abc@stored")?.ranking(vocabularySize: 20)?.tokens, [5, 0, 17, 3])
        XCTAssertThrowsError(try store.tuning(modelKey: "abc@stored")?.ranking(vocabularySize: 10)) {
            XCTAssertEqual("\($0)", "ranking[2]: token id 17 outside the vocabulary (expected 0..<10)")
        }
        try raw("UPDATE tunings SET token_ranking = '[1, \"two\"]' WHERE model_key = 'abc@stored'")
        XCTAssertThrowsError(try store.tuning(modelKey: "abc@stored")) { XCTAssertTrue("\($0)".contains("tunings.token_ranking"), "\($0)") }
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
}

final class ModelManagerTests: XCTestCase {
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

/// Every test of `JobStoreTests` on PostgreSQL, against the test cluster (a fresh database each).
final class PostgresJobStoreTests: JobStoreTests {
    var url: String!

    override func openStore() throws -> JobStore {
        if url == nil { url = try TestPostgres.freshDatabase(name) }
        return try JobStore(postgresql: PostgresLocation(url: url))
    }

    override func raw(_ sql: String) throws { try TestPostgres.psql(url, sql) }

    override func appliedMigrations() throws -> [String] {
        try TestPostgres.psql(url, "SELECT identifier FROM layerskip_migrations").split(separator: "\n").map(String.init)
    }

    override func recordMigration(_ identifier: String) throws {
        try raw("INSERT INTO layerskip_migrations (identifier, applied_at) VALUES ('\(identifier)', 0)")
    }

    override func forgetMigration(_ identifier: String) throws { try raw("DELETE FROM layerskip_migrations WHERE identifier = '\(identifier)'") }

    override func forceState(_ id: Int64, _ state: String) throws {
        try raw("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_state_check; UPDATE jobs SET state = '\(state)' WHERE id = \(id)")
    }

    /// The server ends the store's connection in the middle of a statement (here while it waits
    /// for a lock another session holds, as a fast shutdown ends it): that is `unavailable` (the
    /// runner keeps the output until the store is back), not a refused statement that would abort
    /// the batch; and the next commit, on a new connection, goes through. (libpq reads the FATAL
    /// 57P01 and then the end of the stream before it returns, so the connection reads as bad and
    /// the store needs no SQLSTATE list for this; the test keeps it that way.)
    func testAConnectionEndedMidStatementIsUnavailable() throws {
        let id = try submit(jobYAML(prompts: 1))
        let job = try XCTUnwrap(try store.claimNext())
        let database = String(url[url.index(after: url.lastIndex(of: "/")!)...])
        let url = self.url!
        let holderDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? TestPostgres.psql(url, "BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT")
            holderDone.signal()
        }
        try waitFor("the lock to be held", timeout: 10) {
            try TestPostgres.psql(url, "SELECT COUNT(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND mode = 'AccessExclusiveLock' AND granted") == "1"
        }
        let outcome = Collected()
        let committed = DispatchSemaphore(value: 0)
        let (store, metrics) = (self.store!, self.metrics())
        DispatchQueue.global().async {
            do {
                try store.commitOutput(job, index: 0, text: "a", tokens: [1], metrics: metrics)
                outcome.add("committed")
            } catch StoreError.unavailable(let why) {
                outcome.add("unavailable: \(why)")
            } catch { outcome.add("other: \(error)") }
            committed.signal()
        }
        try waitFor("the store's statement to wait for the lock", timeout: 10) {
            try TestPostgres.psql(url, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '\(database)' AND wait_event_type = 'Lock'") == "1"
        }
        try TestPostgres.psql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND wait_event_type = 'Lock'")
        XCTAssertEqual(committed.wait(timeout: .now() + 10), .success, "the commit returned once its connection ended")
        XCTAssertEqual(outcome.items.count, 1)
        XCTAssertTrue(outcome.items.first?.hasPrefix("unavailable: ") ?? false, "\(outcome.items)")
        XCTAssertEqual(holderDone.wait(timeout: .now() + 10), .success)
        try store.commitOutput(job, index: 0, text: "a", tokens: [1], metrics: metrics)
        try store.finish(job, as: .succeeded)
        XCTAssertEqual(try store.outputs(id).map(\.text), ["a"])
    }

    // XCTest on Linux runs only the test methods a class declares itself, not inherited ones.
    override func testTextWithNULAndAnyUnicodeRoundTrips() throws { try super.testTextWithNULAndAnyUnicodeRoundTrips() }
    override func testMigrationsAreNamedAndANewerDatabaseIsRefused() throws { try super.testMigrationsAreNamedAndANewerDatabaseIsRefused() }
    override func testCustomIdMigrationRunsOnAnExistingDatabase() throws { try super.testCustomIdMigrationRunsOnAnExistingDatabase() }
    override func testTuningsAreStoredReplacedAndRead() throws { try super.testTuningsAreStoredReplacedAndRead() }
    override func testCorruptRowsAreErrorsNotDefaults() throws { try super.testCorruptRowsAreErrorsNotDefaults() }
    override func testClaimOrderIsPriorityThenAge() throws { try super.testClaimOrderIsPriorityThenAge() }
    override func testStaleLeaseCannotCommitOrFinish() throws { try super.testStaleLeaseCannotCommitOrFinish() }
    override func testRetriedCommitOfTheSameOutputIsNotADuplicate() throws { try super.testRetriedCommitOfTheSameOutputIsNotADuplicate() }
    override func testJobThatKeepsCrashingEndsFailed() throws { try super.testJobThatKeepsCrashingEndsFailed() }
    override func testCancelRequestedBeforeACrashEndsCancelled() throws { try super.testCancelRequestedBeforeACrashEndsCancelled() }
    override func testCleanStopDoesNotCountAnAttempt() throws { try super.testCleanStopDoesNotCountAnAttempt() }
    override func testCancelAndRetryKeepHistory() throws { try super.testCancelAndRetryKeepHistory() }
    override func testExpiredLeaseIsTakenOverAndTheStaleWorkerIsRefused() throws { try super.testExpiredLeaseIsTakenOverAndTheStaleWorkerIsRefused() }
    override func testRenewedLeaseHoldsAndAnExpiredCancelledJobEndsCancelled() throws { try super.testRenewedLeaseHoldsAndAnExpiredCancelledJobEndsCancelled() }
    override func testAWorkerClaimsOnlyJobsForItsModels() throws { try super.testAWorkerClaimsOnlyJobsForItsModels() }
    override func testConcurrentClaimsAreDistinct() throws { try super.testConcurrentClaimsAreDistinct() }
    override func testWorkersAreListedWithTheirHeartbeat() throws { try super.testWorkersAreListedWithTheirHeartbeat() }
    override func testRunnerResumesWithoutRedoingFinishedPrompts() throws { try super.testRunnerResumesWithoutRedoingFinishedPrompts() }
    override func testCacheBudgetTooSmallFailsClearly() throws { try super.testCacheBudgetTooSmallFailsClearly() }
    override func testPromptLongerThanTheModelFailsTheJobClearly() throws { try super.testPromptLongerThanTheModelFailsTheJobClearly() }
}

/// Strings added from several threads.
// `@unchecked Sendable`: `list` is read and written under `lock`.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var items: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
