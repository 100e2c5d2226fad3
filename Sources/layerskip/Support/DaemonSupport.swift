import ArgumentParser
import Daemon
import Decoding
import Foundation

/// `--config` for every command that reads or writes the job store.
struct DaemonOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Daemon config file (default: $LAYERSKIP_CONFIG, else /etc/layerskip/layerskip.yaml if present, else a state directory in $LAYERSKIP_STATE_DIRECTORY or ~/.local/state/layerskip).", valueName: "FILE"))
    var config: String?

    func load() throws -> DaemonConfig {
        let env = ProcessInfo.processInfo.environment
        let path = config ?? env["LAYERSKIP_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (FileManager.default.fileExists(atPath: "/etc/layerskip/layerskip.yaml") ? "/etc/layerskip/layerskip.yaml" : nil)
        guard let path else { return ModelLocator.withEmbeddedDefault(DaemonConfig.defaults()) }
        do {
            return ModelLocator.withEmbeddedDefault(try DaemonConfig.load(from: URL(fileURLWithPath: path)))
        } catch let error as DaemonError {
            throw CLIError(message: error.description, exitCode: 2)
        }
    }

    /// - Parameter create: only `run` makes a missing state directory; queries and control
    ///   commands report it instead.
    func openStore(create: Bool = false) throws -> (DaemonConfig, JobStore) {
        let config = try load()
        do {
            return (config, try JobStore.open(config, create: create))
        } catch let error as DaemonError {
            throw CLIError(message: error.description)
        } catch {
            throw CLIError(message: "cannot open the job database \(config.storeDescription): \(error)")
        }
    }
}

/// The version of every `--json` document the job commands print; bump it when a field changes meaning.
let jsonSchemaVersion = 1

/// JSON for scripts from the job commands: sorted snake_case keys, ISO 8601 dates, and a schema version.
func printDocument<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.dateEncodingStrategy = .iso8601
    FileHandle.standardOutput.write(try encoder.encode(value) + Data("\n".utf8))
}

/// One line of human output; control characters in it are shown escaped (`TerminalText`).
func printLine(_ s: String) { FileHandle.standardOutput.write(Data((TerminalText.escaped(s) + "\n").utf8)) }

/// Generated text for a human: its newlines and tabs kept, other control characters escaped.
func printText(_ s: String) { FileHandle.standardOutput.write(Data((TerminalText.escaped(s, keepLayout: true) + "\n").utf8)) }

/// A plain text table: a header, then one line per row, columns padded to their widest cell.
func printTable(_ header: [String], _ rows: [[String]]) {
    // Escaped before measuring, so that the padding is right for what is shown.
    let rows = rows.map { $0.map { TerminalText.escaped($0) } }
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    printLine(line(header))
    rows.forEach { printLine(line($0)) }
}

func parseJobID(_ s: String) throws -> Int64 {
    guard let id = Int64(s.hasPrefix("#") ? String(s.dropFirst()) : s), id > 0 else {
        throw ValidationError("a job id is a positive number, found \"\(s)\"")
    }
    return id
}

func requireJob(_ store: JobStore, _ id: Int64) throws -> JobRecord {
    guard let job = try store.job(id) else { throw CLIError.notFound("no job \(id)") }
    return job
}

func formatProblems(_ problems: [ConfigurationProblem]) -> String {
    problems.map { "  \($0.path): expected \($0.expected), found \($0.found)" }.joined(separator: "\n")
}

extension Double {
    var short: String { String(format: "%.1f", self) }
}

extension Date {
    var shortTime: String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: self)
    }
}
