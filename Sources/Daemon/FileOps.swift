#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// File operations the spool needs that Foundation does not offer: names as raw bytes (a name
/// need not be UTF-8), everything relative to an open directory (so a folder swapped for a
/// symbolic link cannot redirect a write), no following of symbolic links, renames that never replace.
enum FileOps {
    /// Entry names of an open directory, as bytes, without "." and "..".
    static func list(_ directory: Int32) throws -> [[UInt8]] {
        // fdopendir takes over the descriptor it is given; give it a duplicate.
        let copy = dup(directory)
        guard copy >= 0, let dir = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw DaemonError.io("cannot read a spool folder: \(errnoText())")
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { p in Array(UnsafeBufferPointer(start: p, count: strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self)))) }
            }
            if name == [46] || name == [46, 46] { continue }
            names.append(name)
        }
        return names
    }

    static func cName(_ name: [UInt8]) -> [CChar] { (name + [0]).map { CChar(bitPattern: $0) } }
    static func cString(_ s: String) -> [CChar] { Array(s.utf8CString) }

    /// `lstat` of an entry of an open directory.
    static func lstat(_ directory: Int32, _ name: [CChar]) -> stat? {
        var st = stat()
        return fstatat(directory, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    static func exists(_ directory: Int32, _ name: String) -> Bool { lstat(directory, cString(name)) != nil }

    static func readLink(_ directory: Int32, _ name: [CChar]) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlinkat(directory, name, &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    /// Renames within or between open directories without ever replacing an entry (false when `to` exists).
    /// A NUL-terminated name as text (invalid UTF-8 repaired).
    static func text(_ name: [CChar]) -> String {
        String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func renameNoReplace(_ fromDirectory: Int32, _ from: [CChar], _ toDirectory: Int32, _ to: [CChar]) throws -> Bool {
        if renameat2(fromDirectory, from, toDirectory, to, 1 /* RENAME_NOREPLACE */) == 0 { return true }
        if errno == EEXIST { return false }
        throw DaemonError.io("cannot move \(text(from)) to \(text(to)): \(errnoText())")
    }

    private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    // Glibc declares renameat2 only under _GNU_SOURCE, which Swift's Glibc module does not set.
    private static let renameat2: RenameAt2 = {
        guard let symbol = dlsym(nil, "renameat2") else { fatalError("this C library has no renameat2 (glibc ≥ 2.28 needed)") }
        return unsafeBitCast(symbol, to: RenameAt2.self)
    }()

    static func fsyncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// Writes `name` in an open directory so that it appears complete or not at all: a hidden
    /// temporary file beside it (created exclusively, never through a link), fsync, a rename
    /// (replacing nothing unless `replace`), then fsync of the directory. Returns false when
    /// `name` exists and `replace` is false.
    static func writeAtomically(_ data: Data, in directory: Int32, name: String, replace: Bool = false, mode: mode_t = 0o644) throws -> Bool {
        // Independent of `name`, which may already be near NAME_MAX.
        let temp = ".layerskip-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 36)).tmp"
        let fd = openat(directory, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw DaemonError.io("cannot create \(temp): \(errnoText())") }
        var ok = data.withUnsafeBytes { buf -> Bool in
            var offset = 0
            while offset < buf.count {
                let n = write(fd, buf.baseAddress! + offset, buf.count - offset)
                if n < 0 { if errno == EINTR { continue }; return false }
                offset += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        let writeError = errnoText()
        close(fd)
        guard ok else { unlinkat(directory, temp, 0); throw DaemonError.io("cannot write \(name): \(writeError)") }
        let moved: Bool
        if replace {
            // Replacing a symbolic link replaces the link itself, never its target.
            moved = renameat(directory, temp, directory, name) == 0
            if !moved { let e = errnoText(); unlinkat(directory, temp, 0); throw DaemonError.io("cannot write \(name): \(e)") }
        } else {
            do { moved = try renameNoReplace(directory, cString(temp), directory, cString(name)) } catch { unlinkat(directory, temp, 0); throw error }
            if !moved { unlinkat(directory, temp, 0) }
        }
        fsync(directory)
        return moved
    }

    /// The same for a path (the user's own `submit`, which runs with the user's rights).
    static func writeAtomically(_ data: Data, to url: URL) throws -> Bool {
        let folder = url.deletingLastPathComponent().path
        let dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw DaemonError.io("cannot open \(folder): \(errnoText())") }
        defer { close(dir) }
        return try writeAtomically(data, in: dir, name: url.lastPathComponent)
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
