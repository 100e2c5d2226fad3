import AutoregressivePlugin
import Decoding
import EarlyExitPlugin
import SelfSpeculativePlugin

/// The in-process tests' registry: the real plugins, listed here as the executable lists them (the
/// daemon itself never imports a plugin).
let testRegistry = StrategyRegistry([AutoregressiveStrategy.plugin, EarlyExitStrategy.plugin, SelfSpeculativeStrategy.plugin])
