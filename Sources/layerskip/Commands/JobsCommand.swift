import ArgumentParser
import Daemon
import Foundation

struct JobsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "List jobs, newest first.")

    @OptionGroup var options: DaemonOptions

    @Option(help: "Only jobs in this state (queued, running, succeeded, failed, cancelled, rejected).")
    var state: String?

    @Option(help: "At most this many jobs.")
    var limit: Int?

    @Flag(help: "Print JSON.")
    var json = false

    struct Document: Encodable {
        var schemaVersion: Int
        var jobs: [JobRecord]
    }

    func run() throws {
        var filter: JobState?
        if let state {
            guard let s = JobState(rawValue: state) else {
                throw ValidationError("--state must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", ")), found \"\(state)\"")
            }
            filter = s
        }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        let (_, store) = try options.openStore()
        let jobs = try store.jobs(state: filter, limit: limit)
        if json { return try printDocument(Document(schemaVersion: jsonSchemaVersion, jobs: jobs)) }
        printTable(["ID", "STATE", "PRI", "STRATEGY", "PROMPTS", "ATTEMPTS", "WORKER", "CREATED", "SOURCE"], jobs.map { j in
            [String(j.id), j.state.rawValue, String(j.priority), j.strategy ?? "-", "\(j.finishedPrompts)/\(j.promptCount)",
             j.state == .rejected ? "-" : "\(j.attempts)/\(j.maxAttempts)", j.worker ?? "-", j.createdAt.shortTime, j.storedAs ?? j.source]
        })
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "One job's state, problems, metrics and history.")

    @OptionGroup var options: DaemonOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: "Job id.")
    var id: String

    struct Document: Encodable {
        var schemaVersion: Int
        var job: JobRecord
        var summary: JobSummary
        var events: [JobStore.Event]
    }

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        let job = try requireJob(store, id)
        let summary = JobSummary(job: job, outputs: try store.outputs(id))
        let events = try store.events(id)
        if json { return try printDocument(Document(schemaVersion: jsonSchemaVersion, job: job, summary: summary, events: events)) }
        var lines: [(String, String)] = [
            ("job", String(job.id)), ("state", job.state.rawValue), ("source", job.source),
            ("stored as", job.storedAs ?? "-"), ("model", job.model.map { "\($0) (\(job.modelDirectory ?? "?"))" } ?? "-"),
            ("strategy", job.strategy ?? "-"),
            ("prompts", "\(job.finishedPrompts) of \(job.promptCount) finished (run \(job.run))"),
            ("attempts", "\(job.attempts) of \(job.maxAttempts)"), ("created", job.createdAt.shortTime),
        ]
        if let settings = summary.strategySettings {
            lines.append(("settings", settings.isEmpty ? "(none)" : settings))
            if let source = summary.settingsSource { lines.append(("settings from", source)) }
        }
        lines.append(("priority", String(job.priority)))
        if let worker = job.worker { lines.append(("worker", worker)) }
        if let started = job.startedAt { lines.append(("started", started.shortTime)) }
        if let finished = job.finishedAt { lines.append(("finished", finished.shortTime)) }
        if job.cancelRequested { lines.append(("cancel", "requested")) }
        if summary.generatedTokens > 0 {
            lines.append(("tokens", "\(summary.promptTokens) prompt, \(summary.generatedTokens) generated"))
            lines.append(("speed", "\(summary.tokensPerSecond.short) tok/s decode, \(summary.endToEndTokensPerSecond.short) tok/s end to end (prefill \(summary.prefillMs.short) ms, decode \(summary.decodeMs.short) ms)"))
            if let l = summary.layerEvaluationsPerToken { lines.append(("layers/token", l.short)) }
            if let a = summary.acceptanceRate, let d = summary.drafted, let acc = summary.accepted {
                lines.append(("acceptance", String(format: "%.1f%% (%d of %d drafted)", a * 100, acc, d)))
            }
            if let e = summary.averageExitLayer { lines.append(("avg exit layer", e.short)) }
            if let b = summary.batchSize, let step = summary.stepMs {
                lines.append(("batch", "\(b.short) sequences per pass on average, \(step.short) ms per pass"))
            }
        }
        if let error = job.error { lines.append(("error", error)) }
        let width = lines.map(\.0.count).max() ?? 0
        for (k, v) in lines { printLine(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
        if let problems = job.problems, !problems.isEmpty {
            printLine("problems:")
            for p in problems { printLine("  \(p.path): expected \(p.expected), found \(p.found)") }
        }
        printLine("history:")
        for e in events {
            printLine("  \(e.at.shortTime)  \(e.from ?? "-") → \(e.to)\(e.worker.map { "  on \($0)" } ?? "")\(e.note.map { "  (\($0))" } ?? "")")
        }
    }
}

struct WorkersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "The daemons on this job store: heartbeat age, jobs and sequences in flight, recent tokens/s.",
        discussion: """
            A daemon beats every third of lease_seconds (at most every 5 s). One whose heartbeat is older than             lease_seconds is shown as "lost": it died, hangs, or cannot reach the store, and its jobs go back to the queue             as their leases expire. A daemon stopped with SIGTERM shows "stopped".
            """)

    @OptionGroup var options: DaemonOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Also list daemons that stopped or were lost.")
    var all = false

    struct Document: Encodable {
        var schemaVersion: Int
        var workers: [Entry]
    }

    struct Entry: Encodable {
        var worker: WorkerRecord
        var status: String
        func encode(to encoder: Encoder) throws {
            try worker.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(status, forKey: .status)
        }
        enum Key: String, CodingKey { case status }
    }

    func run() throws {
        let (config, store) = try options.openStore()
        let entries = try store.workers().map { w in
            Entry(worker: w, status: w.stoppedAt != nil ? "stopped" : (w.heartbeatAge > config.leaseSeconds ? "lost" : "live"))
        }.filter { all || $0.status == "live" }
        if json { return try printDocument(Document(schemaVersion: jsonSchemaVersion, workers: entries)) }
        printTable(["WORKER", "HOST", "PID", "STATUS", "HEARTBEAT", "JOBS", "SEQUENCES", "TOK/S", "MODELS"], entries.map { e in
            let w = e.worker
            return [w.name, w.host, String(w.pid), e.status, "\(w.heartbeatAge.short) s ago", String(w.inFlightJobs), String(w.sequences),
                    w.tokensPerSecond.short, w.models.joined(separator: ",")]
        })
    }
}
