"""The steps behind each CLI command, as library functions over run folders.

A run folder collects everything one analysis produces::

    RUN/run.json, RUN/stats/<lang>.safetensors   langloc collect
    RUN/neurons/lape.json, RUN/plots/*.png        langloc identify
    RUN/ablation.csv, RUN/plots/ablation.png      langloc ablate
"""

from __future__ import annotations

from pathlib import Path

from langloc.data import load_corpus
from langloc.errors import LanglocError
from langloc.evaluate.ablation import ablate, write_ablation_csv
from langloc.models import load_model
from langloc.report import plot_ablation, plot_neurons_per_layer, plot_overlap
from langloc.identify import NeuronSet, export_lape, import_lape, lape_from_stats
from langloc.stats import ActivationStats, read_run, save_run


def default_neurons(run: Path) -> Path:
    return Path(run) / "neurons" / "lape.json"


def identify_run(run: str | Path, *, top_rate=0.01, filter_rate=0.95, activation_bar_ratio=0.95,
                 out: str | Path | None = None, plots: bool = True) -> tuple[NeuronSet, Path]:
    run = Path(run)
    stats = ActivationStats.load(run)
    ns = lape_from_stats(stats, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)
    path = ns.save(out or default_neurons(run))
    if plots:
        name = stats.meta.get("model", {}).get("name", "")
        plot_neurons_per_layer(ns, run / "plots" / "neurons_per_layer.png", name)
        plot_overlap(ns, run / "plots" / "overlap.png")
    return ns, path


def load_run_model(run: Path, model: str | None, dtype: str, device: str | None):
    meta = read_run(run)["model"]
    name = model or meta.get("name")
    if not name:
        raise LanglocError(f"{run} does not say which model made it; pass --model")
    return load_model(name, dtype=dtype, device=device, neuron_site=meta.get("neuron_site") if model is None else None)


def ablate_run(run: str | Path, *, neurons: str | Path | None = None, model: str | None = None,
               dtype: str = "auto", device: str | None = None, languages: list[str] | None = None,
               eval_tokens: int = 2048, window: int | None = None, batch_size: int = 2,
               controls: bool = True, seed: int = 0, out: str | Path | None = None, lm=None,
               corpus: str | None = None, progress: bool = True):
    run = Path(run)
    meta = read_run(run)
    ns = NeuronSet.load(neurons or default_neurons(run))
    lm = lm or load_run_model(run, model, dtype, device)
    # Evaluate on the held-out split of the corpus the statistics came from, unless told otherwise.
    spec = corpus or meta.get("corpus", {}).get("name", "bible").split("folder:", 1)[-1]
    rows = ablate(lm, ns, load_corpus(spec, seed=meta.get("seed", 0)), languages=languages, eval_tokens=eval_tokens,
                  window=window or meta.get("window", 512), batch_size=batch_size, seed=seed,
                  controls=controls, progress=progress)
    csv_path = write_ablation_csv(rows, out or run / "ablation.csv")
    plot_ablation(rows, run / "plots" / "ablation.png")
    return rows, csv_path


def export_run(run: str | Path, outdir: str | Path, neurons: str | Path | None = None) -> list[Path]:
    run = Path(run)
    stats = ActivationStats.load(run)
    path = Path(neurons) if neurons else default_neurons(run)
    ns = NeuronSet.load(path) if path.is_file() else None
    if ns is not None and ns.languages != stats.languages:
        raise LanglocError(f"neuron set {path} covers {ns.languages}, the run {stats.languages}")
    return export_lape(stats, ns, outdir)


def import_run(indir: str | Path, out: str | Path, *, model_meta: dict | None = None) -> Path:
    import torch

    langs, n, over_zero, ns = import_lape(indir)
    K, L, I = over_zero.shape
    meta = {"model": model_meta or {"name": "unknown", "num_layers": L, "intermediate_size": I},
            "corpus": {"name": f"imported:{indir}"}, "imported": True}
    if model_meta and (model_meta["num_layers"], model_meta["intermediate_size"]) != (L, I):
        raise LanglocError(f"the files hold [L, I] = [{L}, {I}], the model {model_meta['name']} has "
                           f"[{model_meta['num_layers']}, {model_meta['intermediate_size']}]")
    zeros = torch.zeros(K, L, I, dtype=torch.float64)
    save_run(out, ActivationStats(langs, n, over_zero, zeros, zeros.clone(), meta))
    if ns is not None:
        ns.meta = {"model": meta["model"]}
        ns.save(default_neurons(Path(out)))
    return Path(out)
