#if canImport(Glibc)
import GRDB
import Glibc
#endif
import Decoding
import Foundation

/// The spool's folders. A file counts as submitted once it has been *renamed* into incoming/
/// (write it elsewhere or under an ignored name first); files being written are ignored by name:
/// dotfiles, `*.tmp`, `*~` and `*.swp`.
public struct SpoolLayout: Sendable {
    public let root: URL
    public var incoming: URL { root.appendingPathComponent("incoming", isDirectory: true) }
    public var accepted: URL { root.appendingPathComponent("accepted", isDirectory: true) }
    public var rejected: URL { root.appendingPathComponent("rejected", isDirectory: true) }

    public init(root: URL) { self.root = root }

    public func create() throws {
        for dir in [incoming, accepted, rejected] {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        }
    }

    public static func isIgnored(_ name: [UInt8]) -> Bool {
        if name.first == UInt8(ascii: ".") { return true }
        for suffix in [".tmp", "~", ".swp"] where name.count >= suffix.utf8.count && name.suffix(suffix.utf8.count).elementsEqual(suffix.utf8) {
            return true
        }
        return false
    }

    /// The name as text: itself when it is UTF-8, else with each byte that is not escaped as %XX.
    public static func displayName(_ name: [UInt8]) -> (String, isUTF8: Bool) {
        if let s = String(validating: name, as: UTF8.self) { return (s, true) }
        var out = ""
        for b in name {
            if b < 0x80 && b != UInt8(ascii: "%") { out.append(Character(UnicodeScalar(b))) } else { out += String(format: "%%%02X", b) }
        }
        return (out, false)
    }
}

/// Moves each file from incoming/ into the job store and then to accepted/ or rejected/.
///
/// Crash safety: the job row is committed (marked intake-pending, with the name it will get)
/// before the file moves, and the mark is cleared after. A crash in between leaves the file in
/// incoming/ with a pending row of the same name and content, and the next scan finishes the move
/// instead of recording a second job.
///
/// The content-hash rule: a file whose name *and* SHA-256 match a job already recorded is the same
/// submission again; it is not run a second time but moved to rejected/ with a `.error` naming the
/// first job. The same content under another name is a new job (`layerskip submit` always
/// picks a fresh name). Nothing is deleted: every file ends in accepted/ or rejected/, renamed
/// with `.1`, `.2`, … if the name is taken there.
public final class SpoolIntake: @unchecked Sendable {
    public let layout: SpoolLayout
    let store: JobStore
    let config: DaemonConfig
    let registry: StrategyRegistry
    let log: Log
    private let lock = NSLock()

    public init(layout: SpoolLayout, store: JobStore, config: DaemonConfig, registry: StrategyRegistry, log: Log) {
        self.layout = layout
        self.store = store
        self.config = config
        self.registry = registry
        self.log = log
    }

