"""The margin identification method: p(lang) - max p(other) >= margin, on a hand example, through
the registry (the CLI's identify options and validate's stability check read it)."""

import pytest
import torch
from typer.testing import CliRunner

from langloc.cli import app
from langloc.errors import LanglocError
from langloc.identify.methods import METHODS
from langloc.stats import ActivationStats
from langloc.validate.stability import COUNTER_METHODS, stability


def _stats(over_zero, n):
    over_zero = torch.tensor(over_zero, dtype=torch.long)
    zeros = torch.zeros(over_zero.shape, dtype=torch.float64)
    return ActivationStats(["a", "b", "c"][:len(over_zero)], torch.tensor(n), over_zero, zeros, zeros.clone(),
                           {"model": {"name": "hand"}})


def test_margin_hand_example():
    # 1 layer, 4 neurons, 100 tokens each. p(a) = .9 .5 .2 .6, p(b) = .1 .4 .9 .6, p(c) = .2 .1 .0 .0
    stats = _stats([[[90, 50, 20, 60]], [[10, 40, 90, 60]], [[20, 10, 0, 0]]], [100, 100, 100])
    ns = METHODS["margin"].find(stats, None, margin=0.5)
    # a: neuron 0 (0.9 - 0.2 = 0.7); b: neuron 2 (0.9 - 0.2 = 0.7); neuron 3 is shared (margin 0)
    assert ns.layers("a")[0].tolist() == [0] and ns.layers("b")[0].tolist() == [2] and ns.count("c") == 0
    assert ns.method == "margin" and ns.params == {"margin": 0.5}
    ns = METHODS["margin"].find(stats, None, margin=0.1)  # a's neuron 1: 0.5 - 0.4 = 0.1, kept at the bound
    assert ns.layers("a")[0].tolist() == [0, 1]
    # the default is the settings class's; other methods' settings are left unused
    assert METHODS["margin"].find(stats, None, top_rate=0.5).params == {"margin": METHODS["margin"].Settings().margin}
    with pytest.raises(LanglocError, match="margin must be in"):
        METHODS["margin"].find(stats, None, margin=0)
    with pytest.raises(LanglocError, match="at least two languages"):
        METHODS["margin"].find(_stats([[[1, 2]]], [10]), None)


def test_margin_is_offered_by_identify_and_validate():
    """Registered once, it is an option of identify and of validate and a method of the stability check."""
    runner = CliRunner()
    assert "--margin" in runner.invoke(app, ["identify", "--help"], env={"COLUMNS": "200"}).output
    assert "--margin" in runner.invoke(app, ["validate", "--help"], env={"COLUMNS": "200"}).output
    assert "margin" in COUNTER_METHODS
    stats = _stats([[[90, 50, 20, 60]], [[10, 40, 90, 60]]], [100, 100])
    rows, core = stability("margin", stats, [stats] * 3, {"margin": 0.5}, resamples=4)
    assert {r["language"]: r["stable_core"] for r in rows} == {"a": 1.0, "b": 1.0}
