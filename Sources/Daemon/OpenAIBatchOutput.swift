import Foundation

/// A job's results as OpenAI Batch API output lines (`result --format openai`): one JSON object
/// per prompt, in the order of the input, each with the request's `custom_id` (for a YAML job, the
/// prompt's id: its `id:`, else its 1-based position) and the `/v1/completions` response.
///
/// A prompt that finished has `response.status_code` 200 and `error` null. A prompt of a job that
/// ended without finishing it (failed or cancelled) has `response` null and an `error` with a code
/// and message, the form OpenAI's output takes for requests that never ran (`batch_cancelled`,
/// and here `batch_failed` with the job's error). A prompt of a job still queued or running has
/// no line yet: `unfinished` counts those.
public enum OpenAIBatchOutput {
    public struct Lines: Sendable {
        /// Each line's JSON, without the newline.
        public var lines: [Data]
        /// Prompts left out because the job has not finished them yet.
        public var unfinished: Int
    }

    public static func lines(job: JobRecord, outputs: [OutputRecord]) throws -> Lines {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var lines: [Data] = []
        var unfinished = 0
        for o in outputs {
            // Stable across calls: the same job, run and prompt always get the same ids.
            let suffix = "\(job.id)-\(job.run)-\(o.index)"
            var line = Line(id: "batch_req_\(suffix)", customId: o.customId ?? o.promptId, response: nil, error: nil)
            if let text = o.text {
                let promptTokens = o.metrics?["prompt_tokens"]?.number.map { Int($0) } ?? 0
                let completionTokens = o.tokens?.count ?? 0
                let reason: String
                switch o.metrics?["finish_reason"] {
                case .string("length")?: reason = "length"
                // An end-of-sequence token and a stop string are both OpenAI's "stop".
                default: reason = "stop"
                }
                line.response = Response(statusCode: 200, requestId: "req_\(suffix)", body: Completion(
                    id: "cmpl-\(suffix)", object: "text_completion", created: Int((o.finishedAt ?? job.updatedAt).timeIntervalSince1970),
                    model: job.model ?? "", choices: [Choice(index: 0, text: text, finishReason: reason)],
                    usage: Usage(promptTokens: promptTokens, completionTokens: completionTokens, totalTokens: promptTokens + completionTokens)))
            } else {
                switch job.state {
                case .cancelled:
                    line.error = LineError(code: "batch_cancelled", message: "This request was not run: job \(job.id) was cancelled before it.")
                case .failed:
                    line.error = LineError(code: "batch_failed", message: "This request was not run: job \(job.id) failed: \(job.error ?? "no error recorded")")
                default:
                    unfinished += 1
                    continue
                }
            }
            lines.append(try encoder.encode(line))
        }
        return Lines(lines: lines, unfinished: unfinished)
    }

    struct Line: Encodable {
        var id: String
        var customId: String
        var response: Response?
        var error: LineError?
        enum CodingKeys: String, CodingKey { case id, customId = "custom_id", response, error }
        // `response` and `error` are always present, one of them null, as in OpenAI's files.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(customId, forKey: .customId)
            try c.encode(response, forKey: .response)
            try c.encode(error, forKey: .error)
        }
    }

    struct Response: Encodable {
        var statusCode: Int
        var requestId: String
        var body: Completion
        enum CodingKeys: String, CodingKey { case statusCode = "status_code", requestId = "request_id", body }
    }

    struct Completion: Encodable {
        var id: String
        var object: String
        var created: Int
        var model: String
        var choices: [Choice]
        var usage: Usage
    }

    struct Choice: Encodable {
        var index: Int
        var text: String
        var finishReason: String
        enum CodingKeys: String, CodingKey { case index, text, finishReason = "finish_reason", logprobs }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(text, forKey: .text)
            try c.encode(finishReason, forKey: .finishReason)
            try c.encodeNil(forKey: .logprobs)
        }
    }

    struct Usage: Encodable {
        var promptTokens: Int
        var completionTokens: Int
        var totalTokens: Int
        enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }
    }

    struct LineError: Encodable {
        var code: String
        var message: String
    }
}
