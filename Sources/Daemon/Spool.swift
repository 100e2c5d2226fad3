#if canImport(Glibc)
import Glibc
#endif
import Decoding
import Foundation
import InputFiles
import Logging

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

/// The spool's three folders, held open for the life of the daemon. Every operation on them goes
/// through these descriptors (`openat`, `renameat2`, `fstatat`), and each was opened with
/// `O_DIRECTORY | O_NOFOLLOW`: members of the spool group can rename or replace the folders, but a
/// symbolic link put in their place is refused, never followed. The root is locked (`flock`) so
/// that a second daemon with another state directory cannot take the same spool.
/// `@unchecked Sendable`: its descriptors are set once in `init` and only read afterwards.
public final class SpoolFolders: @unchecked Sendable {
    public let layout: SpoolLayout
    let root: Int32
    let incoming: Int32
    let accepted: Int32
    let rejected: Int32

    /// - Parameter lock: take the spool's lock (the daemon); tests of the intake alone need not.
    public init(layout: SpoolLayout, lock: Bool = true) throws {
        self.layout = layout
        try FileManager.default.createDirectory(at: layout.root, withIntermediateDirectories: true)
        // The root is the configured path (the administrator's); the folders in it are not.
        root = open(layout.root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw DaemonError.io("cannot open the spool \(layout.root.path): \(FileOps.errnoText())") }
        var opened: [Int32] = []
        do {
            if lock && flock(root, LOCK_EX | LOCK_NB) != 0 {
                throw DaemonError.io("another layerskip serve already uses the spool \(layout.root.path) (with another state directory); one daemon per spool")
            }
            for name in ["incoming", "accepted", "rejected"] {
                opened.append(try Self.openFolder(root, name, layout: layout))
            }
        } catch {
            opened.forEach { close($0) }
            close(root)
            throw error
        }
        (incoming, accepted, rejected) = (opened[0], opened[1], opened[2])
    }

    deinit { [incoming, accepted, rejected, root].forEach { close($0) } }

