#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Daemon
import Engine
import Decoding
import Foundation
import Logging

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run job files in the foreground through the daemon's runner and job store; print a summary.",
        discussion: """
            The jobs are recorded in the same database as the daemon's (see `layerskip jobs`), but run here,
            now, in priority order. Refuses to start while a daemon serves the same state directory (use
            `layerskip submit` then). Ctrl-C stops between tokens and leaves the job queued.
            Exit code 0 when every job succeeded, 1 otherwise.
            """)

    @OptionGroup var options: DaemonOptions

    @Flag(help: "Print the summary as JSON.")
    var json = false

    @Argument(help: "Job files (YAML).")
    var files: [String]

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one job file") }
    }

    func run() throws {
        let config = try options.load()
        ThreadSettings.apply(config.threads > 0 ? config.threads : nil)
        if let precision = config.activations { try ActivationPrecision.select(precision, setting: "activations") }
        let log = Logger.daemon(level: max(config.logLevel, .notice))
        let lock: InstanceLock
        do { lock = try InstanceLock(url: config.lockURL) } catch let error as DaemonError {
            throw CLIError(message: "\(error.description); submit the files with `layerskip submit` instead")
        }
        defer { withExtendedLifetime(lock) {} }
        let (_, store) = try options.openStore(create: true)
        do { try store.verifyIntact() } catch let error as DaemonError { throw CLIError(message: error.description) }
        try store.recoverInterrupted(worker: config.worker)

        var ids: [Int64] = []
        var rejected = 0
        for file in files {
            let url = URL(fileURLWithPath: file).standardizedFileURL
            let (data, outcome) = JobFileValidator.validate(fileAt: url, config: config, registry: Strategies.registry)
            let id = try store.insert(Submission(source: url.path, contentHash: JobFileValidator.contentHash(data), outcome: outcome),
                                      defaultMaxAttempts: config.maxAttempts, intakePending: false, storedAs: nil)
            if case let .failure(error) = outcome {
                standardError("\(file): rejected (job \(id)):\n\(formatProblems(error.problems))")
                rejected += 1
            }
            ids.append(id)
        }

        let runner = JobRunner(store: store, models: ModelManager(budget: config.modelMemoryBudget, log: log, formats: config.modelWeights),
                               caches: CacheManager(budget: config.cacheMemoryBudget), registry: Strategies.registry, log: log)
        runner.maxBatch = config.maxBatch
        runner.worker = config.worker
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { [runner] in runner.stopping.set() }
            s.resume()
            return s
        }
        defer { sources.forEach { $0.cancel() } }
        while try runner.runNext(among: ids) != .none {}
        // On a shared store other daemons may have claimed some of these jobs: wait for them too.
        if store.isShared {
            while !runner.stopping.isSet, try ids.contains(where: { try !(store.job($0)?.state.isFinal ?? true) }) {
                _ = try runner.runNext(among: ids)
                Thread.sleep(forTimeInterval: 0.5)
            }
        }

        let jobs = try ids.compactMap { try store.job($0) }
        let summaries = try jobs.map { JobSummary(job: $0, outputs: try store.outputs($0.id)) }
        if json {
            try printDocument(RunDocument(schemaVersion: jsonSchemaVersion, jobs: summaries))
        } else {
            printSummaryTable(summaries)
        }
        if runner.stopping.isSet { throw CLIError(message: "interrupted; unfinished jobs stay queued (layerskip jobs --state queued)", exitCode: 1) }
        if rejected > 0 || jobs.contains(where: { $0.state != .succeeded }) { throw ExitCode(1) }
    }
}

struct RunDocument: Encodable {
    var schemaVersion: Int
    var jobs: [JobSummary]
}

