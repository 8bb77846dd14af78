"""The identification methods, in one table: name -> how it finds a neuron set in a run folder.

:func:`langloc.workflows.identify_run`, the CLI's ``identify --method`` and its help all read
:data:`METHODS`; adding a method is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from langloc.identify.neuron_set import NeuronSet


@dataclass(frozen=True)
class Method:
    find: Callable[..., NeuronSet]  # (stats, run folder, **settings) -> NeuronSet
    about: str  # one line for the CLI's help
    settings: tuple[str, ...]  # the identify_run settings it reads


def _lape(stats, run: Path, *, top_rate: float, filter_rate: float, activation_bar_ratio: float, **_) -> NeuronSet:
    from langloc.identify.lape import lape_from_stats

    return lape_from_stats(stats, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)


def _thresholding(stats, run: Path, *, rate: float, other_max: float | None, **_) -> NeuronSet:
    from langloc.identify.thresholding import threshold_from_stats

    return threshold_from_stats(stats, rate=rate, other_max=other_max)


def _expert_units(stats, run: Path, *, n_units: int, **_) -> NeuronSet:
    from langloc.identify.expert_units import expert_units
    from langloc.stats.responses import load_responses

    responses = {lang: load_responses(run, lang) for lang in stats.languages}
    ns, _ = expert_units(responses, n=n_units, meta={"model": stats.meta.get("model", {}),
                                                     "corpus": stats.meta.get("corpus")})
    return ns


# identify's default settings (langloc.workflows.identify_run, the CLI's identify), for the
# commands that re-identify with a method other than the one a set was made with.
DEFAULTS = {"top_rate": 0.01, "filter_rate": 0.95, "activation_bar_ratio": 0.95, "rate": 0.00125, "other_max": None,
            "n_units": 2000}

METHODS: dict[str, Method] = {
    "lape": Method(_lape, "Tang et al. 2024", ("top_rate", "filter_rate", "activation_bar_ratio")),
    "thresholding": Method(_thresholding, "Mondal et al. 2025", ("rate", "other_max")),
    "expert_units": Method(_expert_units, "Kojima et al. 2024; needs collect --segments", ("n_units",)),
}
