#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Why an input file could not be opened or read. The description names the file and says what
/// was expected, e.g. "models/x/config.json: is a FIFO, expected a regular file".
public struct InputFileError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case missing
        /// Not a regular file; the associated text says what it is ("a FIFO", "a directory", …).
        case notRegular(String)
        case tooLarge(size: Int, limit: Int)
        /// A regular file with more than one name: it may be someone else's file, linked in.
        case hardLinked(Int)
        case unreadable(String)
    }

    public let path: String
    public let kind: Kind

    public init(path: String, kind: Kind) {
        self.path = path
        self.kind = kind
    }

    /// The reason without the path, for messages that name the file themselves.
    public var reason: String {
        switch kind {
        case .missing: return "no such file"
        case let .notRegular(what): return "is \(what), expected a regular file"
        case let .tooLarge(size, limit): return "is \(size) bytes, expected at most \(limit)"
        case let .hardLinked(n): return "has \(n) hard links, expected a file of its own (a hard link may be another user's file)"
        case let .unreadable(why): return "cannot be read: \(why)"
        }
    }

    public var description: String { "\(path): \(reason)" }
}

/// Opening and reading inputs that someone else may have placed: a FIFO, a device or a directory
/// where a file is expected must be an error, never a read that blocks forever or never ends.
///
/// Every open uses `O_NONBLOCK` (opening a FIFO for reading then returns at once instead of
/// waiting for a writer) and `fstat` on the descriptor, so what is checked is what is read.
public enum RegularFile {
    /// What an `st_mode` is, in words for messages.
    public static func describe(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "a special file"
        }
    }

    /// An open descriptor of a regular file and its size. The caller closes `fd`.
    /// - Parameters:
    ///   - directory: open `path` relative to this directory descriptor (`openat`); `AT_FDCWD` for none.
    ///   - followSymlinks: false adds `O_NOFOLLOW`, so a symbolic link is reported instead of followed.
    public static func open(_ path: String, relativeTo directory: Int32 = AT_FDCWD, followSymlinks: Bool = true,
                            singleLink: Bool = false, displayPath: String? = nil) throws(InputFileError) -> (fd: Int32, size: Int) {
        try open(bytes: Array(path.utf8CString), relativeTo: directory, followSymlinks: followSymlinks, singleLink: singleLink,
                 displayPath: displayPath ?? path)
    }

    /// The same for a path given as bytes (a file name need not be UTF-8); `displayPath` names it in errors.
    /// - Parameter singleLink: refuse a file with more than one hard link (for files that someone
    ///   with fewer rights placed: linking in a file they cannot read must not make us read it).
    public static func open(bytes path: [CChar], relativeTo directory: Int32 = AT_FDCWD, followSymlinks: Bool = true,
                            singleLink: Bool = false, displayPath shown: String) throws(InputFileError) -> (fd: Int32, size: Int) {
        var flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY
        if !followSymlinks { flags |= O_NOFOLLOW }
        let fd = openat(directory, path, flags)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ENOENT, ENOTDIR: throw InputFileError(path: shown, kind: .missing)
            case ELOOP where !followSymlinks: throw InputFileError(path: shown, kind: .notRegular("a symbolic link"))
            case ENXIO: throw InputFileError(path: shown, kind: .notRegular("a socket or a device without a reader"))
            default: throw InputFileError(path: shown, kind: .unreadable(String(cString: strerror(code))))
            }
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let why = String(cString: strerror(errno))
            Glibc.close(fd)
            throw InputFileError(path: shown, kind: .unreadable(why))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw InputFileError(path: shown, kind: .notRegular(describe(mode: st.st_mode)))
        }
        if singleLink && st.st_nlink > 1 {
            Glibc.close(fd)
            throw InputFileError(path: shown, kind: .hardLinked(Int(st.st_nlink)))
        }
        // Regular files never block; clear the flag so reads behave as usual.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(st.st_size))
    }

    /// The whole content of a regular file of at most `limit` bytes. The size is checked before
    /// reading and the read stops at `limit` + 1 bytes, so a file that grows meanwhile is refused too.
    public static func read(_ path: String, limit: Int, relativeTo directory: Int32 = AT_FDCWD, followSymlinks: Bool = true,
                            singleLink: Bool = false, displayPath: String? = nil) throws(InputFileError) -> Data {
        try read(bytes: Array(path.utf8CString), limit: limit, relativeTo: directory, followSymlinks: followSymlinks,
                 singleLink: singleLink, displayPath: displayPath ?? path)
    }

    /// The same for a path given as bytes (a file name need not be UTF-8); `displayPath` names it in errors.
    public static func read(bytes path: [CChar], limit: Int, relativeTo directory: Int32 = AT_FDCWD, followSymlinks: Bool = true,
                            singleLink: Bool = false, displayPath shown: String) throws(InputFileError) -> Data {
        let (fd, size) = try open(bytes: path, relativeTo: directory, followSymlinks: followSymlinks, singleLink: singleLink, displayPath: shown)
        defer { Glibc.close(fd) }
        guard size <= limit else { throw InputFileError(path: shown, kind: .tooLarge(size: size, limit: limit)) }
        var data = Data(count: size)
        var filled = 0
        while true {
            if filled == data.count {
                // Read one byte past the size seen by fstat: a file that grew must not go unnoticed.
                guard data.count <= limit else { throw InputFileError(path: shown, kind: .tooLarge(size: data.count, limit: limit)) }
                data.count += max(4096, min(data.count, 1 << 20))
            }
            let n = data.withUnsafeMutableBytes { raw in Glibc.read(fd, raw.baseAddress! + filled, raw.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                throw InputFileError(path: shown, kind: .unreadable(String(cString: strerror(errno))))
            }
            if n == 0 { break }
            filled += n
        }
        guard filled <= limit else { throw InputFileError(path: shown, kind: .tooLarge(size: filled, limit: limit)) }
        data.count = filled
        return data
    }

    /// What is at `path` without following a final symbolic link; nil when nothing is there.
    public static func kind(of path: String) -> String? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return describe(mode: st.st_mode)
    }
}
