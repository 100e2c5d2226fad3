import Foundation

/// Syslog priorities, as journald reads them from a `<N>` prefix on each stderr line.
public enum LogLevel: Int, CaseIterable, Sendable, Comparable {
    case error = 3, warning = 4, notice = 5, info = 6, debug = 7

    public var name: String {
        switch self {
        case .error: return "error"
        case .warning: return "warning"
        case .notice: return "notice"
        case .info: return "info"
        case .debug: return "debug"
        }
    }

    public init?(name: String) {
        guard let level = LogLevel.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = level
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue > b.rawValue }
}

/// Writes one line per message to stderr with journald's priority prefix (`<6>accepted …`), which
/// systemd turns into the entry's priority. On a terminal the level is written as a word instead.
public final class Log: @unchecked Sendable {
    public let level: LogLevel
    private let lock = NSLock()
    private let prefixed: Bool

    public init(level: LogLevel, journald: Bool = isatty(STDERR_FILENO) == 0) {
        self.level = level
        prefixed = journald
    }

    public func log(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level >= self.level else { return }
        // One write per line so lines from several threads never interleave.
        let text = message().split(separator: "\n", omittingEmptySubsequences: false)
            .map { prefixed ? "<\(level.rawValue)>\($0)\n" : "\(level.name): \($0)\n" }.joined()
        lock.lock()
        FileHandle.standardError.write(Data(text.utf8))
        lock.unlock()
    }

    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func notice(_ m: @autoclosure () -> String) { log(.notice, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
}
