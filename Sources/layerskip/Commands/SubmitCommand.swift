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

            A file named *.jsonl is an OpenAI Batch API input file: one {"custom_id", "method": "POST",
            "url": "/v1/completions", "body": {"model", "prompt", …}} per line, all one job; it is
            spooled as it is. `layerskip result ID --format openai` gives the Batch API's output lines.
            """)

    @OptionGroup var options: DaemonOptions

    @Option(help: "Seconds to wait for the daemon to record each job (0: do not wait).")
    var wait: Double = 30

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: "Job files: YAML, or OpenAI batch files (*.jsonl, one /v1/completions request per line).")
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
        var ready: [(URL, Data, ResolvedJob)] = []
        for file in files {
            let url = URL(fileURLWithPath: file).standardizedFileURL
            let (data, outcome) = JobFileValidator.validate(fileAt: url, config: config, registry: Strategies.registry)
            switch outcome {
            case let .failure(error):
                standardError("\(file): not submitted:\n\(formatProblems(error.problems))")
                invalid = true
            case let .success(job):
                ready.append((url, data, job))
            }
        }
        if invalid { throw ExitCode(1) }
        let layout = SpoolLayout(root: config.spoolDirectory)
        guard FileManager.default.fileExists(atPath: layout.incoming.path) else {
            throw CLIError(message: "no spool at \(layout.incoming.path): is the daemon configured with this config (--config)?")
        }
        var submitted: [Submitted] = []
        for (url, data, job) in ready {
            // A batch file goes in as the bytes just validated; a YAML job as resolved.
            let outcome = OpenAIBatchFile.isBatchFile(url.lastPathComponent)
                ? try layout.submitBatchFile(data, from: url, config: config, registry: Strategies.registry)
                : try layout.submit(job, from: url, config: config, registry: Strategies.registry)
            switch outcome {
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
