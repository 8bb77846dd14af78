from langloc.evaluate.ablation import AblationRow, ablate, write_ablation_csv
from langloc.evaluate.perplexity import nll, perplexity

__all__ = ["AblationRow", "ablate", "write_ablation_csv", "nll", "perplexity"]
