"""Controls, bootstrap intervals and the data-parallel ablation (docs/statistics.md)."""

import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from langloc.controls import control_seed, derive_seed, random_control
from langloc.evaluate.ablation import AblationRow, rows_to_csv
from langloc.evaluate.bootstrap import (mean_ci, percentile_interval, perplexity_ratio_ci, ratio_of_sums_ci,
                                        resample_indices)
from langloc.identify import NeuronSet
from langloc.controls import random_layers


# -- one way to draw controls ------------------------------------------------------------

def test_control_seed_is_the_documented_hash_and_differs_by_condition_and_draw():
    import hashlib

    expect = int.from_bytes(hashlib.sha256(b"7/random:fr/2").digest()[:8], "big") >> 1
    assert control_seed(7, "random:fr", 2) == derive_seed(7, "random:fr", 2) == expect
    seeds = {control_seed(s, c, d) for s in (0, 1) for c in ("random:fr", "random:es") for d in (0, 1, 2)}
    assert len(seeds) == 12 and all(0 <= x < 2 ** 63 for x in seeds)


def test_two_conditions_controls_share_no_more_neurons_than_chance():
    """Same run seed, same per-layer counts: the old controls were prefixes of one permutation
    (overlap = the smaller count); now the overlap is hypergeometric, mean a * b / I."""
    I, a, b, layers = 512, 40, 60, 400
    like_a, like_b = [torch.arange(a)] * layers, [torch.arange(b)] * layers
    old = [len(set(x.tolist()) & set(y.tolist()))
           for x, y in zip(random_layers(like_a, I, 0), random_layers(like_b, I, 0))]
    assert old == [a] * layers  # the bug: one is a subset of the other
    fr = random_control(like_a, I, 0, "random:fr")
    es = random_control(like_b, I, 0, "random:es")
    overlap = torch.tensor([len(set(x.tolist()) & set(y.tolist())) for x, y in zip(fr, es)], dtype=torch.float64)
    mean = a * b / I  # 4.69
    var = a * (b / I) * (1 - b / I) * (I - a) / (I - 1)  # hypergeometric variance, 3.83
    assert abs(overlap.mean().item() - mean) < 4 * math.sqrt(var / layers)  # within 4 standard errors (0.39)
    assert abs(overlap.var().item() - var) < 0.25 * var
    assert overlap.max() < a  # never a subset
    # Draws of one condition are independent too, and each is reproducible.
    d0, d1 = (random_control(like_a, I, 0, "random:fr", d) for d in (0, 1))
    assert all(torch.equal(x, y) for x, y in zip(d0, fr))
    ov = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(d0, d1)) / layers
    assert abs(ov - a * a / I) < 0.5


def test_neuron_set_random_like_is_the_named_control():
    ns = NeuronSet({"fr": [torch.tensor([1, 5]), torch.tensor([2])], "es": [torch.tensor([0, 3]), torch.tensor([7])]},
                   2, 16, meta={"model": {"name": "x"}})
    got = ns.random_like("fr", 3, draw=1)
    want = random_control(ns.layers("fr"), 16, 3, "random:fr", 1)
    assert all(torch.equal(x, y) for x, y in zip(got, want)) and [len(x) for x in got] == [2, 1]
    assert all(x.tolist() == sorted(x.tolist()) for x in got)


# -- the bootstrap ---------------------------------------------------------------------

def test_percentile_interval_takes_the_lower_and_higher_order_statistics():
    v = torch.arange(1000, dtype=torch.float64)[torch.randperm(1000)]
    assert percentile_interval(v, 0.95) == (24.0, 975.0)  # floor(0.025 * 999), ceil(0.975 * 999)
    assert percentile_interval(torch.tensor([3.0]), 0.95) == (3.0, 3.0)


def test_bootstrap_matches_a_hand_computed_paired_ratio():
    """Two windows of one token each; base NLL (1, 3), zeroed (2, 3). A resample is one of
    {0,0} (p 1/4): ratio exp((4 - 2) / 2) = e; {0,1} (1/2): exp((5 - 4) / 2) = e^0.5;
    {1,1} (1/4): exp(0) = 1. So the 95% interval is [1, e] and the 40% one [e^.5, e^.5]."""
    base, cond, tok = [1.0, 3.0], [2.0, 3.0], [1.0, 1.0]
    assert perplexity_ratio_ci(base, cond, tok, n_resamples=4000, seed=1) == (1.0, pytest.approx(math.e))
    lo, hi = perplexity_ratio_ci(base, cond, tok, n_resamples=4000, seed=1, level=0.4)
    assert lo == pytest.approx(math.exp(0.5)) and hi == pytest.approx(math.exp(0.5))
    # The resampled values by hand, from the documented indices.
    idx = resample_indices(2, 4000, seed=1)
    b = torch.tensor(base, dtype=torch.float64)[idx].sum(1)
    c = torch.tensor(cond, dtype=torch.float64)[idx].sum(1)
    by_hand = torch.exp((c - b) / 2)
    assert (by_hand == math.e).double().mean().item() == pytest.approx(0.25, abs=0.03)
    assert percentile_interval(by_hand, 0.95) == perplexity_ratio_ci(base, cond, tok, n_resamples=4000, seed=1)
    # Paired: the same windows for both; draws are averaged on the same resamples.
    two = perplexity_ratio_ci(base, [cond, cond], tok, n_resamples=4000, seed=1)
    assert two == perplexity_ratio_ci(base, cond, tok, n_resamples=4000, seed=1)