    /// Processes every eligible file in incoming/; returns how many were taken in.
    @discardableResult
    public func scan() -> Int {
        lock.lock()
        defer { lock.unlock() }
        let names: [[UInt8]]
        do { names = try FileOps.list(layout.incoming.path) } catch {
            log.error("spool: \(error)")
            return 0
        }
        var count = 0
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) where !SpoolLayout.isIgnored(name) {
            do {
                if try process(name) { count += 1 }
            } catch {
                // One bad file must never stop the intake of the others, nor the daemon.
                log.error("spool: \(SpoolLayout.displayName(name).0): \(error)")
            }
        }
        return count
    }

    /// Clears intake marks of jobs whose file has already moved (a crash after the move).
    public func recover() throws {
        let present = Set(try FileOps.list(layout.incoming.path).map { SpoolLayout.displayName($0).0 })
        for job in try store.pendingIntake() where !present.contains(job.source) {
            try store.markIntakeDone(job: job.id, storedAs: job.storedAs ?? "")
            log.info("spool: job \(job.id): finished the interrupted intake of \(job.source)")
        }
    }

    private func process(_ name: [UInt8]) throws -> Bool {
        let (display, isUTF8) = SpoolLayout.displayName(name)
        let source = FileOps.path(layout.incoming.path, name)
        guard let st = FileOps.lstat(source) else { return false }  // gone meanwhile
        let (hash, outcome) = examine(source, stat: st, display: display, isUTF8: isUTF8)

        var submission = Submission(source: display, contentHash: hash, outcome: outcome)
        var storedAs: String
        let id: Int64
        if let existing = try store.existingJob(source: display, contentHash: hash) {
            if existing.intakePending, let planned = try store.storedName(job: existing.id) {
                id = existing.id
                storedAs = planned
                log.info("spool: job \(id): finishing the interrupted intake of \(display)")
            } else {
                submission.outcome = .failure(ConfigurationError([.init(
                    path: "(file)", expected: "a new submission (a new name or new content)",
                    found: "the same name and content as job \(existing.id), which is not run again")]))
                storedAs = try freeName(display, rejected: true)
                id = try store.insert(submission, defaultMaxAttempts: config.maxAttempts, intakePending: true, storedAs: storedAs)
            }
        } else {
            storedAs = try freeName(display, rejected: submission.isRejected)
            id = try store.insert(submission, defaultMaxAttempts: config.maxAttempts, intakePending: true, storedAs: storedAs)
        }
        let rejected = try store.job(id)?.state == .rejected
        let folder = rejected ? layout.rejected : layout.accepted
        if rejected {
            let problems = try store.job(id)?.problems ?? []
            let text = "layerskip rejected \(display) (job \(id)); nothing of it ran. Problems:\n"
                + problems.map { "  \($0.path): expected \($0.expected), found \($0.found)\n" }.joined()
            _ = try FileOps.writeAtomically(Data(text.utf8), to: folder.appendingPathComponent(storedAs + ".error"), replace: true)
        }
        while try !FileOps.renameNoReplace(source, FileOps.cString(folder.appendingPathComponent(storedAs).path)) {
            // Someone put a file under the planned name meanwhile: pick another, keep both.
            let next = try freeName(display, rejected: rejected)
            if rejected {
                try? FileManager.default.moveItem(at: folder.appendingPathComponent(storedAs + ".error"),
                                                  to: folder.appendingPathComponent(next + ".error"))
            }
            storedAs = next
        }
        FileOps.fsyncDirectory(layout.incoming.path)
        FileOps.fsyncDirectory(folder.path)
        try store.markIntakeDone(job: id, storedAs: storedAs)
        if rejected {
            log.warning("spool: rejected \(display) as job \(id) (see \(folder.appendingPathComponent(storedAs + ".error").path))")
        } else {
            log.info("spool: accepted \(display) as job \(id)")
        }
        return true
    }

    /// Hashes and validates one entry of incoming/ without following links or reading huge files.
    private func examine(_ path: [CChar], stat st: stat, display: String, isUTF8: Bool) -> (String, Result<ResolvedJob, ConfigurationError>) {
        func reject(_ expected: String, _ found: String, hash: String) -> (String, Result<ResolvedJob, ConfigurationError>) {
            (hash, .failure(ConfigurationError([.init(path: "(file)", expected: expected, found: found)])))
        }
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            let target = FileOps.readLink(path)
            return reject("a regular file (symbolic links are not followed)", "a symbolic link to \(target)",
                          hash: SHA256.hex(Data("symlink:\(target)".utf8)))
        case S_IFDIR:
            return reject("a regular file", "a directory", hash: SHA256.hex(Data("directory:\(st.st_ino)".utf8)))
        case S_IFREG:
            break
        default:
            return reject("a regular file", "a special file (device, FIFO or socket)", hash: SHA256.hex(Data("special:\(st.st_ino)".utf8)))
        }
        let size = Int(st.st_size)
        if size > config.maxJobFileBytes {
            return reject("a job file of at most \(config.maxJobFileBytes) bytes (max_job_file_bytes)", "\(size) bytes",
                          hash: SHA256.hex(Data("large:\(size):\(st.st_ino):\(st.st_mtim.tv_sec)".utf8)))
        }
        let data: Data
        do { data = try FileOps.read(path, limit: config.maxJobFileBytes) } catch {
            return reject("a readable file", "\(error)", hash: SHA256.hex(Data("unreadable:\(st.st_ino)".utf8)))
        }
        let hash = SHA256.hex(data)
        if !isUTF8 {
            return reject("a file name in UTF-8", "the name \(display) (bytes shown as %XX)", hash: hash)
        }
        if data.isEmpty {
            return (hash, .failure(ConfigurationError([.init(path: "(file)", expected: "a YAML job (model:, strategy:, prompts:, …)",
                                                            found: "an empty file")])))
        }
        let context = JobContext(baseDirectory: layout.incoming, models: config.models, registry: registry)
        return (hash, JobFileValidator.validate(data, file: "(file)", context: context))
    }

    /// A name free in accepted/ (or free together with NAME.error in rejected/).
    private func freeName(_ display: String, rejected: Bool) throws -> String {
        let folder = rejected ? layout.rejected : layout.accepted
        var candidate = display
        var n = 0
        while FileOps.exists(folder.appendingPathComponent(candidate).path)
            || (rejected && FileOps.exists(folder.appendingPathComponent(candidate + ".error").path)) {
            n += 1
            candidate = "\(display).\(n)"
        }
        return candidate
    }
}

extension Submission {
    var isRejected: Bool { if case .failure = outcome { return true } else { return false } }
}

extension JobStore {
    func pendingIntake() throws -> [(id: Int64, source: String, storedAs: String?)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, source, stored_as FROM jobs WHERE intake_pending = 1").map {
                ($0["id"], $0["source"], $0["stored_as"])
            }
        }
    }
}
