"""Plots of ``langloc share``: category shares per layer and the causal tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from langloc.plotting import _save, plt
from langloc.share.categories import CATEGORIES

COLORS = {"all_shared": "tab:blue", "partial_shared": "tab:cyan", "specific": "tab:orange", "non_activated": "lightgrey"}


def plot_categories(shares: dict[str, np.ndarray], path: str | Path, *, model_name: str = "", threshold: float = 0.0,
                    position: str = "last") -> Path:
    """One panel per task: stacked bars of the category shares ``[L, 4]`` per layer."""
    tasks = list(shares)
    fig, axes = plt.subplots(1, len(tasks), figsize=(1.5 + 0.32 * max(s.shape[0] for s in shares.values()) * len(tasks), 3.4),
                             sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        s = np.asarray(shares[task])
        layers = np.arange(s.shape[0])
        bottom = np.zeros(s.shape[0])
        for c, name in enumerate(CATEGORIES):
            ax.bar(layers, 100 * s[:, c], bottom=100 * bottom, color=COLORS[name], label=name.replace("_", "-"), width=0.85)
            bottom += s[:, c]
        ax.set_title(task)
        ax.set_xlabel("layer")
        ax.set_xticks(layers[::2] if len(layers) > 12 else layers)
        ax.set_ylim(0, 100)
    axes[0, 0].set_ylabel("neurons (%), mean over items")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"Sharing categories per layer ({position} token, threshold {threshold:g}"
                 f"{', ' + model_name if model_name else ''})", y=1.03)
    return _save(fig, path)


def plot_causal(rows: list[dict], path: str | Path) -> Path:
    """One panel per task: accuracy per condition (groups) and language (bars); a black tick
    marks the mean over languages."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    conds = {t: list(dict.fromkeys(r["condition"] for r in rows if r["task"] == t)) for t in tasks}
    langs = list(dict.fromkeys(r["language"] for r in rows))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(2 + 0.9 * max(len(c) for c in conds.values()), 3.2 * len(tasks)),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(langs)
    for ax, task in zip(axes[:, 0], tasks):
        cs = conds[task]
        acc = {(r["condition"], r["language"]): r["accuracy"] for r in rows if r["task"] == task}
        for li, lang in enumerate(langs):
            x = np.arange(len(cs)) - 0.4 + width * (li + 0.5)
            ax.bar(x, [100 * acc.get((c, lang), np.nan) for c in cs], width, color=colors[li % len(colors)], label=lang)
        means = [100 * np.nanmean([acc.get((c, lang), np.nan) for lang in langs]) for c in cs]
        ax.scatter(np.arange(len(cs)), means, marker="_", s=400, color="black", zorder=3, label="mean")
        ax.axhline(means[0], color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(cs)), cs, rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, max(1.0, 1.1 * np.nanmax([100 * v for v in acc.values()] + [0])))
        ax.set_ylabel("accuracy (%)")
        ax.set_title(task)
    axes[0, 0].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Deactivating (zero) or boosting (xK) neurons by sharing category; random = same count per layer")
    fig.tight_layout()
    return _save(fig, path)