def test_bootstrap_matches_a_hand_computed_rate():
    """Three prompts, one success: the resampled rate is k/3 with k ~ Binomial(3, 1/3):
    P(0) = 8/27, P(1/3) = 12/27, P(2/3) = 6/27, P(1) = 1/27. 90% interval: the 5% point is 0,
    the 95% point 2/3 (cumulative 26/27 = 0.963); 95%: 0 and 1 (0.963 < 0.975)."""
    assert mean_ci([1, 0, 0], n_resamples=20000, level=0.9) == (0.0, pytest.approx(2 / 3))
    assert mean_ci([1, 0, 0], n_resamples=20000, level=0.95) == (0.0, 1.0)
    assert mean_ci([1, 1, 1]) == (1.0, 1.0)
    # Pooled accuracy (correct tokens / tokens per item) resamples items, not tokens.
    assert ratio_of_sums_ci([2, 0], [2, 2], n_resamples=4000, level=0.95) == (0.0, 1.0)
    assert ratio_of_sums_ci([2, 0], [2, 2], n_resamples=4000, level=0.4) == (0.5, 0.5)


def test_bootstrap_is_deterministic_for_a_seed():
    x = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert mean_ci(x, seed=4) == mean_ci(x, seed=4) != mean_ci(x, seed=5)
    lo, hi = mean_ci(x, seed=4)
    assert lo < x.double().mean().item() < hi


# -- ablation.csv --------------------------------------------------------------------------

def test_ablation_csv_carries_intervals_and_reads_back():
    rows = [AblationRow("fr", "fr", 10.0, 20.0, 1.8, 2.2),
            AblationRow("random:fr", "fr", 10.0, 10.1, 0.99, 1.03, 1.0, 1.02, 3)]
    text = rows_to_csv(rows)
    assert text.splitlines() == ["deactivated,evaluated,base_ppl,ppl,ratio,ratio_lo,ratio_hi,ratio_min,ratio_max,draws",
                                 "fr,fr,10,20,2,1.8,2.2,,,", "random:fr,fr,10,10.1,1.01,0.99,1.03,1,1.02,3"]



# -- ablate: the tiny model, one process and two --------------------------------------------

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args):
    return [sys.executable, "-m", "langloc.cli", *map(str, args)]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from tiny import save_tiny_llama, write_folder_corpus

    root = tmp_path_factory.mktemp("stats")
    model, corpus = save_tiny_llama(root / "tiny"), write_folder_corpus(root / "corpus", repeat=20)
    run = root / "run"
    for args in (["collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "512", "--window", "64",
                  "--device", "cpu", "-o", run], ["identify", run, "--top-rate", "0.05"]):
        done = subprocess.run(cli(*args), env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    return run


ABLATE = ["--eval-tokens", "256", "--control-draws", "2", "--device", "cpu"]


def test_ablate_rows_have_intervals_and_control_draws(run_folder, tmp_path):
    from langloc.data import FolderCorpus
    from langloc.evaluate import ablate
    from langloc.models import load_model

    lm = load_model(str(run_folder.parent / "tiny"), device="cpu")
    ns = NeuronSet.load(run_folder / "neurons" / "lape.json")
    corpus = FolderCorpus(run_folder.parent / "corpus")
    kw = dict(eval_tokens=256, window=64, progress=False)
    rows = ablate(lm, ns, corpus, control_draws=2, **kw)
    assert len(rows) == 2 * 3 * 3
    for r in rows:
        # Every row's interval is of its own figure: for a control, of the mean over its draws
        # (each draw on the same resampled windows), so it holds that mean, not one draw's ratio.
        assert r.ratio_lo <= r.ratio <= r.ratio_hi, r
        if r.deactivated.startswith("random:"):
            assert r.draws == 2 and r.ratio_min <= r.ratio <= r.ratio_max
        else:
            assert r.draws is None and r.ratio_min is None
    assert any(r.draws and r.ratio_lo < r.ratio_hi for r in rows)  # controls with a real spread were checked
    # The sets' rows are those of a run without controls; one draw reports the draw itself.
    alone = ablate(lm, ns, corpus, controls=False, **kw)
    assert [(r.deactivated, r.evaluated, r.ppl, r.ratio_lo, r.ratio_hi) for r in alone] == \
        [(r.deactivated, r.evaluated, r.ppl, r.ratio_lo, r.ratio_hi) for r in rows[:9]]
    one = ablate(lm, ns, corpus, control_draws=1, **kw)
    assert all(r.ratio_min == r.ratio_max == pytest.approx(r.ratio) for r in one[9:])
    assert [r.ppl for r in one[9:]] != [r.ppl for r in rows[9:]]


def test_two_gloo_processes_write_the_single_process_ablation_csv(run_folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(run_folder, one)
    shutil.copytree(run_folder, two)
    single = subprocess.run(cli("ablate", one, *ABLATE), env=ENV, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    both = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "langloc.cli", "ablate", two, *ABLATE], env=ENV, capture_output=True, text=True)
    assert both.returncode == 0, both.stderr[-3000:]
    assert (one / "ablation.csv").read_bytes() == (two / "ablation.csv").read_bytes()
    assert both.stdout.count("perplexity ratio") == 1  # one process prints
    assert len((two / "ablation.csv").read_text().splitlines()) == 1 + 2 * 3 * 3