    private static func openFolder(_ root: Int32, _ name: String, layout: SpoolLayout) throws -> Int32 {
        if mkdirat(root, name, 0o777) != 0 && errno != EEXIST {
            throw DaemonError.io("cannot create the spool folder \(layout.root.path)/\(name): \(FileOps.errnoText())")
        }
        let fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let what = FileOps.lstat(root, FileOps.cString(name)).map { RegularFile.describe(mode: $0.st_mode) } ?? FileOps.errnoText()
            throw DaemonError.io("the spool folder \(layout.root.path)/\(name) is \(what), expected a directory (symbolic links are refused)")
        }
        return fd
    }

    /// Checks that each folder's name still leads to the directory held open. Someone who can
    /// write the spool root may have renamed a folder away or put a link in its place; the
    /// intake then stops (with this error) rather than writing where the new entry points.
    public func verify() throws {
        for (name, fd) in [("incoming", incoming), ("accepted", accepted), ("rejected", rejected)] {
            var held = stat()
            fstat(fd, &held)
            guard let current = FileOps.lstat(root, FileOps.cString(name)) else {
                throw DaemonError.io("the spool folder \(layout.root.path)/\(name) was removed or renamed; intake paused until it is back")
            }
            guard (current.st_mode & S_IFMT) == S_IFDIR else {
                throw DaemonError.io("the spool folder \(layout.root.path)/\(name) was replaced by \(RegularFile.describe(mode: current.st_mode)); intake paused (symbolic links are refused)")
            }
            guard current.st_dev == held.st_dev, current.st_ino == held.st_ino else {
                throw DaemonError.io("the spool folder \(layout.root.path)/\(name) was replaced by another directory; restart the daemon to use it")
            }
        }
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
// `@unchecked Sendable`: used by the spool thread only after init (submit uses its own instance); fields are `let`s.
public final class SpoolIntake: @unchecked Sendable {
    public let layout: SpoolLayout
    let folders: SpoolFolders
    let store: JobStore
    let config: DaemonConfig
    let registry: StrategyRegistry
    let log: Logger
    private let lock = NSLock()
    /// The last spool-level problem logged, so a persisting one is logged once, not every scan.
    private var lastProblem: String?

    public init(folders: SpoolFolders, store: JobStore, config: DaemonConfig, registry: StrategyRegistry, log: Logger) {
        self.layout = folders.layout
        self.folders = folders
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
        do {
            try folders.verify()
            names = try FileOps.list(folders.incoming)
        } catch {
            let problem = "spool: \(error)"
            if problem != lastProblem { log.error("\(problem)") }
            lastProblem = problem
            return 0
        }
        if lastProblem != nil { log.notice("spool: the spool folders are in order again") }
        lastProblem = nil
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
        let present = Set(try FileOps.list(folders.incoming).map { SpoolLayout.displayName($0).0 })
        for job in try store.pendingIntake() where !present.contains(job.source) {
            try store.markIntakeDone(job: job.id, storedAs: job.storedAs ?? "")
            log.info("spool: job \(job.id): finished the interrupted intake of \(job.source)")
        }
    }

    private func process(_ name: [UInt8]) throws -> Bool {
        let (display, isUTF8) = SpoolLayout.displayName(name)
        let source = FileOps.cName(name)
        guard let st = FileOps.lstat(folders.incoming, source) else { return false }  // gone meanwhile
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
        let folderFD = rejected ? folders.rejected : folders.accepted
        if rejected {
            let problems = try store.job(id)?.problems ?? []
            // Read by people with cat and less: what the submitter chose is shown escaped.
            let e = { (s: String) in TerminalText.escaped(s) }
            let text = "layerskip rejected \(e(display)) (job \(id)); nothing of it ran. Problems:\n"
                + problems.map { "  \(e($0.path)): expected \(e($0.expected)), found \(e($0.found))\n" }.joined()
            _ = try FileOps.writeAtomically(Data(text.utf8), in: folderFD, name: storedAs + ".error", replace: true)
        }
        while try !FileOps.renameNoReplace(folders.incoming, source, folderFD, FileOps.cString(storedAs)) {
            // Someone put a file under the planned name meanwhile: pick another, keep both.
            let next = try freeName(display, rejected: rejected)
            if rejected {
                _ = try? FileOps.renameNoReplace(folderFD, FileOps.cString(storedAs + ".error"), folderFD, FileOps.cString(next + ".error"))
            }
            storedAs = next
        }
        fsync(folders.incoming)
        fsync(folderFD)
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
            let target = FileOps.readLink(folders.incoming, path)
            return reject("a regular file (symbolic links are not followed)", "a symbolic link to \(target)",
                          hash: ContentHash.hex(Data("symlink:\(target)".utf8)))
        case S_IFDIR:
            return reject("a regular file", "a directory", hash: ContentHash.hex(Data("directory:\(st.st_ino)".utf8)))
        case S_IFREG:
            break
        default:
            return reject("a regular file", RegularFile.describe(mode: st.st_mode), hash: ContentHash.hex(Data("special:\(st.st_ino)".utf8)))
        }
        let size = Int(st.st_size)
        if size > config.maxJobFileBytes {
            return reject("a job file of at most \(config.maxJobFileBytes) bytes (max_job_file_bytes)", "\(size) bytes",
                          hash: ContentHash.hex(Data("large:\(size):\(st.st_ino):\(st.st_mtim.tv_sec)".utf8)))
        }
        let data: Data
        do {
            // Opened without following links or blocking, and checked again on the descriptor:
            // the entry may have been swapped since the lstat above.
            data = try RegularFile.read(bytes: path, limit: config.maxJobFileBytes, relativeTo: folders.incoming,
                                        followSymlinks: false, singleLink: true, displayPath: display)
        } catch {
            return reject("a readable regular file", "a file that \(error.reason)", hash: ContentHash.hex(Data("unreadable:\(st.st_ino)".utf8)))
        }
        let hash = ContentHash.hex(data)
        if !isUTF8 {
            return reject("a file name in UTF-8", "the name \(display) (bytes shown as %XX)", hash: hash)
        }
        if data.isEmpty {
            return (hash, .failure(ConfigurationError([.init(path: "(file)", expected: "a YAML job (model:, strategy:, prompts:, …)",
                                                            found: "an empty file")])))
        }
        let context = JobContext(baseDirectory: layout.incoming, models: config.models, modelDirectories: config.modelDirectories,
                                 registry: registry, origin: .spool(folder: folders.incoming), modelWeights: config.modelWeights)
        return (hash, JobFileValidator.validate(data, file: "(file)", context: context))
    }

    /// A name free in accepted/ (or free together with NAME.error in rejected/).
    private func freeName(_ display: String, rejected: Bool) throws -> String {
        let folder = rejected ? folders.rejected : folders.accepted
        let base = Self.storableName(display)
        var candidate = base
        var n = 0
        while FileOps.exists(folder, candidate) || (rejected && FileOps.exists(folder, candidate + ".error")) {
            n += 1
            candidate = "\(base).\(n)"
        }
        return candidate
    }
}

extension SpoolIntake {
    /// A name that fits NAME_MAX (255 bytes) with `.error` and a `.N` suffix added: a longer one
    /// keeps its first 180 bytes and gets a hash of the whole name, so two long names stay apart.
    static func storableName(_ name: String) -> String {
        guard name.utf8.count > 200 else { return name }
        var prefix = ""
        for c in name {
            guard prefix.utf8.count + String(c).utf8.count <= 180 else { break }
            prefix.append(c)
        }
        return prefix + "-" + ContentHash.hex(Data(name.utf8)).prefix(12)
    }
}

extension Submission {
    var isRejected: Bool { if case .failure = outcome { return true } else { return false } }
}

extension JobStore {
    func pendingIntake() throws -> [(id: Int64, source: String, storedAs: String?)] {
        try read { db in
            try db.fetchAll(JobRow.self, "SELECT * FROM jobs WHERE intake_pending = 1 ORDER BY id").map { ($0.id, $0.source, $0.storedAs) }
        }
    }
}
