import ArgumentParser
import Daemon
import Engine
import Foundation
import Logging

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: take job files from the spool, run them, keep state and outputs in SQLite.",
        discussion: """
            Drop job files into SPOOL/incoming (write elsewhere, then rename in) or use `layerskip submit`.
            One daemon per state directory. SIGTERM or SIGINT stops between tokens, puts the running job back
            in the queue and exits 0. Speaks the systemd notify protocol when NOTIFY_SOCKET is set.
            Logs go to stderr with journald priority prefixes (<3> error … <7> debug).

            The daemon reads nothing a spooled job names outside the job's own spool folder: model: is a \
            name from the config's models: or a folder under its model_directories, and a prompts_file is a \
            plain file name in incoming/ (`layerskip submit` inlines prompts files). Symbolic links, hard \
            links, FIFOs and devices in the spool are refused; so is a second daemon on the same spool.
            """)

    @OptionGroup var options: DaemonOptions

    func run() throws {
        let config = try options.load()
        ThreadSettings.apply(config.threads > 0 ? config.threads : nil)
        if let precision = config.activations { try ActivationPrecision.select(precision, setting: "activations") }
        let log = Logger.daemon(level: config.logLevel)
        do {
            try Daemon(config: config, registry: Strategies.registry, log: log).run()
        } catch let error as DaemonError {
            throw CLIError(message: error.description)
        }
    }
}
