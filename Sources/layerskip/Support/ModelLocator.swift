import Daemon
import Foundation

/// Where `--model NAME` and a job's `model: NAME` point when NAME is not a folder path.
///
/// `default` is the project's own LayerSkip model (models/default in the repository, trained by
/// `layerskip train --config models/default/train.yaml`). Job files get the daemon config's
/// `models: default:` when the config names one. Otherwise (and always for generate, bench and eval)
/// it is found without any configuration, in this order: $LAYERSKIP_DEFAULT_MODEL; an installed copy
/// beside the executable (PREFIX/bin/layerskip → PREFIX/share/layerskip/models/default); a
/// `models/default` folder in a parent of the executable's folder (a build inside a checkout:
/// .build/release/layerskip); /usr/share/layerskip/models/default.
enum ModelLocator {
    static let defaultName = "default"

    /// The embedded default model's folder, when one of the places above has a config.json.
    static func embeddedDefault(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL? {
        candidates(environment: environment).first { hasConfig($0) }
    }

    static func candidates(environment: [String: String]) -> [URL] {
        var places: [URL] = []
        if let dir = environment["LAYERSKIP_DEFAULT_MODEL"], !dir.isEmpty { places.append(URL(fileURLWithPath: dir, isDirectory: true)) }
        let executable = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        var folder = executable.resolvingSymlinksInPath().deletingLastPathComponent()
        places.append(folder.deletingLastPathComponent().appendingPathComponent("share/layerskip/models/default", isDirectory: true))
        for _ in 0..<6 {
            places.append(folder.appendingPathComponent("models/default", isDirectory: true))
            let parent = folder.deletingLastPathComponent()
            if parent.path == folder.path { break }
            folder = parent
        }
        places.append(URL(fileURLWithPath: "/usr/share/layerskip/models/default", isDirectory: true))
        return places
    }

    static func hasConfig(_ folder: URL) -> Bool {
        FileManager.default.fileExists(atPath: folder.appendingPathComponent("config.json").path)
    }

    /// The named models of a daemon config, with `default` filled in from the embedded model when the
    /// config does not name one.
    static func withEmbeddedDefault(_ config: DaemonConfig) -> DaemonConfig {
        var config = config
        if config.models[defaultName] == nil, let embedded = embeddedDefault() { config.models[defaultName] = embedded }
        return config
    }

    /// `--model` of the direct commands (generate, bench, eval): a folder path, or a model name —
    /// `default`, or one from the daemon config's `models:` when a config is in use.
    static func resolve(_ model: String, configured: [String: URL] = [:]) throws -> URL {
        let isPath = model.contains("/") || model.hasPrefix(".")
        if isPath || FileManager.default.fileExists(atPath: model) {
            return URL(fileURLWithPath: model, isDirectory: true)
        }
        if let named = configured[model] { return named }
        if model == defaultName {
            if let embedded = embeddedDefault() { return embedded }
            let looked = candidates(environment: ProcessInfo.processInfo.environment).map(\.path).joined(separator: ", ")
            throw CLIError(message: "model \"default\": the embedded default model was not found (looked in \(looked)); "
                + "set LAYERSKIP_DEFAULT_MODEL or give a model folder")
        }
        let names = ([defaultName] + configured.keys.sorted()).joined(separator: ", ")
        throw CLIError(message: "model \"\(model)\": not a folder, and not a model name (known: \(names))")
    }
}
