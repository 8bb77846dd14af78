from langloc.stats.activation_stats import ActivationStats, CollectConfig, collect, read_run, save_run
from langloc.stats.counters import ActivationCounter

__all__ = ["ActivationStats", "ActivationCounter", "CollectConfig", "collect", "read_run", "save_run"]
