import ArgumentParser
import Daemon
import Decoding
import Foundation

struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Validate job files and drop them atomically into the daemon's spool; print each job id.",
        discussion: """
            Each file is checked first (as the daemon would); an invalid file is not submitted and its
            problems are printed (exit 1). A valid one is written to SPOOL/incoming under a fresh name
            (temporary file, fsync, rename), and the job id is printed once the daemon has taken it in
            (--wait seconds; 0 prints the spool name without waiting).

            submit reads the job with your rights and drops the job as resolved: a prompts_file is read
            now and its prompts go into the spooled job, and a model folder is written as an absolute
            path. The daemon reads nothing a spooled job names outside the spool, so a model folder
            must be a configured model name or lie under the config's model_directories.
            """)

    @OptionGroup var options: DaemonOptions

    @Option(help: "Seconds to wait for the daemon to record each job (0: do not wait).")
    var wait: Double = 30

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: "Job files (YAML).")
    var files: [String]

    struct Submitted: Encodable {
        var file: String
        var spoolName: String
        var jobId: Int64?
    }

    struct Document: Encodable {
        var schemaVersion: Int
        var submitted: [Submitted]
    }

    func run() throws {
        let config = try options.load()
        var invalid = false
        var ready: [(URL, ResolvedJob)] = []
        for file in files {
            let url = URL(fileURLWithPath: file).standardizedFileURL
            switch JobFileValidator.validate(fileAt: url, config: config, registry: Strategies.registry).1 {
            case let .failure(error):
                standardError("\(file): not submitted:\n\(formatProblems(error.problems))")
                invalid = true
            case let .success(job):
                ready.append((url, job))
            }
        }
        if invalid { throw ExitCode(1) }
        let layout = SpoolLayout(root: config.spoolDirectory)
        guard FileManager.default.fileExists(atPath: layout.incoming.path) else {
            throw CLIError(message: "no spool at \(layout.incoming.path): is the daemon configured with this config (--config)?")
        }
        var submitted: [Submitted] = []
        for (url, job) in ready {
            switch try layout.submit(job, from: url, config: config, registry: Strategies.registry) {
            case let .failure(error):
                standardError("\(url.path): not submitted (the daemon would refuse it):\n\(formatProblems(error.problems))")
                invalid = true
            case let .success((name, _)):
                submitted.append(Submitted(file: url.path, spoolName: name, jobId: nil))
            }
        }
        if wait > 0 && !submitted.isEmpty {
            let (_, store) = try options.openStore()
            let deadline = Date().addingTimeInterval(wait)
            for i in submitted.indices {
                while submitted[i].jobId == nil {
                    submitted[i].jobId = try store.jobs(source: submitted[i].spoolName).first
                    if submitted[i].jobId != nil || Date() > deadline { break }
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
        }
        if json {
            try printDocument(Document(schemaVersion: jsonSchemaVersion, submitted: submitted))
        } else {
            for s in submitted {
                if let id = s.jobId { printLine(String(id)) } else {
                    printLine(s.spoolName)
                    if wait > 0 { standardError("\(s.file): in the spool as \(s.spoolName); no daemon recorded it within \(Int(wait)) s") }
                }
            }
        }
        if invalid { throw ExitCode(1) }
    }
}
