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
    /// A shared spool's `claimed/WORKER/`: this daemon's files between claim and intake; -1 when
    /// the spool is this daemon's alone.
    let claimed: Int32

    /// - Parameters:
    ///   - lock: take the spool's lock (the daemon); tests of the intake alone need not.
    ///   - sharedAs: the spool is shared by the daemons of one job store (a network filesystem):
    ///     no lock, and each daemon claims a file by renaming it into `claimed/SHAREDAS/` first.
    public init(layout: SpoolLayout, lock: Bool = true, sharedAs worker: String? = nil) throws {
        self.layout = layout
        try FileManager.default.createDirectory(at: layout.root, withIntermediateDirectories: true)
        // The root is the configured path (the administrator's); the folders in it are not.
        root = open(layout.root.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw DaemonError.io("cannot open the spool \(layout.root.path): \(FileOps.errnoText())") }
        var opened: [Int32] = []
        do {
            if lock && worker == nil && flock(root, LOCK_EX | LOCK_NB) != 0 {
                throw DaemonError.io("another layerskip serve already uses the spool \(layout.root.path) (with another state directory); one daemon per spool, unless they share a PostgreSQL store")
            }
            for name in ["incoming", "accepted", "rejected"] {
                opened.append(try Self.openFolder(root, name, layout: layout))
            }
            if let worker {
                let claimedRoot = try Self.openFolder(root, "claimed", layout: layout)
                defer { close(claimedRoot) }
                opened.append(try Self.openFolder(claimedRoot, Self.folderName(worker), layout: layout))
            } else {
                opened.append(-1)
            }
        } catch {
            opened.forEach { if $0 >= 0 { close($0) } }
            close(root)
            throw error
        }
        (incoming, accepted, rejected, claimed) = (opened[0], opened[1], opened[2], opened[3])
    }

    deinit { [incoming, accepted, rejected, claimed, root].forEach { if $0 >= 0 { close($0) } } }

    /// A worker name as one folder name: `/` and other awkward bytes replaced, a hash keeps it unique.
    static func folderName(_ worker: String) -> String {
        let safe = String(worker.unicodeScalars.map { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0)) ? Character($0) : "_" }.prefix(80))
        return safe + "-" + ContentHash.hex(Data(worker.utf8)).prefix(8)
    }

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
        if folders.claimed >= 0 {
            // Files this daemon claimed whose intake failed (the store was away): again first.
            for name in (try? FileOps.list(folders.claimed)) ?? [] where !SpoolLayout.isIgnored(name) {
                do { if try process(name, in: folders.claimed) { count += 1 } } catch {
                    log.error("spool: \(SpoolLayout.displayName(name).0): \(error)")
                }
            }
        }
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) where !SpoolLayout.isIgnored(name) {
            do {
                if try claim(name), try process(name, in: folders.claimed >= 0 ? folders.claimed : folders.incoming) { count += 1 }
            } catch {
                // One bad file must never stop the intake of the others, nor the daemon.
                log.error("spool: \(SpoolLayout.displayName(name).0): \(error)")
            }
        }
        return count
    }

    /// Clears intake marks of jobs whose file has already moved (a crash after the move), and on a
    /// shared spool takes in what this daemon had claimed when it stopped.
    public func recover() throws {
        let shared = folders.claimed >= 0
        let present = Set(try FileOps.list(shared ? folders.claimed : folders.incoming).map { SpoolLayout.displayName($0).0 })
        for job in try store.pendingIntake(worker: shared ? config.worker.name : nil) where !present.contains(job.source) {
            try store.markIntakeDone(job: job.id, storedAs: job.storedAs ?? "")
            log.info("spool: job \(job.id): finished the interrupted intake of \(job.source)")
        }
        if shared {
            for name in try FileOps.list(folders.claimed).sorted(by: { $0.lexicographicallyPrecedes($1) }) where !SpoolLayout.isIgnored(name) {
                do { _ = try process(name, in: folders.claimed) } catch {
                    log.error("spool: \(SpoolLayout.displayName(name).0) (claimed before a stop): \(error)")
                }
            }
        }
    }

    /// On a shared spool, takes `name` for this daemon by renaming it into its claimed/ folder:
    /// of several daemons that try at once, exactly one succeeds; the others find it gone.
    /// On a spool of its own, there is nothing to take.
    private func claim(_ name: [UInt8]) throws -> Bool {
        guard folders.claimed >= 0 else { return true }
        let source = FileOps.cName(name)
        if renameat(folders.incoming, source, folders.claimed, source) == 0 {
            fsync(folders.claimed)
            return true
        }
        // Another daemon took it first.
        if errno == ENOENT { return false }
        throw DaemonError.io("cannot claim \(SpoolLayout.displayName(name).0) into \(layout.root.path)/claimed: \(FileOps.errnoText())")
    }

    /// Takes one file in from `folder` (incoming/, or on a shared spool this daemon's claimed/).
    private func process(_ name: [UInt8], in from: Int32) throws -> Bool {
        let (display, isUTF8) = SpoolLayout.displayName(name)
        let source = FileOps.cName(name)
        guard let st = FileOps.lstat(from, source) else { return false }  // gone meanwhile
        let (hash, outcome) = examine(source, in: from, stat: st, display: display, isUTF8: isUTF8)

        let shared = folders.claimed >= 0
        let intakeKey = shared ? "\(display)\u{1}\(hash)\u{1}\(st.st_ino)\u{1}\(st.st_size)\u{1}\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)" : nil
        var submission = Submission(source: display, contentHash: hash, outcome: outcome, intakeKey: intakeKey,
                                    intakeWorker: shared ? config.worker.name : nil)
        var storedAs: String
        let id: Int64
        if let intakeKey, let recorded = try store.job(intakeKey: intakeKey) {
            // This very file is recorded already (an intake interrupted after the insert).
            id = recorded.id
            if let planned = recorded.storedAs { storedAs = planned } else { storedAs = try freeName(display, rejected: try store.job(id)?.state == .rejected) }
            log.info("spool: job \(id): finishing the interrupted intake of \(display)")
        } else if let existing = try store.existingJob(source: display, contentHash: hash) {
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
        while try !FileOps.renameNoReplace(from, source, folderFD, FileOps.cString(storedAs)) {
            // Someone put a file under the planned name meanwhile: pick another, keep both.
            let next = try freeName(display, rejected: rejected)
            if rejected {
                _ = try? FileOps.renameNoReplace(folderFD, FileOps.cString(storedAs + ".error"), folderFD, FileOps.cString(next + ".error"))
            }
            storedAs = next
        }
        fsync(from)
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
    private func examine(_ path: [CChar], in folder: Int32, stat st: stat, display: String, isUTF8: Bool) -> (String, Result<ResolvedJob, ConfigurationError>) {
        func reject(_ expected: String, _ found: String, hash: String) -> (String, Result<ResolvedJob, ConfigurationError>) {
            (hash, .failure(ConfigurationError([.init(path: "(file)", expected: expected, found: found)])))
        }
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            let target = FileOps.readLink(folder, path)
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
            data = try RegularFile.read(bytes: path, limit: config.maxJobFileBytes, relativeTo: folder,
                                        followSymlinks: false, singleLink: true, displayPath: display)
        } catch {
            return reject("a readable regular file", "a file that \(error.reason)", hash: ContentHash.hex(Data("unreadable:\(st.st_ino)".utf8)))
        }
        let hash = ContentHash.hex(data)
        if !isUTF8 {
            return reject("a file name in UTF-8", "the name \(display) (bytes shown as %XX)", hash: hash)
        }
        let batchFile = OpenAIBatchFile.isBatchFile(display)
        if data.isEmpty {
            return (hash, .failure(ConfigurationError([.init(
                path: "(file)", expected: batchFile ? "an OpenAI batch file (one request per line)" : "a YAML job (model:, strategy:, prompts:, …)",
                found: "an empty file")])))
        }
        let context = JobContext(baseDirectory: layout.incoming, models: config.models, modelDirectories: config.modelDirectories,
                                 registry: registry, origin: .spool(folder: folders.incoming), modelWeights: config.modelWeights)
        if batchFile { return (hash, OpenAIBatchFile.validate(data, file: display, context: context)) }
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
    /// Jobs whose intake has not finished: all of them, or on a shared spool this worker's.
    func pendingIntake(worker: String?) throws -> [(id: Int64, source: String, storedAs: String?)] {
        try read { db in
            try db.fetchAll(JobRow.self, "SELECT * FROM jobs WHERE intake_pending = 1\(worker == nil ? "" : " AND intake_worker = ?") ORDER BY id",
                            worker.map { [$0] } ?? []).map { ($0.id, $0.source, $0.storedAs) }
        }
    }
}
