import ArgumentParser
import Daemon
import Foundation

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a queued job, or ask the daemon to stop a running one between tokens.")

    @OptionGroup var options: DaemonOptions
    @Argument(help: "Job id.") var id: String

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        do {
            switch try store.cancel(id) {
            case .cancelled: printLine("job \(id) cancelled")
            case .requested: printLine("job \(id) is running; it stops at the next token (layerskip watch \(id))")
            case let .alreadyFinal(state): throw CLIError(message: "job \(id) is already \(state.rawValue)")
            }
        } catch DaemonError.notFound(let message) { throw CLIError.notFound(message) }
    }
}

struct RetryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Queue a finished job again as a new run (earlier outputs stay in the history).")

    @OptionGroup var options: DaemonOptions
    @Argument(help: "Job id.") var id: String

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        do {
            try store.retry(id)
            printLine("job \(id) queued again")
        } catch DaemonError.notFound(let message) {
            throw CLIError.notFound(message)
        } catch let error as DaemonError {
            throw CLIError(message: error.description)
        }
    }
}

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Follow a job until it is final.",
        discussion: "Exit code: 0 succeeded, 1 failed or rejected, 3 no such job, 4 cancelled, 5 --timeout reached.")

    @OptionGroup var options: DaemonOptions
    @Option(help: "Give up after this many seconds (exit 5).") var timeout: Double?
    @Flag(help: "Print the final job as JSON.") var json = false
    @Argument(help: "Job id.") var id: String

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        var last = ""
        var job = try requireJob(store, id)
        while true {
            let line = "job \(id): \(job.state.rawValue), \(job.finishedPrompts)/\(job.promptCount) prompts"
            if line != last, !json { printLine(line); last = line }
            if job.state.isFinal { break }
            if let deadline, Date() > deadline { throw ExitCode(5) }
            Thread.sleep(forTimeInterval: 0.2)
            job = try requireJob(store, id)
        }
        if json { try printDocument(JobsCommand.Document(schemaVersion: jsonSchemaVersion, jobs: [job])) }
        if let error = job.error, !json, job.state != .succeeded { standardError("job \(id): \(error)") }
        switch job.state {
        case .succeeded: return
        case .cancelled: throw ExitCode(4)
        default: throw ExitCode(1)
        }
    }
}

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Tokens/s, acceptance rate and average exit layer by model and strategy, over finished prompts.")

    @OptionGroup var options: DaemonOptions
    @Flag(help: "Print JSON.") var json = false

    struct Document: Encodable {
        var schemaVersion: Int
        var stats: [JobStore.StatsRow]
        var jobsByState: [String: Int]
    }

    func run() throws {
        let (_, store) = try options.openStore()
        let rows = try store.stats()
        let all = try store.jobs()
        var byState: [String: Int] = [:]
        for s in JobState.allCases { byState[s.rawValue] = all.filter { $0.state == s }.count }
        if json { return try printDocument(Document(schemaVersion: jsonSchemaVersion, stats: rows, jobsByState: byState)) }
        printTable(["MODEL", "STRATEGY", "JOBS", "PROMPTS", "TOKENS", "TOK/S", "E2E TOK/S", "ACCEPT", "EXIT", "LAYERS/TOK", "BATCH", "STEP MS"], rows.map { r in
            [r.model, r.strategy, String(r.jobs), String(r.prompts), String(r.generatedTokens), r.tokensPerSecond.short,
             r.endToEndTokensPerSecond.short, r.acceptanceRate.map { String(format: "%.1f%%", $0 * 100) } ?? "-",
             r.averageExitLayer?.short ?? "-", r.layerEvaluationsPerToken?.short ?? "-", r.batchSize?.short ?? "-", r.stepMs?.short ?? "-"]
        })
        printLine("jobs: " + JobState.allCases.map { "\(byState[$0.rawValue] ?? 0) \($0.rawValue)" }.joined(separator: ", "))
    }
}
