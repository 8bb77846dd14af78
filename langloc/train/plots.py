"""Forgetting plots: perplexity relative to the start of training, per language."""

from __future__ import annotations

import math
from pathlib import Path

from langloc.plotting import _save  # the same PNG style; importing it selects the Agg backend

import matplotlib.pyplot as plt  # noqa: E402


def _ratios(rows: list[dict], key) -> dict:
    """{key(row): ([step], [ppl / ppl at step 0])} in step order."""
    base = {key(r): r["ppl"] for r in rows if r["step"] == 0}
    out: dict = {}
    for r in sorted(rows, key=lambda r: r["step"]):
        k = key(r)
        if k in base:
            out.setdefault(k, ([], []))
            out[k][0].append(r["step"])
            out[k][1].append(r["ppl"] / base[k])
    return out


def _log_ratio_axis(ax) -> None:
    """Log-scale ratio axis with plain-number labels (also on minor ticks when the axis spans
    less than about a decade, where there would be no major tick to read), integer steps."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    lo, hi = ax.get_ylim()
    label = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(label)
    ax.yaxis.set_minor_formatter(label if hi / lo < 20 else FuncFormatter(lambda v, _: ""))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_training(rows: list[dict], path: str | Path, trained: str, title: str = "") -> Path:
    """One run: perplexity / perplexity at step 0 against step, one line per language (the
    trained language drawn thick)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for lang, (steps, ratio) in _ratios(rows, lambda r: r["language"]).items():
        trained_one = lang == trained
        ax.plot(steps, ratio, marker="o", ms=3, lw=2.4 if trained_one else 1.2,
                label=f"{lang} (trained)" if trained_one else lang)
    _log_ratio_axis(ax)
    ax.set_xlabel("training step")
    ax.set_ylabel("perplexity / perplexity at step 0 (log)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"Further pre-training on {trained}: held-out perplexity")
    return _save(fig, path)


def plot_forgetting(rows: list[dict], path: str | Path, trained: str, title: str = "") -> Path:
    """Freezing modes compared: one panel per evaluated language (the trained one first), one
    line per mode, perplexity / perplexity at step 0 against step. Above 1 on the other
    languages = forgetting; below 1 on the trained language = learning."""
    langs = list(dict.fromkeys(r["language"] for r in rows))
    langs.sort(key=lambda lang: lang != trained)
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    cols = min(4, len(langs))
    nrows = math.ceil(len(langs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), sharex=True, squeeze=False)
    series = _ratios(rows, lambda r: (r["mode"], r["language"]))
    colors = {"core": "tab:blue", "random": "tab:orange", "none": "tab:grey"}
    for ax, lang in zip(axes.flat, langs):
        for mode in modes:
            if (mode, lang) in series:
                steps, ratio = series[(mode, lang)]
                ax.plot(steps, ratio, marker="o", ms=3, lw=1.6, color=colors.get(mode), label=mode)
        _log_ratio_axis(ax)
        ax.set_title(f"{lang} (trained)" if lang == trained else lang, fontsize=10)
    for ax in axes.flat[len(langs):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    for ax in axes[:, 0]:
        ax.set_ylabel("ppl / ppl at step 0")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    names = {"core": "core region frozen", "random": "random region frozen (same size)", "none": "nothing frozen"}
    fig.legend(handles, [names.get(m, m) for m in labels], fontsize=8, loc="upper center",
               ncol=len(labels), bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title or f"Forgetting during further pre-training on {trained} (held-out perplexity)")
    fig.tight_layout()
    return _save(fig, path)
