#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// File operations the spool needs that Foundation does not offer: names as raw bytes (a name
/// need not be UTF-8), no following of symbolic links, and renames that never replace.
enum FileOps {
    /// Entry names of a folder, as bytes, without "." and "..".
    static func list(_ directory: String) throws -> [[UInt8]] {
        guard let dir = opendir(directory) else { throw DaemonError.io("cannot read \(directory): \(errnoText())") }
        defer { closedir(dir) }
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

    static func path(_ directory: String, _ name: [UInt8]) -> [CChar] {
        (Array(directory.utf8) + [UInt8(ascii: "/")] + name + [0]).map { CChar(bitPattern: $0) }
    }

    static func cString(_ s: String) -> [CChar] { Array(s.utf8CString) }

    static func lstat(_ path: [CChar]) -> stat? {
        var st = stat()
        return Glibc.lstat(path, &st) == 0 ? st : nil
    }

    static func readLink(_ path: [CChar]) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    /// Reads a regular file without following a symbolic link, at most `limit` bytes.
    static func read(_ path: [CChar], limit: Int) throws -> Data {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw DaemonError.io(errnoText()) }
        defer { close(fd) }
        var data = Data()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw DaemonError.io(errnoText()) }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
            if data.count > limit { throw DaemonError.io("larger than \(limit) bytes") }
        }
        return data
    }

    /// Renames without ever replacing an existing entry (false when `to` exists).
    static func renameNoReplace(_ from: [CChar], _ to: [CChar]) throws -> Bool {
        if renameat2(AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */) == 0 { return true }
        if errno == EEXIST { return false }
        throw DaemonError.io("cannot move \(String(cString: from)) to \(String(cString: to)): \(errnoText())")
    }

    private typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    // Glibc declares renameat2 only under _GNU_SOURCE, which Swift's Glibc module does not set.
    private static let renameat2: RenameAt2 = {
        guard let symbol = dlsym(nil, "renameat2") else { fatalError("this C library has no renameat2 (glibc ≥ 2.28 needed)") }
        return unsafeBitCast(symbol, to: RenameAt2.self)
    }()

    static func exists(_ path: String) -> Bool { lstat(cString(path)) != nil }

    static func fsyncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// Writes a file so that it appears complete or not at all: a hidden temporary file beside it,
    /// fsync, then a rename (replacing nothing unless `replace`), then fsync of the folder.
    static func writeAtomically(_ data: Data, to url: URL, replace: Bool = false) throws -> Bool {
        let dir = url.deletingLastPathComponent().path
        let temp = dir + "/.\(url.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
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
        close(fd)
        guard ok else { unlink(temp); throw DaemonError.io("cannot write \(temp): \(errnoText())") }
        let moved: Bool
        if replace {
            moved = rename(temp, url.path) == 0
            if !moved { let e = errnoText(); unlink(temp); throw DaemonError.io("cannot write \(url.path): \(e)") }
        } else {
            do { moved = try renameNoReplace(cString(temp), cString(url.path)) } catch { unlink(temp); throw error }
            if !moved { unlink(temp) }
        }
        fsyncDirectory(dir)
        return moved
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
