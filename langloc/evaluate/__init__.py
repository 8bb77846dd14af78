from langloc.evaluate.ablation import AblationRow, ablate, read_ablation_csv, write_ablation_csv
from langloc.evaluate.perplexity import nll, perplexity

__all__ = ["AblationRow", "ablate", "read_ablation_csv", "write_ablation_csv", "nll", "perplexity"]
