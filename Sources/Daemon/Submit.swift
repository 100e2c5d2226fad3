import Decoding
import Foundation

extension SpoolLayout {
    /// Drops a job into incoming/ the way the spool expects: a hidden temporary file, fsync, then a
    /// rename under a fresh name (time, random, original name), so the daemon never sees a partial
    /// file and the content-hash rule never mistakes it for an earlier submission.
    /// The first line records the original folder so relative paths keep their meaning.
    public func submit(_ data: Data, from url: URL) throws -> (name: String, contentHash: String) {
        let base = url.deletingLastPathComponent().standardizedFileURL.path
        let content = Data((JobFileValidator.baseDirectoryMarker + base + "\n").utf8) + data
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss"
        while true {
            let name = "\(formatter.string(from: Date()))-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))-\(url.lastPathComponent)"
            if try FileOps.writeAtomically(content, to: incoming.appendingPathComponent(name)) {
                return (name, SHA256.hex(content))
            }
        }
    }
}

extension JobFileValidator {
    /// Validates a job file where it lies (relative paths from its folder), as `submit` and `run` do.
    public static func validate(fileAt url: URL, config: DaemonConfig, registry: StrategyRegistry) -> Result<ResolvedJob, ConfigurationError> {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            return .failure(ConfigurationError([.init(path: url.path, expected: "a readable job file", found: error.localizedDescription)]))
        }
        if data.count > config.maxJobFileBytes {
            return .failure(ConfigurationError([.init(path: url.path, expected: "at most \(config.maxJobFileBytes) bytes", found: "\(data.count) bytes")]))
        }
        let context = JobContext(baseDirectory: url.deletingLastPathComponent(), models: config.models, registry: registry)
        return validate(data, file: url.path, context: context)
    }

    public static func contentHash(_ data: Data) -> String { SHA256.hex(data) }
}
