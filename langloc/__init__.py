"""langloc: localise language inside large language models.

The data flow is model -> statistics -> neuron sets -> interventions -> evaluations (perplexity,
steering) -> report.
The functions re-exported here are the library API that the CLI is a thin layer over.
"""

from langloc._version import __version__
from langloc.errors import LanglocError  # noqa: E402
from langloc.models import load_model, LoadedModel, NeuronSite  # noqa: E402
from langloc.data import load_corpus  # noqa: E402
from langloc.stats import ActivationStats, CollectConfig, collect  # noqa: E402
from langloc.identify import NeuronSet, lape  # noqa: E402
from langloc.intervene import Edit, Intervention, deactivate  # noqa: E402
from langloc.evaluate import perplexity, ablate  # noqa: E402

__all__ = [
    "__version__", "LanglocError", "load_model", "LoadedModel", "NeuronSite", "load_corpus",
    "ActivationStats", "CollectConfig", "collect", "NeuronSet", "lape", "deactivate", "Edit", "Intervention",
    "perplexity", "ablate",
]
