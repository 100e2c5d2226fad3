#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// The daemon's heartbeat on the queue: every third of the lease time (at most every 5 s) it
/// records this worker's load in `workers` (what `layerskip workers` lists) and, when
/// `metrics_textfile` is set, rewrites the Prometheus text file. A store it cannot reach is logged
/// once per outage and tried again at the next beat; leases are renewed by the runner's own watch,
/// not here, so a slow metrics query never costs a lease.
/// `@unchecked Sendable`: `lastTokens`, `lastBeat` and `failing` are touched by `run`'s thread only;
/// `stopped` is read and written under `wake`.
public final class HeartbeatService: DaemonService, @unchecked Sendable {
    public let name = "heartbeat"
    let store: JobStore
    let worker: Worker
    let load: RunnerLoad
    let metricsFile: URL?
    let log: Logger
    let interval: TimeInterval
    private let wake = NSCondition()
    private var stopped = false
    private var lastTokens = 0
    private var lastBeat = Date()
    private var failing = false

    public init(store: JobStore, worker: Worker, load: RunnerLoad, metricsFile: URL?, log: Logger) {
        self.store = store
        self.worker = worker
        self.load = load
        self.metricsFile = metricsFile
        self.log = log
        interval = min(5, worker.leaseSeconds / 3)
    }

    public func run() {
        lastTokens = load.snapshot.tokens
        while true {
            wake.lock()
            if !stopped { _ = wake.wait(until: Date().addingTimeInterval(interval)) }
            let done = stopped
            wake.unlock()
            if done { break }
            beat()
        }
    }

    public func shutdown() {
        wake.lock()
        stopped = true
        wake.signal()
        wake.unlock()
    }

    func beat() {
        let now = Date()
        let s = load.snapshot
        let rate = Double(s.tokens - lastTokens) / max(now.timeIntervalSince(lastBeat), 1e-3)
        lastTokens = s.tokens
        lastBeat = now
        do {
            try store.heartbeat(worker, load: WorkerLoad(inFlightJobs: s.jobs, sequences: s.sequences, tokensPerSecond: rate))
            if let metricsFile { try writeMetrics(to: metricsFile, load: s, rate: rate) }
            if failing { log.notice("heartbeat: the job store answers again") }
            failing = false
        } catch {
            if !failing { log.error("heartbeat: \(error)") }
            failing = true
        }
    }

    /// The Prometheus text exposition format (version 0.0.4), written to a temporary file beside
    /// `url` and renamed over it, so the collector never reads half a file.
    func writeMetrics(to url: URL, load s: RunnerLoad.Snapshot, rate: Double) throws {
        let states = try store.jobCountsByState()
        let me = try store.workers().first { $0.name == worker.name }
        var text = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
            text += "# HELP layerskip_\(name) \(help)\n# TYPE layerskip_\(name) \(type)\n"
            for (labels, value) in samples { text += "layerskip_\(name)\(labels) \(Self.number(value))\n" }
        }
        let label = "worker=\"\(Self.escaped(worker.name))\""
        metric("jobs", "gauge", "Jobs in the store by state (every worker's).",
               JobState.allCases.map { ("{state=\"\($0.rawValue)\"}", Double(states[$0] ?? 0)) })
        metric("queue_depth", "gauge", "Jobs waiting to be claimed.", [("", Double(states[.queued] ?? 0))])
        metric("in_flight_jobs", "gauge", "Jobs this worker is running.", [("{\(label)}", Double(s.jobs))])
        metric("sequences", "gauge", "Sequences in this worker's batch.", [("{\(label)}", Double(s.sequences))])
        metric("tokens_per_second", "gauge", "Tokens this worker generated per second over the last heartbeat.", [("{\(label)}", rate)])
        metric("generated_tokens_total", "counter", "Tokens in the outputs this worker committed.", [("{\(label)}", Double(s.tokens))])
        metric("drafted_tokens_total", "counter", "Draft tokens proposed in those outputs (self-speculation).", [("{\(label)}", Double(s.drafted))])
        metric("accepted_tokens_total", "counter", "Draft tokens accepted in those outputs.", [("{\(label)}", Double(s.accepted))])
        metric("acceptance_ratio", "gauge", "Accepted over drafted tokens in those outputs (0 when none were drafted).",
               [("{\(label)}", s.drafted > 0 ? Double(s.accepted) / Double(s.drafted) : 0)])
        metric("average_batch_size", "gauge", "Mean sequences per decode pass, weighted by tokens, over those outputs.",
               [("{\(label)}", s.batchTokens > 0 ? s.batchWeighted / Double(s.batchTokens) : 0)])
        metric("lease_renewals_total", "counter", "Leases this worker renewed.", [("{\(label)}", Double(me?.leaseRenewals ?? 0))])
        metric("lease_expiries_total", "counter", "Leases of this worker's jobs that expired.", [("{\(label)}", Double(me?.leasesExpired ?? 0))])
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try Data(text.utf8).write(to: temporary)
            guard rename(temporary.path, url.path) == 0 else { throw DaemonError.io(FileOps.errnoText()) }
        } catch {
            unlink(temporary.path)
            throw DaemonError.io("metrics_textfile \(url.path): cannot write it: \(error)")
        }
    }

    static func number(_ v: Double) -> String {
        v.isFinite ? (v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)) : (v.isNaN ? "NaN" : (v > 0 ? "+Inf" : "-Inf"))
    }

    /// A label value: backslash, double quote and newline escaped, as the format requires.
    static func escaped(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}

extension JobStore {
    /// How many jobs are in each state.
    public func jobCountsByState() throws -> [JobState: Int] {
        try read { db in
            var counts: [JobState: Int] = [:]
            for row in try db.rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state", []) {
                let state: String = row["state"]
                let n: Int = row["n"]
                if let s = JobState(rawValue: state) { counts[s] = n }
            }
            return counts
        }
    }
}
