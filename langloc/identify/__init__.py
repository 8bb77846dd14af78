from langloc.identify.lape import lape, lape_from_stats, lape_scores
from langloc.identify.neuron_set import NeuronSet
from langloc.identify.lape_files import export_lape, import_lape

__all__ = ["NeuronSet", "export_lape", "import_lape", "lape", "lape_from_stats", "lape_scores"]
