"""PNG plots meant to be read without explanation.

The figures that steps and studies draw (neuron sets, ablation, steering, comparison, regions)
and the PNG style every plot shares (``_save``; importing this module selects the Agg
backend). Domain code draws with it (the per-domain ``plots`` modules of train, share and
validate too), and the HTML report (:mod:`langloc.report`) redraws the same figures as SVG.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langloc.artefacts import atomic_path  # noqa: E402


def format_ratio(v: float) -> str:
    """A perplexity ratio in at most five characters: 1.23, 45, 678, 1e+06."""
    return f"{v:.2f}" if v < 10 else f"{v:.0f}" if v < 1000 else f"{v:.0e}"


def _save(fig, path: str | Path) -> Path:
    """Save as PNG, or as SVG where ``path`` ends in .svg (the HTML report inlines those)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="svg" if path.suffix.lower() == ".svg" else "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_neurons_per_layer(neuron_set, path: str | Path, model_name: str = "") -> Path:
    """One small panel per language: bars of language-specific neurons per layer."""
    counts = neuron_set.per_layer_counts().numpy()
    langs = neuron_set.languages
    cols = min(5, len(langs))
    rows = math.ceil(len(langs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.3 * rows), sharex=True, sharey=True, squeeze=False)
    layers = np.arange(counts.shape[1])
    for ax, lang, row in zip(axes.flat, langs, counts):
        ax.bar(layers, row, color="tab:blue")
        ax.set_title(f"{lang}: {int(row.sum())} neurons", fontsize=10)
    for ax in axes.flat[len(langs):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("layer")
    for ax in axes[:, 0]:
        ax.set_ylabel("neurons")
    fig.suptitle(f"Language-specific neurons per layer ({neuron_set.method}{', ' + model_name if model_name else ''})")
    return _save(fig, path)


def _heatmap(ax, matrix, row_labels, col_labels, fmt, cmap, norm=None, vmin=None, vmax=None):
    im = ax.imshow(matrix, cmap=cmap, norm=norm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=0)
    ax.set_yticks(range(len(row_labels)), row_labels)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, fmt(matrix[i, j]), ha="center", va="center", fontsize=7)
    return im


def plot_overlap(neuron_set, path: str | Path) -> Path:
    """K x K shared neuron counts; the diagonal is each language's set size."""
    ov = neuron_set.overlap().numpy()
    langs = neuron_set.languages
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(langs), 0.8 + 0.55 * len(langs)))
    off = ov.astype(float).copy()
    np.fill_diagonal(off, np.nan)
    im = _heatmap(ax, ov, langs, langs, lambda v: f"{int(v)}", "Blues",
                  vmin=0, vmax=max(1.0, np.nanmax(off)) if len(langs) > 1 else None)
    fig.colorbar(im, ax=ax, label="shared neurons (diagonal: set size)")
    ax.set_title("Overlap of language-specific neuron sets")
    return _save(fig, path)


