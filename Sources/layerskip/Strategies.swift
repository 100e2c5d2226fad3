import AutoregressivePlugin
import Decoding
import EarlyExitPlugin
import SelfSpeculativePlugin

/// Every decoding strategy this executable offers — the one place plugins are registered.
enum Strategies {
    static let registry = StrategyRegistry([
        AutoregressiveStrategy.plugin,
        EarlyExitStrategy.plugin,
        SelfSpeculativeStrategy.plugin,
    ])
}
