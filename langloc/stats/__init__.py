from langloc.stats.activation_stats import ActivationStats, collect, read_run, save_run
from langloc.stats.counters import ActivationCounter

__all__ = ["ActivationStats", "ActivationCounter", "collect", "read_run", "save_run"]
