import Engine
import Foundation

/// A configured strategy, ready to generate with one model. Instances hold only configuration
/// and per-call scratch, so one can serve many prompts (one at a time).
public protocol Generator: AnyObject {
    /// KV-cache positions a request needs (prompt + new tokens + any speculative overshoot).
    func requiredPositions(for request: GenerationRequest) -> Int
    /// Generates into `output` using `cache` (reset first; capacity ≥ requiredPositions).
    func generate(_ request: GenerationRequest, cache: KVCache, output: GenerationOutput) -> GenerationMetrics
}

/// A decoding-strategy plugin. Each owns its typed configuration and validates it against the
/// model's configuration (no weights needed, so job files can be checked before anything loads).
public protocol DecodingStrategy: Generator {
    associatedtype Configuration: StrategyConfiguration
    /// As written in job files (`strategy: NAME`).
    static var name: String { get }
    static var summary: String { get }
    static func problems(_ configuration: Configuration, model: ModelConfig, path: String) -> [ConfigurationProblem]
    init(configuration: Configuration, model: LlamaModel)
}

/// A type-erased plugin entry for the registry.
public struct StrategyPlugin: Sendable {
    public let name: String
    public let summary: String
    public let keys: [String]
    private let check: @Sendable ([String: ConfigValue], ModelConfig, String) -> [ConfigurationProblem]
    private let build: @Sendable ([String: ConfigValue], LlamaModel, String) throws -> Generator

    public init<S: DecodingStrategy>(_ type: S.Type) {
        name = S.name
        summary = S.summary
        keys = S.Configuration.keys
        check = { options, model, path in
            switch OptionsDecoder.decode(S.Configuration.self, from: options, path: path) {
            case let .failure(error): return error.problems
            case let .success(configuration): return S.problems(configuration, model: model, path: path)
            }
        }
        build = { options, model, path in
            switch OptionsDecoder.decode(S.Configuration.self, from: options, path: path) {
            case let .failure(error): throw error
            case let .success(configuration):
                let problems = S.problems(configuration, model: model.config, path: path)
                if !problems.isEmpty { throw ConfigurationError(problems) }
                return S(configuration: configuration, model: model)
            }
        }
    }

    public func problems(_ options: [String: ConfigValue], model: ModelConfig, path: String = "strategy") -> [ConfigurationProblem] {
        check(options, model, path)
    }

    public func make(_ options: [String: ConfigValue], model: LlamaModel, path: String = "strategy") throws -> Generator {
        try build(options, model, path)
    }
}

/// The strategies an executable offers. The executable builds it from one explicit list; the
/// daemon and the CLI only see this registry, never a plugin module.
public struct StrategyRegistry: Sendable {
    public let plugins: [StrategyPlugin]

    public init(_ plugins: [StrategyPlugin]) {
        var seen = Set<String>()
        for p in plugins { precondition(seen.insert(p.name).inserted, "strategy \(p.name) registered twice") }
        self.plugins = plugins
    }

    public var names: [String] { plugins.map(\.name) }

    public func plugin(named name: String) -> StrategyPlugin? { plugins.first { $0.name == name } }

    /// Every problem with a strategy spec for this model (unknown name, unknown keys, types, ranges).
    public func problems(_ spec: StrategySpec, model: ModelConfig, path: String = "strategy") -> [ConfigurationProblem] {
        guard let plugin = plugin(named: spec.name) else {
            return [ConfigurationProblem(path: "\(path).name", expected: "one of \(names.joined(separator: ", "))",
                                         found: "\"\(spec.name)\"")]
        }
        return plugin.problems(spec.options, model: model, path: path)
    }

    public func make(_ spec: StrategySpec, model: LlamaModel, path: String = "strategy") throws -> Generator {
        guard let plugin = plugin(named: spec.name) else {
            throw ConfigurationError(problems(spec, model: model.config, path: path))
        }
        return try plugin.make(spec.options, model: model, path: path)
    }
}