def plot_ablation(rows, path: str | Path, *, ylabel: str = "neurons zeroed",
                  title: str = "Deactivating language-specific neurons (random:* = same-size random control)") -> Path:
    """Perplexity ratio (ablated / base) for each deactivated set (rows) and language (columns)."""
    from matplotlib.colors import LogNorm

    deact = list(dict.fromkeys(r.deactivated for r in rows))
    evald = list(dict.fromkeys(r.evaluated for r in rows))
    m = np.full((len(deact), len(evald)), np.nan)
    no_effect = np.zeros(m.shape, dtype=bool)
    for r in rows:
        i, j = deact.index(r.deactivated), evald.index(r.evaluated)
        m[i, j] = r.ratio
        lo, hi_ = getattr(r, "ratio_lo", np.nan), getattr(r, "ratio_hi", np.nan)
        no_effect[i, j] = lo == lo and hi_ == hi_ and lo <= 1.0 <= hi_
    fig, ax = plt.subplots(figsize=(1.5 + 0.65 * len(evald), 1 + 0.4 * len(deact)))
    hi = max(2.0, float(np.nanmax(m)))
    im = _heatmap(ax, m, deact, evald, format_ratio, "Reds",
                  norm=LogNorm(vmin=1.0, vmax=hi))
    fig.colorbar(im, ax=ax, label="perplexity ratio (deactivated / base), log scale")
    if no_effect.any():
        # A small ring in the cell's corner: its 95% interval includes 1 (no effect).
        ii, jj = np.nonzero(no_effect)
        ax.scatter(jj + 0.34, ii - 0.28, s=9, facecolors="none", edgecolors="0.35", linewidths=0.7)
        title += "\n(o: 95% interval over windows includes 1, no effect)"
    ax.set_xlabel("evaluated language (held-out text)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_steering(rows: list[dict], path: str | Path) -> Path:
    """Strict (or, for older runs, fluent target-language) success per target (groups) and method
    (bars), with the method's random control as a hatched bar beside it and, where the rows carry
    it, the native ceiling of each target as a black line across its group: the unsteered model's
    own native continuations under the same judge and decoding, the bar the steered ones are
    measured against (``ratio_to_native``)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    key = "strict_rate" if rows and "strict_rate" in rows[0] else "fluent_target_rate"
    targets = list(dict.fromkeys(r["target"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(min(14.0, 2.5 + 0.45 * len(targets) * max(1, len(methods))), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for mi, m in enumerate(methods):
        got = {r["target"]: r for r in rows if r["method"] == m}
        x = np.arange(len(targets)) + (2 * mi) * width - 0.4 + width / 2
        ax.bar(x, [100 * got[t][key] if t in got else 0 for t in targets], width, color=colors[mi % len(colors)])
        ctrl = [got[t].get(f"control_{key}") if t in got else None for t in targets]
        ax.bar(x + width, [100 * (c or 0) for c in ctrl], width, color="white",
               edgecolor=colors[mi % len(colors)], hatch="//")
        for k, dx in ((key, 0.0), (f"control_{key}", width)):
            # 95% intervals over prompts, where the rows have them.
            pts = [(xi + dx, got[t][k], got[t].get(f"{k}_lo"), got[t].get(f"{k}_hi"))
                   for xi, t in zip(x, targets) if t in got and got[t].get(k) is not None
                   and got[t].get(f"{k}_lo") is not None]
            if pts:
                xs, v, lo, hi = (np.array(a, dtype=float) for a in zip(*pts))
                ax.errorbar(xs, 100 * v, yerr=[100 * (v - lo), 100 * (hi - v)], fmt="none", ecolor="0.2",
                            elinewidth=0.8, capsize=2)
    handles = [Patch(color=colors[mi % len(colors)], label=m) for mi, m in enumerate(methods)]
    handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="//", label="its random control"))
    native = {r["target"]: r.get("native_strict_rate") for r in rows if r.get("native_strict_rate") is not None}
    if key == "strict_rate" and native:
        for ti, t in enumerate(targets):
            if t in native:
                ax.hlines(100 * float(native[t]), ti - 0.45, ti + 0.45, colors="black", lw=1.6)
        handles.append(Line2D([], [], color="black", lw=1.6, label="native ceiling (unsteered, same judge)"))
    ax.set_xticks(range(len(targets)), targets)
    ax.set_ylim(0, 100)
    ax.set_ylabel("strict successes (%)" if key == "strict_rate" else "fluent outputs in target language (%)")
    ax.set_xlabel("target language")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Steering the output language (held-out prompts; bars: 95% intervals over prompts)"
                 if any(r.get(f"{key}_lo") is not None for r in rows)
                 else "Steering the output language (held-out prompts)")
    return _save(fig, path)


def run_label(manifest: dict) -> str:
    """How plot_native_ratio names a steering run: its model and decoding, from its manifest."""
    return f"{(manifest.get('model') or {}).get('name', '?')}, {(manifest.get('decoding') or {}).get('name', '?')}"


def plot_native_ratio(tables: dict[str, list[dict]], path: str | Path) -> Path:
    """Each method's strict success relative to the native ceiling, averaged over the targets
    (``methods.csv``'s ``ratio_to_native`` and its 95% interval), one bar per run: ``tables`` maps
    a label (model, decoding) to that run's method rows. A method whose ratio is undefined (no
    target with a native rate above 0) gets no bar and says so; 1 is the native ceiling."""
    labels = list(tables)
    methods = list(dict.fromkeys(m["method"] for rows in tables.values() for m in rows))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(min(12.0, 2.5 + 0.5 * len(methods) * max(1, len(labels))), 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = 1.1
    for li, label in enumerate(labels):
        got = {m["method"]: m for m in tables[label]}
        for mi, method in enumerate(methods):
            x = mi - 0.4 + width * (li + 0.5)
            m = got.get(method)
            v = None if m is None or m.get("ratio_to_native") in (None, "") else float(m["ratio_to_native"])
            if v is None:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
                continue
            lo, hi = float(m["ratio_to_native_lo"]), float(m["ratio_to_native_hi"])
            top = max(top, hi + 0.05)
            ax.bar(x, v, width, color=colors[li % len(colors)], label=label)
            ax.errorbar([x], [v], yerr=[[v - lo], [hi - v]], fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)
    ax.axhline(1.0, color="black", lw=1.2, label="native ceiling")
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles))  # one entry per run
    ax.legend(keep.values(), keep.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylim(0, top)
    ax.set_ylabel("strict success / native ceiling")
    ax.set_title("Steered relative to the native ceiling\n(mean over the targets where it is defined; bars: 95% intervals)")
    return _save(fig, path)


def plot_comparison(table: list[dict], path: str | Path) -> Path:
    """Jaccard similarity of two methods' sets per language (rows) and layer (columns), one
    panel per pair of methods."""
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in table))
    langs = list(dict.fromkeys(r["language"] for r in table))
    layers = sorted({r["layer"] for r in table if r["layer"] != "all"})
    fig, axes = plt.subplots(1, len(pairs), figsize=(2 + 0.35 * len(layers) * len(pairs), 1 + 0.45 * len(langs)),
                             squeeze=False)
    for ax, (a, b) in zip(axes[0], pairs):
        m = np.full((len(langs), len(layers) + 1), np.nan)
        for r in table:
            if (r["a"], r["b"]) != (a, b):
                continue
            col = len(layers) if r["layer"] == "all" else layers.index(r["layer"])
            m[langs.index(r["language"]), col] = np.nan if r["jaccard"] is None else r["jaccard"]
        im = _heatmap(ax, m, langs, [str(x) for x in layers] + ["all"],
                      lambda v: "" if np.isnan(v) else f"{v:.2f}".lstrip("0") if v < 1 else "1", "Greens", vmin=0, vmax=1)
        ax.set_title(f"{a} vs {b}", fontsize=10)
        ax.set_xlabel("layer")
    fig.colorbar(im, ax=axes[0].tolist(), label="Jaccard (|A∩B| / |A∪B|; blank: both empty)")
    return _save(fig, path)


def plot_region_location(matrix_labels: list[str], layer_share: np.ndarray, dim_counts: np.ndarray,
                         massive: np.ndarray, path: str | Path, region: str = "top", top_dims: int = 5) -> Path:
    """Where a region sits: (left) its entries per hidden dimension over all matrices, the
    residual stream's largest activations overlaid; (right) per layer and matrix, the share of
    the region's entries that lie on its ``top_dims`` most frequent dimensions."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 1.2 + 0.28 * layer_share.shape[0]),
                               gridspec_kw={"width_ratios": [1.6, 1], "wspace": 0.45})
    dims = np.arange(len(dim_counts))
    a.bar(dims, dim_counts, width=1.0, color="tab:blue", label=f"{region}-region entries")
    a.set_xlabel("hidden dimension")
    a.set_ylabel("entries")
    a2 = a.twinx()
    a2.plot(dims, massive, color="tab:red", lw=0.5, alpha=0.35, label="max |residual activation|")
    for d in np.argsort(-massive)[:top_dims]:
        a2.plot([d], [massive[d]], marker="v", color="tab:red", ms=5)
        a2.annotate(str(d), (d, massive[d]), fontsize=7, color="tab:red", ha="left", va="bottom")
    a2.set_yscale("log")
    a2.set_ylabel("max |activation| (log)", color="tab:red")
    for d in np.argsort(-dim_counts)[:top_dims]:
        a.annotate(str(d), (d, dim_counts[d]), fontsize=7, ha="center", va="bottom")
    a.set_title(f"{region} region per hidden dimension (uniform would be {dim_counts.sum() / len(dims):.0f})")
    im = _heatmap(b, layer_share, [str(i) for i in range(layer_share.shape[0])], matrix_labels,
                  lambda v: f"{v:.0%}" if v == v else "", "Oranges", vmin=0, vmax=1)
    b.set_xticks(range(len(matrix_labels)), matrix_labels, rotation=45, ha="right")
    b.set_ylabel("layer")
    b.set_title(f"share on the {top_dims} densest dimensions")
    fig.colorbar(im, ax=b)
    return _save(fig, path)

