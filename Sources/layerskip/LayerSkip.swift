import ArgumentParser
import Daemon
import Foundation

/// The root command. Every subcommand is registered here, in one list.
struct LayerSkip: ParsableCommand {
    static let version = "0.1.0"

    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "layerskip",
            abstract: "Fast LLM generation on CPU servers with LayerSkip (early exit and self-speculative decoding).",
            discussion: """
                Exit codes: 0 success, 1 runtime error (bad model, failed job), 2 usage error, 3 not found;
                `watch` also 4 (job cancelled) and 5 (--timeout reached).
                Set LAYERSKIP_THREADS to limit compute threads (default: all online CPUs).
                """,
            version: "layerskip \(version) (\(KernelReport.current().summary))",
            subcommands: [
                GenerateCommand.self,
                TokenizeCommand.self,
                InitModelCommand.self,
                BenchCommand.self,
                DoctorCommand.self,
                ServeCommand.self,
                RunCommand.self,
                SubmitCommand.self,
                JobsCommand.self,
                ShowCommand.self,
                WorkersCommand.self,
                ResultCommand.self,
                CancelCommand.self,
                RetryCommand.self,
                WatchCommand.self,
                StatsCommand.self,
                TrainCommand.self,
                TrainTokenizerCommand.self,
                EvalCommand.self,
                TuneCommand.self,
                QuantizeCommand.self,
            ]
        )
    }
}

@main
enum Main {
    static func main() {
        OpenBLASSetup.reexecIfGenericKernels()
        var command: ParsableCommand
        do {
            command = try LayerSkip.parseAsRoot()
        } catch {
            // --help and --version end here with code 0; anything else is a usage error.
            if LayerSkip.exitCode(for: error) == .success { LayerSkip.exit(withError: error) }
            standardError(LayerSkip.fullMessage(for: error))
            exit(2)
        }
        do {
            try command.run()
        } catch let error as CLIError {
            standardError("error: \(error.message)")
            exit(error.exitCode)
        } catch let error as ExitCode {
            exit(error.rawValue)
        } catch let error as ValidationError {
            standardError("error: \(error.message)")
            exit(2)
        } catch {
            // `--help` on a subcommand arrives here: the parser returns a help command that throws.
            if LayerSkip.exitCode(for: error) == .success { LayerSkip.exit(withError: error) }
            standardError("error: \(error)")
            exit(1)
        }
    }
}

/// A message for a human on stderr; it may quote file names and job fields, so control
/// characters are shown escaped (newlines kept: messages span lines).
func standardError(_ line: String) {
    let text = TerminalText.escaped(line, keepLayout: true)
    FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
}

/// An error the CLI reports as one line, with a documented exit code.
struct CLIError: Error {
    var message: String
    var exitCode: Int32 = 1
    static func notFound(_ message: String) -> CLIError { CLIError(message: message, exitCode: 3) }
}
