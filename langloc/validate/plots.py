"""validate's plots: the per-language figures side by side, stability, and the budget curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from langloc.plotting import _save, plt


def _err(values, lo, hi):
    v, lo, hi = (np.asarray(x, dtype=float) for x in (values, lo, hi))
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def plot_validation(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Per language: own ratio, largest other ratio, the two controls (draws as dots), the
    second domain's own ratio, and the exclusive / shared parts on the spill-over language,
    each with its 95% interval; log scale."""
    langs = [r["language"] for r in rows]
    x = np.arange(len(langs))
    series = [("own", "own", "tab:red"), ("largest other", "other", "tab:gray"),
              ("matched control", "matched", "tab:green"), ("random control", "random", "tab:olive")]
    if rows and "domain_own_ratio" in rows[0]:
        series.append(("own, 2nd domain", "domain_own", "tab:purple"))
    series += [("exclusive part on spill lang.", "spill_exclusive", "tab:blue"),
               ("shared part on spill lang.", "spill_shared", "tab:orange")]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(langs)), 4.2))
    for i, (label, key, color) in enumerate(series):
        v = [r[f"{key}_ratio"] for r in rows]
        lo = [r[f"{key}_lo"] for r in rows]
        hi = [r[f"{key}_hi"] for r in rows]
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, np.nan_to_num(np.asarray(v, dtype=float) - 1, nan=0.0), width, bottom=1, color=color,
               label=label, yerr=_err(np.nan_to_num(v, nan=1), np.nan_to_num(lo, nan=1), np.nan_to_num(hi, nan=1)),
               capsize=2, error_kw={"elinewidth": 0.8})
        if key in ("matched", "random"):
            for p, r in zip(pos, rows):
                for b in ("min", "max"):
                    if r[f"{key}_{b}"] == r[f"{key}_{b}"]:
                        ax.plot(p, r[f"{key}_{b}"], "k.", ms=3)
    ax.axhline(1, color="black", lw=0.6)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['language']}\n{'selective' if r['selective'] else 'not sel.'}\n"
                      f"{'stable' if r.get('stable') else 'unstable'}" for r in rows], fontsize=8)
    ax.set_ylabel("perplexity ratio (zeroed / base)")
    ax.set_title(title or "validate: own vs other language, controls, second domain, spill-over parts")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _save(fig, path)


def plot_stability(rows: list[dict], path: str | Path) -> Path:
    """Shard Jaccard and stable-core share per language, one panel per method."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, len(methods), figsize=(6 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        mine = [r for r in rows if r["method"] == method]
        x = np.arange(len(mine))
        ax.bar(x - 0.2, [r["shard_jaccard"] for r in mine], 0.4, label="shard Jaccard (mean over pairs)")
        ax.bar(x + 0.2, [r["stable_core"] for r in mine], 0.4, label="stable core share")
        ax.axhline(0.8, color="black", lw=0.6, ls="--")
        ax.set_xticks(x, [r["language"] for r in mine])
        ax.set_ylim(0, 1.05)
        ax.set_title(method)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_budget_curve(rows: list[dict], path: str | Path) -> Path:
    """Per language against the statistics tokens of each prefix: the prefix set's Jaccard with
    the full set, the share of the stable core it holds, and its own-language ratio with its
    95% interval."""
    langs = list(dict.fromkeys(r["language"] for r in rows))
    panels = [("jaccard", "Jaccard with the full set"), ("core_share", "share of the stable core held"),
              ("own_ratio", "own-language ratio (zeroed / base)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    colors = plt.get_cmap("tab10" if len(langs) <= 10 else "tab20")
    for i, lang in enumerate(langs):
        mine = sorted((r for r in rows if r["language"] == lang), key=lambda r: r["k"])
        x = np.array([r["tokens"] for r in mine], dtype=float)
        for ax, (key, _) in zip(axes, panels):
            v = np.array([r.get(key, np.nan) for r in mine], dtype=float)
            if key == "own_ratio":
                lo = np.array([r.get("own_lo", np.nan) for r in mine], dtype=float)
                hi = np.array([r.get("own_hi", np.nan) for r in mine], dtype=float)
                ax.errorbar(x, v, yerr=_err(np.nan_to_num(v, nan=1), np.nan_to_num(lo, nan=1),
                                            np.nan_to_num(hi, nan=1)),
                            marker="o", ms=3, capsize=2, color=colors(i), label=lang)
            else:
                ax.plot(x, v, marker="o", ms=3, color=colors(i), label=lang)
    ticks = sorted({r["tokens"] for r in rows})  # the prefixes are evenly spaced: a linear axis
    for ax, (key, title) in zip(axes, panels):
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], rotation=30, fontsize=7)
        ax.set_xlabel("statistics tokens per language")
        ax.set_title(title, fontsize=10)
        if key == "own_ratio":  # a ratio, and languages differ by orders of magnitude: a log axis
            ax.axhline(1, color="black", lw=0.6)
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.05)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the panel: no line hidden
    fig.suptitle("validate: the budget curve (sets found on the first k of K shards)")
    return _save(fig, path)
