import Foundation

/// Reads for the CLI. Each is one read transaction on a WAL snapshot, so it never waits for the
/// daemon's writes and never sees half of one.
extension JobStore {
    public func jobs(state: JobState? = nil, limit: Int? = nil) throws -> [JobRecord] {
        try read { db in
            var sql = "SELECT * FROM jobs"
            var arguments: SQLArguments = []
            if let state {
                sql += " WHERE state = ?"
                arguments = [state.rawValue]
            }
            sql += " ORDER BY id DESC"
            if let limit { sql += " LIMIT \(max(limit, 0))" }
            let rows = try db.fetchAll(JobRow.self, sql, arguments)
            let counts = try JobCountsRow.fetch(db, ids: limit == nil && state == nil ? nil : rows.map(\.id))
            return try rows.map { try $0.record(promptCount: counts[$0.id]?.promptCount ?? 0, finishedPrompts: counts[$0.id]?.finishedPrompts ?? 0) }
        }
    }

    public func job(_ id: Int64) throws -> JobRecord? {
        try read { db in
            guard let row = try db.fetchOne(JobRow.self, "SELECT * FROM jobs WHERE id = ?", [id]) else { return nil }
            let counts = try JobCountsRow.fetch(db, ids: [id])[id]
            return try row.record(promptCount: counts?.promptCount ?? 0, finishedPrompts: counts?.finishedPrompts ?? 0)
        }
    }

    /// Every prompt of the job's current run, finished or not, in order.
    public func outputs(_ id: Int64) throws -> [OutputRecord] {
        try read { db in
            guard let job = try db.fetchOne(JobRow.self, "SELECT * FROM jobs WHERE id = ?", [id]) else { return [] }
            let prompts = try db.fetchAll(PromptRow.self, "SELECT * FROM prompts WHERE job_id = ? ORDER BY idx", [id])
            let outputs = try db.fetchAll(OutputRow.self, "SELECT * FROM outputs WHERE job_id = ? AND run = ?", [id, job.run])
            let byIndex = Dictionary(outputs.map { ($0.idx, $0) }, uniquingKeysWith: { first, _ in first })
            return try prompts.map { p in
                let o = byIndex[p.idx]
                return OutputRecord(index: p.idx, promptId: p.promptId, customId: p.customId, prompt: p.text, text: o?.text, tokens: try o?.tokenList(),
                                    metrics: try o?.metricsJSON(), attempt: o?.attempt,
                                    finishedAt: o.map { Date(timeIntervalSince1970: $0.finishedAt) })
            }
        }
    }

    public struct Event: Codable, Sendable {
        public var at: Date
        public var from: String?
        public var to: String
        public var note: String?
        /// The worker (host and state directory) that made the transition, where one did.
        public var worker: String?
    }

    public func events(_ id: Int64) throws -> [Event] {
        try read { db in
            try db.fetchAll(EventRow.self, "SELECT * FROM events WHERE job_id = ? ORDER BY id", [id]).map {
                Event(at: Date(timeIntervalSince1970: $0.at), from: $0.fromState, to: $0.toState, note: $0.note, worker: $0.worker)
            }
        }
    }

    /// Output rows per (job, run, prompt): more than one would mean a prompt was finished twice.
    public func outputCommitCounts() throws -> [Int] {
        try read { db in try db.values(Int.self, "SELECT COUNT(*) FROM outputs GROUP BY job_id, run, idx") }
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
        /// Mean sequences per decode pass and mean pass time, weighted by generated tokens.
        public var batchSize: Double?
        public var stepMs: Double?
    }

    /// DESIGN §6 aggregated over every finished prompt, by model and strategy: each output's
    /// metrics decoded as the strategy wrote them (`GenerationMetrics`), summed here.
    public func stats() throws -> [StatsRow] {
        try read { db in
            let jobs = Dictionary(uniqueKeysWithValues: try db.fetchAll(JobRow.self, "SELECT * FROM jobs").map { ($0.id, $0) })
            struct Sums {
                var jobs = Set<Int64>(), prompts = 0, generated = 0.0, decodeMs = 0.0, prefillMs = 0.0
                var drafted = 0.0, accepted = 0.0, exitWeighted = 0.0, exitTokens = 0.0, evaluations = 0.0
                var batchWeighted = 0.0, stepWeighted = 0.0, batchTokens = 0.0
            }
            var groups: [String: (model: String, strategy: String, sums: Sums)] = [:]
            for output in try db.fetchAll(OutputRow.self, "SELECT * FROM outputs") {
                guard let job = jobs[output.jobId] else { continue }
                let m = try output.generationMetrics()
                let model = (job.model ?? "?").contains("/") ? (job.modelDirectory ?? "?") : (job.model ?? "?")
                let strategy = job.strategy ?? "?"
                let key = model + "\u{0}" + strategy
                var entry = groups[key] ?? (model, strategy, Sums())
                let tokens = Double(m.generatedTokens)
                entry.sums.jobs.insert(job.id)
                entry.sums.prompts += 1
                entry.sums.generated += tokens
                entry.sums.decodeMs += m.decodeMs
                entry.sums.prefillMs += m.prefillMs
                entry.sums.drafted += Double(m.drafted ?? 0)
                entry.sums.accepted += Double(m.accepted ?? 0)
                if let exit = m.averageExitLayer { entry.sums.exitWeighted += exit * tokens; entry.sums.exitTokens += tokens }
                entry.sums.evaluations += m.layerEvaluationsPerToken * tokens
                if let batch = m.batchSize, let step = m.stepMs {
                    entry.sums.batchWeighted += batch * tokens
                    entry.sums.stepWeighted += step * tokens
                    entry.sums.batchTokens += tokens
                }
                groups[key] = entry
            }
            return groups.values.sorted { ($0.model, $0.strategy) < ($1.model, $1.strategy) }.map { g in
                let s = g.sums
                return StatsRow(
                    model: g.model, strategy: g.strategy, jobs: s.jobs.count, prompts: s.prompts, generatedTokens: Int(s.generated),
                    tokensPerSecond: s.decodeMs > 0 ? s.generated / (s.decodeMs / 1000) : 0,
                    endToEndTokensPerSecond: s.decodeMs + s.prefillMs > 0 ? s.generated / ((s.decodeMs + s.prefillMs) / 1000) : 0,
                    acceptanceRate: s.drafted > 0 ? s.accepted / s.drafted : nil,
                    averageExitLayer: s.exitTokens > 0 ? s.exitWeighted / s.exitTokens : nil,
                    layerEvaluationsPerToken: s.generated > 0 ? s.evaluations / s.generated : nil,
                    batchSize: s.batchTokens > 0 ? s.batchWeighted / s.batchTokens : nil,
                    stepMs: s.batchTokens > 0 ? s.stepWeighted / s.batchTokens : nil)
            }
        }
    }
}

extension JobStore {
    /// Ids of the jobs recorded for a spool file name (oldest first).
    public func jobs(source: String) throws -> [Int64] {
        try read { db in try db.values(Int64.self, "SELECT id FROM jobs WHERE source = ? ORDER BY id", [source]) }
    }
}