/// One job in a summary: its state and DESIGN §6 metrics added up over its finished prompts.
struct JobSummary: Encodable {
    var id: Int64
    var source: String
    var state: JobState
    var strategy: String?
    var prompts: Int
    var finishedPrompts: Int
    var promptTokens: Int
    var generatedTokens: Int
    var prefillMs: Double
    var decodeMs: Double
    /// Generated tokens ÷ decode time, over all finished prompts.
    var tokensPerSecond: Double
    /// Generated tokens ÷ (prefill + decode time).
    var endToEndTokensPerSecond: Double
    var layerEvaluationsPerToken: Double?
    var drafted: Int?
    var accepted: Int?
    var acceptanceRate: Double?
    var averageExitLayer: Double?
    /// Mean sequences per decode pass and mean pass time, weighted by generated tokens.
    var batchSize: Double?
    var stepMs: Double?
    /// The strategy options the prompts ran with and where they came from (job file, tune).
    var strategySettings: String?
    var settingsSource: String?
    var error: String?

    init(job: JobRecord, outputs: [OutputRecord]) {
        id = job.id
        source = job.source
        state = job.state
        strategy = job.strategy
        prompts = job.promptCount
        finishedPrompts = job.finishedPrompts
        let metrics = outputs.compactMap(\.metrics)
        func sum(_ key: String) -> Double { metrics.reduce(0) { $0 + ($1[key]?.number ?? 0) } }
        let generated = sum("generated_tokens")
        promptTokens = Int(sum("prompt_tokens"))
        generatedTokens = Int(generated)
        prefillMs = sum("prefill_ms")
        decodeMs = sum("decode_ms")
        tokensPerSecond = decodeMs > 0 ? generated / (decodeMs / 1000) : 0
        endToEndTokensPerSecond = decodeMs + prefillMs > 0 ? generated / ((decodeMs + prefillMs) / 1000) : 0
        layerEvaluationsPerToken = generated > 0
            ? metrics.reduce(0) { $0 + ($1["layer_evaluations_per_token"]?.number ?? 0) * ($1["generated_tokens"]?.number ?? 0) } / generated : nil
        let draftedTotal = sum("drafted")
        drafted = draftedTotal > 0 ? Int(draftedTotal) : nil
        accepted = draftedTotal > 0 ? Int(sum("accepted")) : nil
        acceptanceRate = draftedTotal > 0 ? sum("accepted") / draftedTotal : nil
        let exits = metrics.filter { $0["average_exit_layer"]?.number != nil }
        let exitTokens = exits.reduce(0) { $0 + ($1["generated_tokens"]?.number ?? 0) }
        averageExitLayer = exitTokens > 0
            ? exits.reduce(0) { $0 + ($1["average_exit_layer"]?.number ?? 0) * ($1["generated_tokens"]?.number ?? 0) } / exitTokens : nil
        let batched = metrics.filter { $0["batch_size"]?.number != nil && $0["step_ms"]?.number != nil }
        let batchedTokens = batched.reduce(0) { $0 + ($1["generated_tokens"]?.number ?? 0) }
        func weighted(_ key: String) -> Double? {
            batchedTokens > 0 ? batched.reduce(0) { $0 + ($1[key]?.number ?? 0) * ($1["generated_tokens"]?.number ?? 0) } / batchedTokens : nil
        }
        batchSize = weighted("batch_size")
        stepMs = weighted("step_ms")
        strategySettings = metrics.last?["strategy_settings"]?.string
        settingsSource = metrics.last?["settings_source"]?.string
        error = job.error
    }
}

func printSummaryTable(_ summaries: [JobSummary]) {
    printTable(["JOB", "STATE", "STRATEGY", "PROMPTS", "TOKENS", "TOK/S", "ACCEPT", "EXIT", "FILE"], summaries.map { s in
        [String(s.id), s.state.rawValue, s.strategy ?? "-", "\(s.finishedPrompts)/\(s.prompts)", String(s.generatedTokens),
         s.tokensPerSecond.short, s.acceptanceRate.map { String(format: "%.0f%%", $0 * 100) } ?? "-",
         s.averageExitLayer?.short ?? "-", (s.source as NSString).lastPathComponent]
    })
    for s in summaries where s.state != .succeeded {
        if let error = s.error { standardError("job \(s.id) \(s.state.rawValue): \(error)") }
    }
}
