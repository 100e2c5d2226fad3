import Foundation
import GRDB

/// Reads for the CLI. Each is one read transaction on a WAL snapshot, so it never waits for the
/// daemon's writes and never sees half of one.
extension JobStore {
    private static let jobColumns = """
        j.*, (SELECT COUNT(*) FROM prompts p WHERE p.job_id = j.id) AS prompt_count,
        (SELECT COUNT(*) FROM outputs o WHERE o.job_id = j.id AND o.run = j.run) AS finished_prompts
        """

    static func record(_ row: Row) -> JobRecord {
        let problems: [ProblemRecord]? = (row["problems"] as String?).flatMap {
            try? JSONDecoder().decode([ProblemRecord].self, from: Data($0.utf8))
        }
        func date(_ key: String) -> Date? { (row[key] as Double?).map(Date.init(timeIntervalSince1970:)) }
        return JobRecord(
            id: row["id"], state: JobState(rawValue: row["state"]) ?? .failed, source: row["source"], storedAs: row["stored_as"],
            contentHash: row["content_hash"], name: row["name"], model: row["model"], modelDirectory: row["model_directory"],
            strategy: row["strategy"], priority: row["priority"], run: row["run"], attempts: row["attempts"],
            maxAttempts: row["max_attempts"], cancelRequested: row["cancel_requested"], error: row["error"], problems: problems,
            promptCount: row["prompt_count"], finishedPrompts: row["finished_prompts"],
            createdAt: date("created_at")!, updatedAt: date("updated_at")!, startedAt: date("started_at"), finishedAt: date("finished_at"))
    }

    public func jobs(state: JobState? = nil, limit: Int? = nil) throws -> [JobRecord] {
        try read { db in
            var sql = "SELECT \(JobStore.jobColumns) FROM jobs j"
            var args: StatementArguments = []
            if let state { sql += " WHERE j.state = ?"; args += [state.rawValue] }
            sql += " ORDER BY j.id DESC"
            if let limit { sql += " LIMIT ?"; args += [limit] }
            return try Row.fetchAll(db, sql: sql, arguments: args).map(JobStore.record)
        }
    }

    public func job(_ id: Int64) throws -> JobRecord? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT \(JobStore.jobColumns) FROM jobs j WHERE j.id = ?", arguments: [id]).map(JobStore.record)
        }
    }

    /// Every prompt of the job's current run, finished or not, in order.
    public func outputs(_ id: Int64) throws -> [OutputRecord] {
        try read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT p.idx, p.prompt_id, p.text AS prompt, o.text, o.tokens, o.metrics, o.attempt, o.finished_at
                FROM prompts p JOIN jobs j ON j.id = p.job_id
                LEFT JOIN outputs o ON o.job_id = p.job_id AND o.idx = p.idx AND o.run = j.run
                WHERE p.job_id = ? ORDER BY p.idx
                """, arguments: [id])
            return rows.map { row in
                OutputRecord(index: row["idx"], promptId: row["prompt_id"], prompt: row["prompt"], text: row["text"],
                             tokens: (row["tokens"] as String?).flatMap { try? JSONDecoder().decode([Int].self, from: Data($0.utf8)) },
                             metrics: (row["metrics"] as String?).flatMap { try? JSONDecoder().decode(MetricsJSON.self, from: Data($0.utf8)) },
                             attempt: row["attempt"], finishedAt: (row["finished_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    public struct Event: Codable, Sendable {
        public var at: Date
        public var from: String?
        public var to: String
        public var note: String?
    }

    public func events(_ id: Int64) throws -> [Event] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM events WHERE job_id = ? ORDER BY id", arguments: [id]).map {
                Event(at: Date(timeIntervalSince1970: $0["at"]), from: $0["from_state"], to: $0["to_state"], note: $0["note"])
            }
        }
    }

    /// Output rows per (job, run, prompt): more than one would mean a prompt was finished twice.
    public func outputCommitCounts() throws -> [Int] {
        try read { db in try Int.fetchAll(db, sql: "SELECT COUNT(*) FROM outputs GROUP BY job_id, run, idx") }
    }

    public struct StatsRow: Codable, Sendable {
        public var model: String
        public var strategy: String
        public var jobs: Int
        public var prompts: Int
        public var generatedTokens: Int
        public var tokensPerSecond: Double
        public var endToEndTokensPerSecond: Double
        public var acceptanceRate: Double?
        public var averageExitLayer: Double?
        public var layerEvaluationsPerToken: Double?
    }

    /// DESIGN §6 aggregated over every finished prompt, by model and strategy.
    public func stats() throws -> [StatsRow] {
        try read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT CASE WHEN j.model LIKE '%/%' THEN j.model_directory ELSE j.model END AS model, j.strategy AS strategy, COUNT(DISTINCT j.id) AS jobs, COUNT(*) AS prompts,
                  SUM(json_extract(o.metrics, '$.generated_tokens')) AS generated,
                  SUM(json_extract(o.metrics, '$.decode_ms')) AS decode_ms,
                  SUM(json_extract(o.metrics, '$.prefill_ms')) AS prefill_ms,
                  SUM(json_extract(o.metrics, '$.accepted')) AS accepted,
                  SUM(json_extract(o.metrics, '$.drafted')) AS drafted,
                  SUM(json_extract(o.metrics, '$.average_exit_layer') * json_extract(o.metrics, '$.generated_tokens')) AS exit_weighted,
                  SUM(CASE WHEN json_extract(o.metrics, '$.average_exit_layer') IS NOT NULL
                      THEN json_extract(o.metrics, '$.generated_tokens') END) AS exit_tokens,
                  SUM(json_extract(o.metrics, '$.layer_evaluations_per_token') * json_extract(o.metrics, '$.generated_tokens')) AS evals
                FROM outputs o JOIN jobs j ON j.id = o.job_id
                GROUP BY 1, 2 ORDER BY 1, 2
                """)
            return rows.map { r in
                let generated = (r["generated"] as Double?) ?? 0
                let decode = (r["decode_ms"] as Double?) ?? 0, prefill = (r["prefill_ms"] as Double?) ?? 0
                let drafted = (r["drafted"] as Double?) ?? 0
                let exitTokens = (r["exit_tokens"] as Double?) ?? 0
                return StatsRow(
                    model: r["model"] ?? "?", strategy: r["strategy"] ?? "?", jobs: r["jobs"], prompts: r["prompts"],
                    generatedTokens: Int(generated),
                    tokensPerSecond: decode > 0 ? generated / (decode / 1000) : 0,
                    endToEndTokensPerSecond: decode + prefill > 0 ? generated / ((decode + prefill) / 1000) : 0,
                    acceptanceRate: drafted > 0 ? ((r["accepted"] as Double?) ?? 0) / drafted : nil,
                    averageExitLayer: exitTokens > 0 ? ((r["exit_weighted"] as Double?) ?? 0) / exitTokens : nil,
                    layerEvaluationsPerToken: generated > 0 ? ((r["evals"] as Double?) ?? 0) / generated : nil)
            }
        }
    }
}

extension JobStore {
    /// Ids of the jobs recorded for a spool file name (oldest first).
    public func jobs(source: String) throws -> [Int64] {
        try read { db in try Int64.fetchAll(db, sql: "SELECT id FROM jobs WHERE source = ? ORDER BY id", arguments: [source]) }
    }
}
