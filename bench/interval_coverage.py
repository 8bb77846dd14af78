"""How often does a perplexity-ratio interval cover the ratio of the whole held-out split? Real windows.

    python bench/interval_coverage.py [--windows 128] [--window 96] [--out per_window.pt]

Collects statistics for a few languages on gemma-3-270m, finds LAPE neurons, then computes the
per-window NLL of ``--windows`` held-out windows per language for the base model, with the
French set zeroed, and with a random control of the same size. Those windows are the
*population*: its ratio is the truth. Many times over, it draws n windows as a study would --
a contiguous run (what packing the eval split from its start gives) or n windows spread over
the split -- and asks whether each interval method covers the population's ratio. It also
prints what the data look like: the per-window log-ratio's skewness, excess kurtosis and the
lag-1 correlation of neighbouring windows (contiguous text).

Those shape figures are what ``tests/test_statistics.py`` simulates with; the CPU class is
printed first. The figures of 2026-12-05 are in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import time

import torch

import langloc
from langloc import machine
from langloc.controls import random_control
from langloc.data.packing import corpus_windows
from langloc.evaluate import intervals
from langloc.evaluate.perplexity import window_nll
from langloc.intervene.hooks import deactivate

LANGS = ("en", "fr", "zh", "ru")


def shape(d: torch.Tensor) -> tuple[float, float, float]:
    """Skewness, excess kurtosis and lag-1 autocorrelation of a series."""
    z = (d - d.mean()) / d.std()
    return (z ** 3).mean().item(), (z ** 4).mean().item() - 3, (z[1:] * z[:-1]).mean().item()


def percentile_bootstrap(base, cond, tokens, resamples: int = 400) -> tuple[float, float]:
    """langloc's interval before 2026-12-05: the percentile bootstrap over windows (paired)."""
    idx = torch.randint(len(base), (resamples, len(base)), generator=torch.Generator().manual_seed(0))
    v = torch.exp((cond[idx].sum(1) - base[idx].sum(1)) / tokens[idx].sum(1)).sort().values
    return v[int(0.025 * (resamples - 1))].item(), v[int(0.975 * (resamples - 1) + 0.999)].item()


def coverage(base, cond, tokens, n, contiguous, trials, method, gen) -> float:
    truth = torch.exp((cond.sum() - base.sum()) / tokens.sum()).item()
    hits = 0
    for _ in range(trials):
        if contiguous:
            s = int(torch.randint(len(base) - n + 1, (1,), generator=gen))
            idx = torch.arange(s, s + n)
        else:
            idx = torch.randperm(len(base), generator=gen)[:n].sort().values
        lo, hi = method(base[idx], cond[idx], tokens[idx])
        hits += lo <= truth <= hi
    return hits / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=128)
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--out", default="per_window.pt")
    ap.add_argument("--run", default="/tmp/coverage-run", help="run folder for the statistics")
    ap.add_argument("--load", default=None, help="reuse a saved --out instead of running the model")
    args = ap.parse_args()
    print(machine.summary())
    if args.load:
        saved = torch.load(args.load)
    else:
        t0 = time.time()
        lm = langloc.load_model("gemma-3-270m", dtype="fast")
        corpus = langloc.load_corpus("bible")
        stats = langloc.collect(lm, corpus, langloc.CollectConfig(out=args.run, languages=list(LANGS),
                                                                  tokens=args.tokens))
        ns = langloc.lape(stats.over_zero, stats.n, stats.languages)
        saved = {}
        for lang in LANGS:
            ids = corpus_windows(lm, corpus, lang, "eval", window=args.window, max_tokens=args.windows * args.window)
            ctrl = random_control(ns.layers("fr"), ns.intermediate_size, 0, "random:fr")
            base = window_nll(lm, ids, 8)
            with deactivate(lm, ns.layers("fr")):
                own = window_nll(lm, ids, 8)
            with deactivate(lm, ctrl):
                rnd = window_nll(lm, ids, 8)
            saved[lang] = {"base": base, "fr": own, "random:fr": rnd,
                           "tokens": torch.full((len(ids),), float(ids.shape[1] - 1), dtype=torch.float64)}
            print(f"{lang}: {len(ids)} windows, {time.time() - t0:.0f} s")
        torch.save(saved, args.out)
    methods = {"percentile bootstrap": percentile_bootstrap,
               "t on log-ratio": lambda b, c, t: intervals.perplexity_ratio_ci(b, c, t, min_units=2)}
    gen = torch.Generator().manual_seed(0)
    print("\nper-window log-ratio (nats/token): skewness, excess kurtosis, lag-1 correlation")
    for lang, d in saved.items():
        for cond in ("fr", "random:fr"):
            lr = (d[cond] - d["base"]) / d["tokens"]
            sk, ku, r1 = shape(lr)
            print(f"  {lang} zero {cond:<10} mean {lr.mean():+.4f} sd {lr.std():.4f}  skew {sk:+.2f} kurt {ku:+.2f} "
                  f"lag1 {r1:+.2f}")
    print(f"\ncoverage of the population ratio ({args.trials} draws each)")
    for name, method in methods.items():
        for contiguous in (True, False):
            for n in (4, 8, 12, 16, 24):
                cov = [coverage(d["base"], d[c], d["tokens"], n, contiguous, args.trials, method, gen)
                       for d in saved.values() for c in ("fr", "random:fr")]
                print(f"  {name:<22} {'contiguous' if contiguous else 'spread':<10} n={n:>2}: "
                      f"mean {sum(cov) / len(cov):.3f} min {min(cov):.3f}")


if __name__ == "__main__":
    main()
