// store-bench: what the job store costs per prompt, on SQLite and on PostgreSQL.
//
//   swift run -c release store-bench [--postgresql URL] [--jobs N] [--workers K] [--seconds S]
//
// 1. Latency of each store operation a prompt needs (claim, commit an output, finish; and what
//    runs beside them: a lease renewal, a heartbeat, a cancel poll), as medians and 90th
//    percentiles over N one-prompt jobs, on a fresh SQLite file and (with --postgresql, a URL of
//    an empty database or one this tool may fill) on PostgreSQL.
// 2. Queue throughput: K worker processes (this program with --worker) claim, commit and finish
//    trivial one-prompt jobs as fast as the store lets them, for S seconds; jobs/s in all.
// Prints one JSON object per line (so results can be collected), then a summary table.
import AutoregressivePlugin
import Daemon
import Decoding
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var postgres: String?
    var jobs = 300
    var workers = 3
    var seconds = 10.0
    /// --worker STORE UNTIL NAME (internal: one throughput process)
    var worker: (store: String, until: Double, name: String)?
}

let options: Options = {
    var o = Options()
    var args = CommandLine.arguments.dropFirst()
    while let a = args.popFirst() {
        switch a {
        case "--postgresql": o.postgres = args.popFirst()
        case "--jobs": o.jobs = Int(args.popFirst() ?? "") ?? o.jobs
        case "--workers": o.workers = Int(args.popFirst() ?? "") ?? o.workers
        case "--seconds": o.seconds = Double(args.popFirst() ?? "") ?? o.seconds
        case "--worker": o.worker = (args.popFirst() ?? "", Double(args.popFirst() ?? "") ?? 0, args.popFirst() ?? "w")
        case "-h", "--help":
            print("usage: store-bench [--postgresql URL] [--jobs N] [--workers K] [--seconds S]")
            exit(0)
        default:
            FileHandle.standardError.write(Data("store-bench: unknown argument \(a)\n".utf8))
            exit(2)
        }
    }
    return o
}()

let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let model = repository.appendingPathComponent("Tests/Fixtures/tiny-bytelevel-gqa-f32")
let registry = StrategyRegistry([AutoregressiveStrategy.plugin])
let metrics = GenerationMetrics(strategy: "autoregressive", promptTokens: 4, generatedTokens: 32, finishReason: .length,
                                prefillSeconds: 0.01, decodeSeconds: 0.3, layerEvaluations: 128)

func open(_ spec: String) throws -> JobStore {
    spec.hasPrefix("postgres") ? try JobStore(postgresql: PostgresLocation(url: spec), applicationName: "store-bench")
        : try JobStore(url: URL(fileURLWithPath: spec))
}

func submit(_ store: JobStore, _ n: Int) throws {
    let yaml = Data("model: m\nmax_new_tokens: 32\nprompts: [\"a prompt of a few words\"]\n".utf8)
    let context = JobContext(baseDirectory: repository, models: ["m": model], registry: registry)
    let outcome = JobFileValidator.validate(yaml, file: "bench.yaml", context: context)
    for i in 0..<n {
        try store.insert(Submission(source: "bench-\(UUID().uuidString)-\(i).yaml", contentHash: "h\(i)", outcome: outcome),
                         defaultMaxAttempts: 3, intakePending: false, storedAs: nil)
    }
}

func now() -> Double { Date().timeIntervalSince1970 }

if let mode = options.worker {
    let store = try open(mode.store)
    let worker = Worker(name: mode.name, host: mode.name)
    var done = 0
    while now() < mode.until {
        guard let job = try store.claimNext(worker: worker) else { break }
        try store.commitOutput(job, index: 0, text: "output", tokens: Array(0..<32), metrics: metrics)
        try store.finish(job, as: .succeeded)
        done += 1
    }
    print(done)
    exit(0)
}

struct Summary { var backend: String; var p50: [String: Double]; var p90: [String: Double]; var jobsPerSecond: Double }

func percentile(_ xs: [Double], _ p: Double) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? .nan : s[min(s.count - 1, Int(Double(s.count - 1) * p + 0.5))]
}

func measure(_ backend: String, _ spec: String) throws -> Summary {
    let store = try open(spec)
    try submit(store, options.jobs)
    let worker = Worker(name: "bench", host: "bench")
    try store.registerWorker(worker)
    var times: [String: [Double]] = [:]
    func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let t = now()
        defer { times[name, default: []].append((now() - t) * 1000) }
        return try body()
    }
    while let job = try timed("claim", { try store.claimNext(worker: worker) }) {
        try timed("commit_output", { try store.commitOutput(job, index: 0, text: "output", tokens: Array(0..<32), metrics: metrics) })
        _ = try timed("renew_lease", { try store.renewLeases([job], worker: worker) })
        _ = try timed("cancel_poll", { try store.cancelRequested(among: [job.id]) })
        try timed("heartbeat", { try store.heartbeat(worker, load: WorkerLoad(inFlightJobs: 1, sequences: 1, tokensPerSecond: 1)) })
        try timed("finish", { try store.finish(job, as: .succeeded) })
    }
    var p50: [String: Double] = [:], p90: [String: Double] = [:]
    for (k, v) in times.sorted(by: { $0.key < $1.key }) {
        p50[k] = percentile(v, 0.5)
        p90[k] = percentile(v, 0.9)
        print("{\"backend\": \"\(backend)\", \"operation\": \"\(k)\", \"n\": \(v.count), \"median_ms\": \(String(format: "%.3f", p50[k]!)), \"p90_ms\": \(String(format: "%.3f", p90[k]!))}")
    }

    // Throughput: K processes on one queue of trivial jobs.
    try submit(store, 20000)
    let until = now() + options.seconds
    let executable = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
    var processes: [(Process, Pipe)] = []
    for k in 0..<options.workers {
        let p = Process()
        p.executableURL = executable
        p.arguments = ["--worker", spec, String(until), "tp\(k)"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        processes.append((p, pipe))
    }
    var total = 0
    for (p, pipe) in processes {
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        total += Int(out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }
    let rate = Double(total) / options.seconds
    print("{\"backend\": \"\(backend)\", \"operation\": \"queue_throughput\", \"workers\": \(options.workers), \"seconds\": \(options.seconds), \"jobs\": \(total), \"jobs_per_second\": \(String(format: "%.1f", rate))}")
    return Summary(backend: backend, p50: p50, p90: p90, jobsPerSecond: rate)
}

let dir = FileManager.default.temporaryDirectory.appendingPathComponent("store-bench-\(getpid())")
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: dir) }
var summaries = [try measure("sqlite", dir.appendingPathComponent("jobs.sqlite").path)]
if let postgres = options.postgres { summaries.append(try measure("postgresql", postgres)) }

print("")
let ops = ["claim", "commit_output", "finish", "renew_lease", "heartbeat", "cancel_poll"]
print("operation        " + summaries.map { $0.backend.padding(toLength: 22, withPad: " ", startingAt: 0) }.joined())
for op in ops {
    print(op.padding(toLength: 17, withPad: " ", startingAt: 0) + summaries.map {
        String(format: "%6.2f ms (p90 %6.2f)  ", $0.p50[op] ?? .nan, $0.p90[op] ?? .nan)
    }.joined())
}
print("jobs/s, \(options.workers) procs  " + summaries.map { String(format: "%-22.1f", $0.jobsPerSecond) }.joined())
