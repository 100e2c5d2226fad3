import ArgumentParser
import Daemon
import Foundation

struct ResultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result", abstract: "A job's outputs: text by default, --json one document, --jsonl one line per prompt.",
        discussion: """
            --format openai prints OpenAI Batch API output lines, one per prompt in input order:
            {"id", "custom_id", "response": {"status_code": 200, "request_id", "body": {"object":
            "text_completion", "choices": [{"text", "finish_reason", …}], "usage", …}}, "error": null}.
            custom_id is the request's own for a job submitted as an OpenAI batch file (*.jsonl), and
            the prompt's id for a YAML job (its id:, else its position from 1). A prompt that a failed
            or cancelled job never ran has "response": null and an "error" (code batch_failed or
            batch_cancelled). For a job not yet finished only the finished prompts are printed, and
            the command exits 1 saying how many are missing.
            """)

    @OptionGroup var options: DaemonOptions

    @Flag(help: "Print one JSON document.")
    var json = false

    @Flag(help: "Print one JSON object per prompt (with its id), one per line.")
    var jsonl = false

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, jsonl, openai
    }

    @Option(help: "Output format: text, json (= --json), jsonl (= --jsonl), or openai (OpenAI Batch API output lines).")
    var format: Format?

    @Argument(help: "Job id.")
    var id: String

    struct Document: Encodable {
        var schemaVersion: Int
        var job: JobRecord
        var outputs: [OutputRecord]
    }

    struct Line: Encodable {
        var schemaVersion: Int
        var jobId: Int64
        var id: String
        var index: Int
        var text: String?
        var finished: Bool
        var metrics: MetricsJSON?
    }

    func validate() throws {
        if [json, jsonl, format != nil].filter({ $0 }).count > 1 { throw ValidationError("choose one of --json, --jsonl and --format") }
    }

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        let job = try requireJob(store, id)
        let outputs = try store.outputs(id)
        let json = self.json || format == .json, jsonl = self.jsonl || format == .jsonl
        if format == .openai { return try printOpenAI(job, outputs) }
        if json { return try printDocument(Document(schemaVersion: jsonSchemaVersion, job: job, outputs: outputs)) }
        if jsonl {
            for o in outputs {
                try printDocument(Line(schemaVersion: jsonSchemaVersion, jobId: id, id: o.promptId, index: o.index, text: o.text,
                                       finished: o.text != nil, metrics: o.metrics))
            }
            return
        }
        if job.state == .rejected { throw CLIError(message: "job \(id) was rejected; `layerskip show \(id)` lists its problems") }
        for o in outputs {
            printLine("=== \(o.promptId) ===")
            printText(o.text ?? "(not finished: job is \(job.state.rawValue))")
        }
    }

    func printOpenAI(_ job: JobRecord, _ outputs: [OutputRecord]) throws {
        if job.state == .rejected { throw CLIError(message: "job \(job.id) was rejected; `layerskip show \(job.id)` lists its problems") }
        let result = try OpenAIBatchOutput.lines(job: job, outputs: outputs)
        for line in result.lines { FileHandle.standardOutput.write(line + Data("\n".utf8)) }
        if result.unfinished > 0 {
            throw CLIError(message: "job \(job.id) is \(job.state.rawValue): \(result.unfinished) of \(outputs.count) prompt(s) not finished yet, "
                           + "so not in this output; run it again when the job has finished (`layerskip watch \(job.id)`)")
        }
    }
}
