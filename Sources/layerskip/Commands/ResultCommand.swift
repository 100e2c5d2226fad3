import ArgumentParser
import Daemon
import Foundation

struct ResultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result", abstract: "A job's outputs: text by default, --json one document, --jsonl one line per prompt.")

    @OptionGroup var options: DaemonOptions

    @Flag(help: "Print one JSON document.")
    var json = false

    @Flag(help: "Print one JSON object per prompt (with its id), one per line.")
    var jsonl = false

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
        if json && jsonl { throw ValidationError("choose --json or --jsonl") }
    }

    func run() throws {
        let id = try parseJobID(id)
        let (_, store) = try options.openStore()
        let job = try requireJob(store, id)
        let outputs = try store.outputs(id)
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
}
