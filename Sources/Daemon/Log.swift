#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// The daemon's swift-log handler: one line per message on stderr. Under systemd each line starts
/// with journald's syslog priority (`<6>accepted …`), which journald turns into the entry's
/// priority; on a terminal the level is written as a word instead (`info: accepted …`).
///
/// Messages quote spool file names and job fields that anyone in the spool group chooses, so
/// control characters in them are shown escaped (`TerminalText`): a journal or terminal line can
/// neither be forged (an embedded newline) nor drive the reader's terminal.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let journald: Bool

    /// Lines from several threads must not interleave: one lock, one write per message.
    private static let output = NSLock()

    public init(level: Logger.Level, journald: Bool = isatty(STDERR_FILENO) == 0) {
        logLevel = level
        self.journald = journald
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// syslog(3) priorities, as journald reads them from a `<N>` prefix.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: return 2
        case .error: return 3
        case .warning: return 4
        case .notice: return 5
        case .info: return 6
        case .debug, .trace: return 7
        }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        var message = "\(event.message)"
        if !fields.isEmpty { message += " " + fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
        let prefix = journald ? "<\(Self.priority(event.level))>" : "\(event.level.rawValue): "
        // One message, one line: a newline inside a quoted file name must not start what would
        // read as another entry (with a priority prefix of the submitter's choosing).
        let text = prefix + TerminalText.escaped(message) + "\n"
        Self.output.lock()
        FileHandle.standardError.write(Data(text.utf8))
        Self.output.unlock()
    }
}

extension Logger {
    /// The logger of `serve` and `run`.
    public static func daemon(level: Logger.Level, journald: Bool = isatty(STDERR_FILENO) == 0) -> Logger {
        Logger(label: "layerskip") { _ in JournalLogHandler(level: level, journald: journald) }
    }

    /// Names `log_level:` accepts, most severe first.
    public static let levelNames = ["critical", "error", "warning", "notice", "info", "debug", "trace"]
}
