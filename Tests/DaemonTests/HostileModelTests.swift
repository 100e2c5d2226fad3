#if canImport(Glibc)
import Glibc
#endif
import Foundation
import XCTest

/// Issue defects 1–4: model folders built to crash, wedge or exhaust the process. Each must end
/// in a clear error naming the file and the field, quickly, from `generate` and from the daemon
/// (which keeps serving, and runs the next good job).
final class HostileModelTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws { root = try Paths.temporaryDirectory() }
    override func tearDown() { try? FileManager.default.removeItem(at: root) }

    /// name → (how the model is made bad, what the error must say)
    func hostileModels() throws -> [(name: String, dir: URL, expected: [String])] {
        let models = root.appendingPathComponent("models")
        var out: [(String, URL, [String])] = []
        func add(_ name: String, _ expected: [String], _ alter: (URL) throws -> Void) throws {
            out.append((name, try HostileModel.make(models, name, alter), expected))
        }
        // 1. sizes that overflowed 64-bit arithmetic (SIGILL traps before).
        try add("header-length-max", ["model.safetensors", "header length 18446744073709551615", "limit of 100000000"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"), header: "{}", length: UInt64.max)
        }
        try add("header-length-2^63", ["model.safetensors", "header length 9223372036854775808"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"), header: "{}", length: 1 << 63)
        }
        try add("shape-1e14", ["model.safetensors", "model.embed_tokens.weight", "non-negative integer"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"),
                                         header: #"{"model.embed_tokens.weight":{"dtype":"F32","shape":[1e14,1e14],"data_offsets":[0,4]}}"#,
                                         data: Data(count: 4))
        }
        try add("shape-overflow", ["model.safetensors", "model.embed_tokens.weight", "more elements than fit in 64 bits"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"),
                                         header: #"{"model.embed_tokens.weight":{"dtype":"F32","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}}"#)
        }
        try add("config-head-dim", ["config.json", "head_dim", "at most 65536"]) {
            try HostileModel.editConfig($0) { c in c["head_dim"] = 1e14 }
        }
        try add("config-heads", ["config.json", "num_attention_heads", "at most 65536"]) {
            try HostileModel.editConfig($0) { c in c["num_attention_heads"] = 100_000; c["num_key_value_heads"] = 100_000 }
        }
        // 2. FIFOs where files belong (generate blocked forever before).
        for file in ["model.safetensors", "config.json", "tokenizer.json"] {
            try add("fifo-\(file)", [file, "is a FIFO, expected a regular file"]) { try HostileModel.fifo($0, file) }
        }
        try add("directory-config", ["config.json", "is a directory, expected a regular file"]) {
            try FileManager.default.removeItem(at: $0.appendingPathComponent("config.json"))
            try FileManager.default.createDirectory(at: $0.appendingPathComponent("config.json"), withIntermediateDirectories: false)
        }
        try add("fifo-shard", ["model-00001-of-00001.safetensors", "is a FIFO, expected a regular file"]) { dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
            try #"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00001.safetensors"}}"#
                .write(to: dir.appendingPathComponent("model.safetensors.index.json"), atomically: true, encoding: .utf8)
            try HostileModel.fifo(dir, "model-00001-of-00001.safetensors")
        }
        // 4. what the safetensors format forbids, and config values that make no sense.
        try add("offsets-overlap", ["model.safetensors", "overlap the previous tensor"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"),
                                         header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                                         data: Data(count: 12))
        }
        try add("offsets-gap", ["model.safetensors", "leave a gap"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"),
                                         header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                                         data: Data(count: 12))
        }
        try add("duplicate-tensor", ["model.safetensors", "\"a\" appears twice"]) {
            try HostileModel.safetensors($0.appendingPathComponent("model.safetensors"),
                                         header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                                         data: Data(count: 8))
        }
        try add("duplicate-config-key", ["config.json", "\"hidden_size\" appears twice"]) { dir in
            let url = dir.appendingPathComponent("config.json")
            let text = try String(contentsOf: url, encoding: .utf8)
            try text.replacingOccurrences(of: "\"hidden_size\": 64,", with: "\"hidden_size\": 64, \"hidden_size\": 128,")
                .write(to: url, atomically: true, encoding: .utf8)
        }
        try add("eps-zero", ["config.json", "rms_norm_eps", "positive"]) { try HostileModel.editConfig($0) { $0["rms_norm_eps"] = 0 } }
        try add("theta-negative", ["config.json", "rope_theta", "positive"]) {
            try HostileModel.editConfig($0) { c in c["rope_parameters"] = nil; c["rope_theta"] = -1 }
        }
        return out
    }

    func testGenerateRefusesEachHostileModelQuicklyAndClearly() throws {
        for (name, dir, expected) in try hostileModels() {
            let r = try runBounded(["generate", "--model", dir.path, "--max-new-tokens", "2", "hello"], timeout: 30)
            XCTAssertFalse(r.timedOut, "\(name): hung (\(r.summary))")
            XCTAssertNil(r.signal, "\(name): crashed (\(r.summary))")
            XCTAssertEqual(r.status, 1, "\(name): \(r.summary)")
            for needle in expected { XCTAssertTrue(r.stderr.contains(needle), "\(name): lacks \"\(needle)\": \(r.stderr)") }
            XCTAssertLessThan(r.seconds, 10, name)
        }
    }

    /// Defect 3: a catastrophic pattern in tokenizer.json ends with an error naming the
    /// pattern, in bounded time, instead of pinning the process.
    func testCatastrophicRegexIsBounded() throws {
        let dir = try HostileModel.make(root, "regex-bomb") { try HostileModel.splitPattern($0, "(((((a*)*)*)*)*)*b") }
        for count in [24, 46, 4000] {
            let r = try runBounded(["generate", "--model", dir.path, "--max-new-tokens", "2", String(repeating: "a", count: count)], timeout: 30)
            XCTAssertFalse(r.timedOut, r.summary)
            XCTAssertEqual(r.status, 1, r.summary)
            XCTAssertTrue(r.stderr.contains("tokenizer.json: pre_tokenizer.pattern.Regex"), r.stderr)
            XCTAssertTrue(r.stderr.contains("catastrophic backtracking"), r.stderr)
            XCTAssertLessThan(r.seconds, 10, "\(count) a's: \(r.seconds) s")
        }
        // The same file's pattern on text it handles quickly still works.
        let ok = try runBounded(["tokenize", "--model", dir.path, "--json", "bab"], timeout: 30)
        XCTAssertEqual(ok.status, 0, ok.summary)
        // The Llama 3 pattern over a long run of spaces (an argument is at most 128 KiB).
        let spaces = try runBounded(["tokenize", "--model", Paths.tinyModel.path, String(repeating: " ", count: 120_000)], timeout: 60)
        XCTAssertEqual(spaces.status, 0, String(spaces.summary.prefix(500)))
    }

    /// Defect 4: header size is capped as the format caps it, and parse memory stays a small
    /// multiple of the header (a 50 MB header cost 1.1 GB before).
    func testHeaderMemoryIsBounded() throws {
        let big = try HostileModel.make(root, "header-50mb") { dir in
            var header = "{"
            header.reserveCapacity(52 << 20)
            var i = 0
            while header.utf8.count < 50_000_000 {
                header += "\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(4 * i),\(4 * i + 4)]},"
                i += 1
            }
            header.removeLast()
            header += "}"
            try HostileModel.safetensors(dir.appendingPathComponent("model.safetensors"), header: header, data: Data(count: 4 * i))
        }
        let r = try runBounded(["generate", "--model", big.path, "--max-new-tokens", "2", "hello"], timeout: 120, measureMemory: true)
        XCTAssertEqual(r.status, 1, r.summary)
        XCTAssertTrue(r.stderr.contains("model.embed_tokens.weight"), r.stderr)
        // The file is mapped (its 50 MB header is touched once); the parsed entries, one name
        // and one shape per tensor plus the table of them, take a few times the header for
        // these 52-byte entries. Before, the same file took 1.1 GB.
        XCTAssertGreaterThan(r.maxRSSBytes, 0)
        XCTAssertLessThan(r.maxRSSBytes, 400 << 20, "peak RSS \(r.maxRSSBytes >> 20) MiB for a 50 MB header")
        print("50 MB header: peak RSS \(r.maxRSSBytes >> 20) MiB, \(String(format: "%.1f", r.seconds)) s")

        // Over the format's 100 MB limit: refused from the length alone (a sparse file).
        let over = try HostileModel.make(root, "header-101mb") { dir in
            let url = dir.appendingPathComponent("model.safetensors")
            try HostileModel.safetensors(url, header: "{", length: 101_000_000)
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: 101_000_100)
            try handle.close()
        }
        let refused = try runBounded(["generate", "--model", over.path, "hello"], timeout: 30, measureMemory: true)
        XCTAssertEqual(refused.status, 1, refused.summary)
        XCTAssertTrue(refused.stderr.contains("over the format's limit of 100000000 bytes"), refused.stderr)
        XCTAssertLessThan(refused.maxRSSBytes, 100 << 20)
    }

    /// The daemon with every hostile model at once: each job ends rejected or failed with the
    /// file named, the daemon never crashes or wedges, cancel and SIGTERM still work, and a good
    /// job afterwards succeeds.
    func testDaemonSurvivesHostileModels() throws {
        let models = try hostileModels()
        let regex = try HostileModel.make(root.appendingPathComponent("models"), "regex-bomb") {
            try HostileModel.splitPattern($0, "(((((a*)*)*)*)*)*b")
        }
        let install = try Installation(extraConfig: "model_directories: [\(root.appendingPathComponent("models").path)]")
        try install.start(environment: ["SWIFT_BACKTRACE": "enable=no"])
        for (name, _, _) in models {
            try install.drop("\(name).yaml", jobYAML().replacingOccurrences(of: "model: tiny", with: "model: \(name)"))
        }
        try install.drop("regex.yaml", jobYAML(promptPrefix: String(repeating: "a", count: 46))
            .replacingOccurrences(of: "model: tiny", with: "model: \(regex.path)"))
        let expectedCount = models.count + 1
        try waitFor("every hostile job to end", timeout: 120) {
            let jobs = try install.jobs()
            return jobs.count == expectedCount && jobs.allSatisfy { ["rejected", "failed"].contains($0["state"] as? String ?? "") }
        }
        XCTAssertTrue(install.daemon?.isRunning ?? false, "the daemon died: \(install.lastLog)")
        for job in try install.jobs() {
            let id = job["id"] as! Int
            let source = job["source"] as! String
            let detail = try install.job(id)
            let text = "\(detail["error"] ?? "")\(detail["problems"] ?? "")"
            let name = String(source.dropLast(".yaml".count))
            if let (_, _, expected) = models.first(where: { $0.name == name }) {
                XCTAssertTrue(text.contains(expected[0]), "\(source): \(text)")
            } else {
                XCTAssertTrue(text.contains("catastrophic backtracking"), "\(source): \(text)")
            }
        }
        XCTAssertFalse(install.lastLog.contains("Fatal error"), install.lastLog)
        try install.drop("good.yaml", jobYAML())
        try waitFor("the good job", timeout: 60) {
            try install.jobs().contains { $0["source"] as? String == "good.yaml" && $0["state"] as? String == "succeeded" }
        }
        XCTAssertEqual(install.stop(SIGTERM), 0)
    }
}
