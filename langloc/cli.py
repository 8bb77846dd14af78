"""langloc command line: a thin layer over :mod:`langloc.workflows`.

Every failure the user can fix is a LanglocError, printed as one line ``error: ...`` with exit
status 2; nothing is left half-written because every artefact is written atomically.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from langloc.demo import DEMO_LANGUAGES
from langloc.errors import LanglocError


app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help=(
        "Find the neurons of a causal LM that are specific to a language, and show what they do.\n\n"
        "Typical flow: [bold]collect[/] activation statistics per language -> [bold]identify[/] "
        "language-specific neurons (LAPE) -> [bold]ablate[/] them and measure perplexity.\n"
        "Everything goes into one run folder. Try [bold]langloc demo[/] first."
    ),
)
err = Console(stderr=True)
out = Console()

ModelOpt = typer.Option("gemma-3-270m", "--model", "-m", help="Hugging Face id, local folder, or alias: gemma-3-270m, smollm2-135m.")
DtypeOpt = typer.Option("auto", help="auto (float32 on CPU, bfloat16 on GPU), fast (bfloat16 where the CPU/GPU computes it natively, else float32), float32, bfloat16 or float16.")
DeviceOpt = typer.Option(None, help="cpu, cuda, cuda:1, or auto (device_map='auto': spread a large model over all GPUs). Default: cuda if available.")
SiteOpt = typer.Option(None, "--neuron-site", help="For architectures not in langloc's table: LAYERS:NEURON:DOWN module paths relative to model.base_model, e.g. layers:mlp.act_fn:mlp.down_proj.")


def _langs(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


@app.command()
def collect(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder to create or extend."),
    languages: str = typer.Option(..., "--languages", "-l", help="Comma-separated ISO 639-1 codes, e.g. en,fr,zh."),
    model: str = ModelOpt,
    corpus: str = typer.Option("bible", help="bible (built-in, 22 languages), a folder of <lang>.txt|.jsonl|.parquet, or hf:PATH[:CONFIG] with {lang}."),
    tokens: int = typer.Option(100_000, help="Token budget per language."),
    window: int = typer.Option(512, help="Tokens per packed window (no padding)."),
    batch_size: int = typer.Option(4, help="Windows per forward pass."),
    seed: int = typer.Option(0, help="Seed for the order of documents."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    neuron_site: Optional[str] = SiteOpt,
    resume: bool = typer.Option(False, help="Continue an interrupted collection from its last checkpoint."),
    checkpoint_every: int = typer.Option(50, help="Checkpoint counters and position every N batches."),
    segments: int = typer.Option(0, help="Also store each neuron's mean response on N text segments per language (needed by identify --method expert_units; 100 is a good start)."),
    segment_tokens: int = typer.Option(32, help="Tokens per segment for --segments."),
):
    """Count, per language and neuron, how often the neuron is active (> 0), on the decoder body only.

    Adds to an existing run folder without recomputing its languages. Checkpoints as it goes:
    after a crash, Ctrl-C or kill, run the same command with --resume. Runs data-parallel
    under torchrun (e.g. [bold]torchrun --nproc-per-node 8 $(which langloc) collect ...[/]);
    the result is bit-identical to one process.

    Example: [bold]langloc collect -m gemma-3-270m -l en,fr,zh --tokens 50000 -o runs/gemma[/]
    """
    from langloc.data import load_corpus
    from langloc.models import load_model
    from langloc.stats import collect as do_collect

    c = load_corpus(corpus, seed=seed)
    c.require_text(_langs(languages), "stats")
    from langloc import distributed

    lm = load_model(model, dtype=dtype, device=device or distributed.local_device(), neuron_site=neuron_site)
    stats = do_collect(lm, c, _langs(languages), out=out_dir, tokens=tokens, window=window,
                       batch_size=batch_size, seed=seed, resume=resume, checkpoint_every=checkpoint_every)
    if not distributed.is_main():
        return
    if segments:
        from langloc.workflows import collect_responses_run

        collect_responses_run(lm, c, _langs(languages), out_dir, segments=segments, segment_tokens=segment_tokens)
    for name, lines in getattr(c, "skipped", {}).items():
        err.print(f"[yellow]warning:[/] skipped {len(lines)} line(s) of {name} that are not UTF-8 text")
    t = Table("language", "tokens", "mean P(active)")
    p = stats.activation_probability()
    for k, lang in enumerate(stats.languages):
        t.add_row(lang, str(int(stats.n[k])), f"{p[k].mean():.3f}")
    out.print(t)
    out.print(f"statistics in {out_dir}/stats; next: langloc identify {out_dir}")


@app.command()
def identify(
    run: Path = typer.Argument(..., help="Run folder made by collect."),
    method: str = typer.Option("lape", help="lape (Tang et al. 2024), thresholding (Mondal et al. 2025) or expert_units (Kojima et al. 2024; needs collect --segments)."),
    top_rate: float = typer.Option(0.01, help="lape: share of all L*I neurons kept (lowest entropy)."),
    filter_rate: float = typer.Option(0.95, help="lape: exclude neurons whose largest activation probability is not above this quantile of all probabilities."),
    activation_bar_ratio: float = typer.Option(0.95, help="lape: assign a kept neuron to every language whose probability is above this quantile."),
    rate: float = typer.Option(0.00125, help="thresholding: share of L*I neurons per language (highest activation probability)."),
    other_max: Optional[float] = typer.Option(None, help="thresholding: keep only neurons whose activation probability in every other language is at most this (e.g. 0.5); a langloc addition, not in the reference code."),
    units: int = typer.Option(2000, "--units", help="expert_units: units per language (top half and bottom half by average precision)."),
    output: Optional[Path] = typer.Option(None, "--output", help="Neuron set file (default RUN/neurons/<method>.json)."),
):
    """Find language-specific neurons and plot them per layer and their overlap.

    Examples: [bold]langloc identify runs/gemma[/] (LAPE),
    [bold]langloc identify runs/gemma --method thresholding --other-max 0.5[/],
    [bold]langloc identify runs/gemma --method expert_units --units 2000[/]
    """
    from langloc.workflows import identify_run

    ns, path = identify_run(run, method=method, top_rate=top_rate, filter_rate=filter_rate,
                            activation_bar_ratio=activation_bar_ratio, rate=rate, other_max=other_max,
                            n_units=units, out=output)
    t = Table("language", "neurons", "per layer")
    for lang, row in zip(ns.languages, ns.per_layer_counts().tolist()):
        t.add_row(lang, str(sum(row)), " ".join(map(str, row)))
    out.print(t)
    out.print(f"{ns.unique_count()} distinct neurons ({method}) -> {path}; plots in {run}/plots")


@app.command()
def compare(
    neurons: list[Path] = typer.Argument(..., help="Two or more neuron set files (e.g. RUN/neurons/*.json)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for compare.csv and compare.png."),
):
    """How much the neuron sets of different methods agree, per language and layer.

    Sizes, shared neurons and Jaccard similarity, as a CSV and a heatmap.

    Example: [bold]langloc compare runs/gemma/neurons/lape.json runs/gemma/neurons/thresholding.json -o runs/gemma/compare[/]
    """
    from rich import box

    from langloc.workflows import compare_run

    rows, path = compare_run(neurons, out_dir)
    t = Table("a", "b", "language", "size a", "size b", "shared", "Jaccard", box=box.SIMPLE_HEAD,
              title="all layers together (per-layer rows in the CSV)")
    for r in rows:
        if r["layer"] == "all":
            t.add_row(r["a"], r["b"], r["language"], str(r["size_a"]), str(r["size_b"]), str(r["shared"]),
                      "-" if r["jaccard"] is None else f"{r['jaccard']:.3f}")
    out.print(t)
    out.print(f"-> {path}, {out_dir}/compare.png")


@app.command()
def steer(
    neurons: list[Path] = typer.Option(..., "--neurons", "-n", help="Neuron set file(s); each is one method in the table. Repeat the option to compare methods."),
    targets: str = typer.Option(..., "--target", "-t", help="Target language(s), comma-separated, e.g. fr,zh,ja."),
    source: Optional[str] = typer.Option("en", help="Source language whose neurons the off modes zero ('' for none)."),
    run: Optional[Path] = typer.Option(None, help="Run folder with the statistics the values come from (mean active value, quantiles, expert-unit medians)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for steer.json, summary.csv, generations.jsonl, interventions/, steering.png."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's / the neuron set's)."),
    prompts: str = typer.Option("builtin:en", help="builtin:<lang> (its held-out part; built-in: en, fr, es, de, zh, ru, ja) or a file with one prompt per line."),
    tune_prompts: Optional[str] = typer.Option(None, help="Prompts for the strength search (default: the built-in set's tuning part)."),
    search: bool = typer.Option(True, help="Search the setting (mode on / off / on+off, strength) on the tuning prompts, then evaluate the best on the held-out prompts."),
    mode: str = typer.Option("on", help="Without --search: on (force target neurons), off (zero source neurons) or on+off."),
    value: str = typer.Option("auto", help="Value the target neurons are set to: auto (expert units: median_response; else mean_active), mean_active, mean, median, p90 (any pNN), median_response, or a number."),
    strength: float = typer.Option(1.0, help="Without --search: multiplier of the value."),
    strengths: str = typer.Option("1,1.5,2,3,4", help="Strengths the search tries."),
    positions: Optional[str] = typer.Option(None, help="Positions intervened on: all, prompt (the prefill only) or generated (new tokens only). The search tries each listed mode (comma-separated; default all,generated); without --search give one (default all)."),
    max_new_tokens: int = typer.Option(32, help="Tokens generated per prompt."),
    sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (with --sample)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (with --sample)."),
    no_repeat_ngram_size: int = typer.Option(3, help="Never repeat an n-gram of this size (Hugging Face generate; 0: off). Plain greedy decoding of small models loops: gemma-3-270m repeats itself in 16 of 36 unsteered English continuations, which the fluency rule would count as failures."),
    repetition_penalty: float = typer.Option(1.0, help="Hugging Face generate's repetition penalty (1.0: off). Forcing neurons to a constant drives small models into loops; the README's steering table uses 1.3."),
    seed: int = typer.Option(0, help="Seed for sampling; the random controls' and the bootstrap's seeds are derived from it (docs/statistics.md)."),
    batch_size: int = typer.Option(16, help="Prompts per generate call."),
    max_ppl: float = typer.Option(200.0, help="Fluent only if the unsteered model's perplexity of the output is at most this."),
    min_distinct: float = typer.Option(0.5, help="Fluent only if at least this share of the output's tokens are distinct."),
    controls: bool = typer.Option(True, help="Also steer with random neurons of the same count per layer."),
    control_draws: int = typer.Option(3, help="Independent draws of each random control; its rates are their mean (range of the success rate in summary.csv)."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
):
    """Switch language neurons on/off during generation and measure the output language.

    Every output is labelled by py3langid and counts as a success only if it is also fluent
    (enough distinct tokens, low perplexity under the unsteered model). The same setting on
    random neurons is the control.

    Example: [bold]langloc steer -n runs/gemma/neurons/lape.json -t fr,zh --run runs/gemma -o steer/lape[/]
    """
    from langloc.controls import check_draws
    from langloc.steer.judge import FluencyRule
    from langloc.steer.steering import Generation, SteerSetting
    from langloc.steer.study import format_table
    from langloc.workflows import steer_run

    try:
        strength_list = tuple(float(x) for x in strengths.split(",") if x.strip())
    except ValueError:
        raise LanglocError(f"--strengths must be comma-separated numbers, got {strengths!r}") from None
    from langloc.intervene.intervention import POSITIONS

    positions = positions or ("all,generated" if search else "all")
    position_list = tuple(p.strip() for p in positions.split(",") if p.strip())
    if not position_list or any(p not in POSITIONS for p in position_list):
        raise LanglocError(f"--positions must be one or more of {', '.join(POSITIONS)}, got {positions!r}")
    if not search and len(position_list) > 1:
        raise LanglocError(f"--positions: without --search give one position mode, got {positions!r}")
    if value != "auto":
        from langloc.intervene.values import parse_source

        parse_source(value)
    setting = SteerSetting(mode, strength, value, position_list[0])
    gen = Generation(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_p=top_p,
                     seed=seed, batch_size=batch_size, repetition_penalty=repetition_penalty,
                     no_repeat_ngram_size=no_repeat_ngram_size)
    result = steer_run(neurons, _langs(targets), source=source or None, run=run, model=model, dtype=dtype,
                       device=device, prompts=prompts, tune_prompts=tune_prompts, search=search, setting=setting,
                       strengths=strength_list, gen=gen, fluency=FluencyRule(max_ppl=max_ppl, min_distinct=min_distinct),
                       controls=controls, seed=seed, out=out_dir, positions=position_list, value=value,
                       control_draws=check_draws(control_draws))
    from rich import box

    t = Table("method", "target", "setting", "fluent in target", "in target", "random control", "fluent",
              "median ppl", "distinct", box=box.SIMPLE_HEAD, title=f"steering {result['prompts']['eval']} held-out prompts",
              caption="in brackets: 95% bootstrap interval over prompts")
    for row in format_table(result["rows"]):
        t.add_row(*row)
    out.print(t)
    out.print(f"-> {out_dir}/summary.csv, generations.jsonl, steering.png")


@app.command()
def ablate(
    run: Path = typer.Argument(..., help="Run folder made by collect (and identify)."),
    neurons: Optional[Path] = typer.Option(None, help="Neuron set (default RUN/neurons/lape.json)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's)."),
    languages: Optional[str] = typer.Option(None, "--languages", "-l", help="Subset of the set's languages."),
    eval_tokens: int = typer.Option(2048, help="Held-out tokens per language for perplexity."),
    corpus: Optional[str] = typer.Option(None, help="Corpus whose eval split is used (default: the run's corpus)."),
    window: Optional[int] = typer.Option(None, help="Tokens per evaluation window (default: the run's window, else 512)."),
    batch_size: int = typer.Option(2, help="Windows per forward pass."),
    controls: bool = typer.Option(True, help="Also zero random neurons of the same count per layer."),
    control_draws: int = typer.Option(3, help="Independent draws of each random control; the control is reported as their mean and range (ratio_min, ratio_max)."),
    seed: int = typer.Option(0, help="Run seed: each control's draws and the bootstrap resamples are derived from it and their names (docs/statistics.md)."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
):
    """Zero each language's neurons and measure every language's perplexity (exp of mean NLL).

    Writes RUN/ablation.csv (deactivated,evaluated,base_ppl,ppl,ratio,ratio_lo,ratio_hi,
    ratio_min,ratio_max,draws: ratio_lo/hi is the 95% bootstrap interval over held-out windows)
    and RUN/plots/ablation.png. Runs its conditions in parallel under torchrun (e.g.
    [bold]torchrun --nproc-per-node 2 $(which langloc) ablate ...[/]); the CSV is the one
    process's.

    Example: [bold]langloc ablate runs/gemma --eval-tokens 4096[/]
    """
    from langloc import distributed
    from langloc.controls import check_draws
    from langloc.workflows import ablate_run

    check_draws(control_draws)
    rows, path = ablate_run(run, neurons=neurons, model=model, dtype=dtype, device=device or distributed.local_device(),
                            languages=_langs(languages) if languages else None, eval_tokens=eval_tokens,
                            batch_size=batch_size, controls=controls, seed=seed, corpus=corpus, window=window,
                            control_draws=control_draws)
    if not distributed.is_main():
        return
    _print_ablation(rows)
    out.print(f"-> {path}, {run}/plots/ablation.png")


def _ratio(v: float) -> str:
    from langloc.report.plots import format_ratio

    return format_ratio(v)


NO_EFFECT = "~"  # printed after a ratio whose 95% interval includes 1


def _own(name: str, evald: list[str]) -> str | None:
    """The evaluated language a zeroed set belongs to (``fr``, ``random:fr``, ``mono:fr``)."""
    lang = name.split(":", 1)[-1]
    return lang if lang in evald else None


def _print_ablation(rows) -> None:
    from rich import box

    from langloc.evaluate.bootstrap import includes

    evald = list(dict.fromkeys(r.evaluated for r in rows))
    names = list(dict.fromkeys(r.deactivated for r in rows))
    interval = lambda r: (getattr(r, "ratio_lo", float("nan")), getattr(r, "ratio_hi", float("nan")))  # noqa: E731
    marked = any(includes(*interval(r)) for r in rows)
    # The title makes rich widen the table to the terminal; without a minimum width the label
    # column is the one it squeezes ("random:…").
    t = Table(Column("zeroed", no_wrap=True, min_width=max(map(len, names + ["zeroed"]))),
              *[Column(e, justify="right") for e in evald],
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True, show_edge=False,
              title="perplexity ratio (zeroed / base) on each language's held-out text",
              caption=f"{NO_EFFECT}: the 95% interval includes 1 (no effect)" if marked else None)
    for name in names:
        cells = {r.evaluated: r for r in rows if r.deactivated == name}

        def cell(e):
            r = cells[e]
            text = _ratio(r.ratio) + (NO_EFFECT if includes(*interval(r)) else "")
            return f"[bold]{text}[/]" if name in (e, f"mono:{e}") else text

        t.add_row(name, *[cell(e) for e in evald])
    out.print(t)
    if not any(interval(r)[0] == interval(r)[0] for r in rows):
        return
    # The intervals of each set's own language (or, without one, its largest ratio); every
    # cell's interval is in the CSV.
    s = Table(Column("zeroed", no_wrap=True), "on", Column("ratio", justify="right"),
              Column("95% interval", justify="right"), Column("range over draws", justify="right"),
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
              title="95% bootstrap intervals (held-out windows)", caption="every cell's interval is in the CSV")
    for name in names:
        cells = {r.evaluated: r for r in rows if r.deactivated == name}
        own = _own(name, evald)
        r = cells[own] if own else max(cells.values(), key=lambda x: x.ratio)
        lo, hi = interval(r)
        draws = getattr(r, "draws", None)
        spread = f"{_ratio(r.ratio_min)}-{_ratio(r.ratio_max)} ({draws} draws)" if draws and draws > 1 else ""
        s.add_row(name, r.evaluated, _ratio(r.ratio), f"[{_ratio(lo)}, {_ratio(hi)}]" if lo == lo else "-", spread)
    out.print(s)


@app.command()
def importance(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Region folder to create or extend."),
    languages: str = typer.Option(..., "--languages", "-l", help="Comma-separated ISO 639-1 codes; the core region sums over them (Zhang et al.: ar,es,ru,zh,ko,vi)."),
    model: str = ModelOpt,
    corpus: str = typer.Option("bible", help="bible, a folder of <lang>.txt|.jsonl|.parquet, or hf:PATH[:CONFIG]."),
    tokens: int = typer.Option(16384, help="Token budget per language (the paper: 10k-100k windows of 512)."),
    window: int = typer.Option(512, help="Tokens per packed window."),
    batch_size: int = typer.Option(1, help="Windows per forward/backward pass."),
    precision: str = typer.Option("bfloat16", help="Storage of the scores: bfloat16 (float32's range, half the size) or float32."),
    seed: int = typer.Option(0, help="Seed for the order of documents."),
    dtype: str = typer.Option("float32", help="Model dtype for the gradients (float32 recommended)."),
    device: Optional[str] = DeviceOpt,
    neuron_site: Optional[str] = SiteOpt,
    resume: bool = typer.Option(False, help="Continue an interrupted language from its last checkpoint."),
    checkpoint_every: int = typer.Option(25, help="Checkpoint the summed gradients every N batches."),
):
    """Score every decoder-layer weight for each language: |θ · ∂L/∂θ| (Zhang et al.).

    The gradient is that of the mean token NLL over the whole budget, summed over batches
    with no optimiser step; embeddings, LM head and norms are not scored.

    Writes OUT/importance/<lang>.safetensors. Runs data-parallel under torchrun.

    Example: [bold]langloc importance -m gemma-3-270m -l ar,es,ru,zh,ko,vi --tokens 16384 -o runs/regions[/]
    """
    from langloc import distributed
    from langloc.data import load_corpus
    from langloc.models import load_model
    from langloc.regions.importance import compute_importance

    c = load_corpus(corpus, seed=seed)
    c.require_text(_langs(languages), "stats")
    lm = load_model(model, dtype=dtype, device=device or distributed.local_device(), neuron_site=neuron_site)
    compute_importance(lm, c, _langs(languages), out_dir, tokens=tokens, window=window, batch_size=batch_size,
                       precision=precision, resume=resume, checkpoint_every=checkpoint_every)
    if distributed.is_main():
        out.print(f"scores in {out_dir}/importance; next: langloc regions {out_dir}")


def _folder_model(folder: Path, model: Optional[str], dtype: str, device: Optional[str]):
    from langloc.regions.study import folder_info
    from langloc.workflows import _load_model_of

    return _load_model_of(folder_info(folder), model, dtype, device, str(folder))


@app.command()
def regions(
    folder: Path = typer.Argument(..., help="Region folder made by langloc importance."),
    rate: float = typer.Option(0.01, help="Share of each weight matrix in the Top / Bottom / Random regions."),
    languages: Optional[str] = typer.Option(None, "--languages", "-l", help="Languages to sum (default: all scored)."),
    seed: int = typer.Option(0, help="Seed of the Random region."),
    rounding: str = typer.Option("floor", help="Entries per region: floor = int(rate * entries), the reference code's; nearest = round(rate * entries)."),
    probe_tokens: int = typer.Option(1024, help="Held-out tokens per language to find the residual stream's largest activations."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
):
    """Core (Top / Bottom / Random) and monolingual (top and bottom) regions per weight matrix, and where they sit.

    The core score of an entry is the sum of its importance over the languages. Where the Top
    region sits: its entries per hidden dimension, against the residual stream's largest
    ("massive") activations.

    Writes FOLDER/regions.safetensors, dimensions.csv, regions.json and plots/regions.png.

    Example: [bold]langloc regions runs/regions --rate 0.01[/]
    """
    from langloc.regions.regions import check_rate, check_rounding
    from langloc.regions.study import folder_info, regions_step

    check_rate(rate)
    check_rounding(rounding)
    folder_info(folder)
    lm = _folder_model(folder, model, dtype, device)
    s = regions_step(folder, lm, languages=_langs(languages) if languages else None, rate=rate, seed=seed,
                     probe_tokens=probe_tokens, rounding=rounding)
    t = Table("region", "entries", title=f"regions of {s['model']['name']} ({rate:.1%} of each matrix)")
    for name, n in s["sizes"].items():
        t.add_row(name, f"{n:,}")
    out.print(t)
    dense = ", ".join(f"{d['dimension']} ({d['concentration']}x)" for d in s["densest_dimensions"])
    loud = ", ".join(f"{d['dimension']} ({d['max_abs_activation']:g})" for d in s["massive_activation_dimensions"])
    out.print(f"Top region densest on dimensions {dense}; largest residual activations on {loud} "
              f"(median {s['median_abs_activation']:g}); shared: {s['overlap'] or 'none'}")
    out.print(f"-> {folder}/regions.safetensors, dimensions.csv, plots/regions.png")


@app.command("region-ablate")
def region_ablate(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    languages: str = typer.Option(..., "--languages", "-l", help="Languages to evaluate (any in the corpus)."),
    regions_: Optional[str] = typer.Option(None, "--regions", help="Regions to zero (default: top,bottom,random and every mono:<lang>)."),
    eval_tokens: int = typer.Option(1024, help="Held-out tokens per language for perplexity."),
    corpus: Optional[str] = typer.Option(None, help="Corpus whose eval split is used (default: the folder's)."),
    batch_size: int = typer.Option(2, help="Windows per forward pass."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
):
    """Zero a region's weights and measure every language's perplexity ratio.

    Writes FOLDER/region_ablation.csv and plots/region_ablation.png.

    Example: [bold]langloc region-ablate runs/regions -l en,zh,fr,es,ru,ja,ar,ko,vi,hi[/]
    """
    from langloc.regions.study import region_ablate_step

    lm = _folder_model(folder, model, dtype, device)
    rows, path = region_ablate_step(folder, lm, languages=_langs(languages),
                                    names=_langs(regions_) if regions_ else None, eval_tokens=eval_tokens,
                                    batch_size=batch_size, corpus=corpus)
    _print_ablation(rows)
    out.print(f"-> {path}, {folder}/plots/region_ablation.png")


@app.command()
def perturb(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    languages: str = typer.Option(..., "--languages", "-l", help="Languages to evaluate."),
    matrix: Optional[str] = typer.Option(None, help="LAYER.MODULE (e.g. 1.mlp.down_proj) or a full parameter name. Default: the lowest layer's matrix with the most Top entries on the densest dimension."),
    dims: Optional[str] = typer.Option(None, help="Comma-separated hidden dimensions. Default: the Top region's densest dimension and an ordinary (median) one."),
    scale: Optional[float] = typer.Option(None, help="Multiply the parameter by this (default 4 when --value is not given)."),
    value: Optional[float] = typer.Option(None, help="Set the parameter to this instead."),
    whole: bool = typer.Option(False, help="Perturb every entry of the matrix on the dimension, not one."),
    eval_tokens: int = typer.Option(1024, help="Held-out tokens per language for perplexity."),
    batch_size: int = typer.Option(2, help="Windows per forward pass."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
):
    """Scale or set one parameter on a hidden dimension and measure perplexity.

    The entry perturbed is the one with the largest |θ| among the Top region's entries on that
    dimension. On a dimension the core region concentrates on, one parameter can break the
    model; on an ordinary one nothing happens.

    Writes FOLDER/perturb.csv.

    Example: [bold]langloc perturb runs/regions -l en,fr,zh --scale 4[/]
    """
    from langloc.regions.study import perturb_step

    if scale is not None and value is not None:
        raise LanglocError("give --scale or --value, not both")
    try:
        dim_list = [int(d) for d in _langs(dims)] if dims else None
    except ValueError:
        raise LanglocError(f"--dims must be comma-separated integers, got {dims!r}") from None
    lm = _folder_model(folder, model, dtype, device)
    table, path = perturb_step(folder, lm, languages=_langs(languages), matrix=matrix, dims=dim_list,
                               scale=4.0 if scale is None and value is None else scale, value=value, whole=whole,
                               eval_tokens=eval_tokens, batch_size=batch_size)
    t = Table("dimension", "kind", "entry", "operation", *_langs(languages),
              title=f"perplexity ratio after perturbing {table[0]['parameter']}")
    for dim in dict.fromkeys(r["dimension"] for r in table):
        cells = [r for r in table if r["dimension"] == dim]
        t.add_row(str(dim), cells[0]["kind"], str(cells[0]["index"]), cells[0]["operation"],
                  *[_ratio(r["ratio"]) for r in cells])
    out.print(t)
    out.print(f"-> {path}")


@app.command()
def train(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    language: str = typer.Option(..., "--language", help="The language to further pre-train on (its stats split)."),
    eval_languages: str = typer.Option(..., "--eval-languages", "-l", help="Languages whose held-out perplexity shows forgetting."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (one subfolder per mode)."),
    region: str = typer.Option("top", help="Region frozen in mode core (top, or e.g. mono:fr)."),
    modes: str = typer.Option("core,random,none", help="Freezing modes to run with the same seed, data and steps: core, random (the file's random region), none."),
    steps: int = typer.Option(200, help="Optimiser steps."),
    batch_size: int = typer.Option(8, help="Windows per step."),
    window: Optional[int] = typer.Option(None, help="Tokens per window (default: the folder's)."),
    lr: float = typer.Option(2e-5, help="Peak learning rate (linear warm-up, cosine decay to 10%)."),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay (matrices only)."),
    warmup: int = typer.Option(20, help="Warm-up steps."),
    max_grad_norm: float = typer.Option(1.0, help="Gradient clipping (0: none)."),
    precision: str = typer.Option("bf16", help="Autocast of the forward pass: bf16, fp16 (with a GradScaler) or fp32; weights and optimiser stay float32."),
    train_embeddings: bool = typer.Option(True, help="Also train the token embeddings (and a tied LM head). --no-train-embeddings trains the decoder layers and norms only: much cheaper with a large vocabulary."),
    eval_tokens: int = typer.Option(8192, help="Held-out tokens per language for perplexity."),
    eval_every: int = typer.Option(50, help="Measure perplexity every N steps (and at step 0)."),
    checkpoint_every: int = typer.Option(100, help="Checkpoint weights, optimiser, data position and RNG every N steps."),
    seed: int = typer.Option(0, help="Seed of the data order (the same for every mode)."),
    resume: bool = typer.Option(False, help="Continue an interrupted mode from its checkpoint."),
    corpus: Optional[str] = typer.Option(None, help="Corpus (default: the folder's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the folder's)."),
    device: Optional[str] = DeviceOpt,
):
    """Further pre-train on one language with the core region frozen, a random region frozen, or nothing.

    Frozen entries stay bit-identical (gradients masked, values restored in the float32 master
    weights and their AdamW moments zeroed after every step). Writes OUT/forgetting.csv
    (mode, step, language, ppl, ratio to step 0), OUT/summary.csv and OUT/plots/forgetting.png.

    Example: [bold]langloc train runs/regions --language fr -l en,es,ru,zh --steps 200 -o runs/forget-fr[/]
    """
    from langloc.regions.regions import Regions, default_regions_file
    from langloc.regions.study import folder_corpus, folder_info
    from langloc.train.trainer import FREEZE_MODES as MODES, forgetting

    mode_list = _langs(modes)
    bad = [m for m in mode_list if m not in MODES]
    if bad or not mode_list:
        raise LanglocError(f"unknown mode(s) {', '.join(bad) or '(none)'}; choose from {', '.join(MODES)}")
    info = folder_info(folder)
    regs = Regions.load(default_regions_file(folder))
    core, control = regs[region], regs["random"] if region == "top" else None
    c = folder_corpus(info, corpus)
    c.require_text([language], "stats")
    c.require_text(_langs(eval_languages), "eval")
    from langloc.workflows import _load_model_of

    lm = _load_model_of(info, model, "float32", device, str(folder))
    if not train_embeddings:
        for p in lm.model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    rows = forgetting(lm, c, language, core, out=out_dir, modes=mode_list, seed=seed, resume=resume,
                      control=control, region_meta=regs.meta, steps=steps, batch_size=batch_size,
                      window=window or info.get("window", 512), lr=lr, weight_decay=weight_decay, warmup=warmup,
                      max_grad_norm=max_grad_norm or None, precision=precision,
                      eval_languages=[x for x in _langs(eval_languages) if x != language], eval_tokens=eval_tokens,
                      eval_every=eval_every, checkpoint_every=checkpoint_every)
    last = max(r["step"] for r in rows)
    langs = list(dict.fromkeys(r["language"] for r in rows))
    t = Table("frozen", *langs, title=f"perplexity ratio to step 0 after {last} steps on {language}")
    for mode in mode_list:
        cells = {r["language"]: r["ratio"] for r in rows if r["mode"] == mode and r["step"] == last}
        t.add_row(mode, *[f"{cells[x]:.3f}" for x in langs])
    out.print(t)
    out.print(f"-> {out_dir}/forgetting.csv, summary.csv, plots/forgetting.png")


@app.command()
def transfer(
    neurons: Path = typer.Option(..., "--neurons", "-n", help="Neuron set (langloc identify) whose language's neurons the adapter may change."),
    language: str = typer.Option(..., "--language", help="Train on this language's items (and use its neurons)."),
    eval_languages: str = typer.Option(..., "--eval-languages", "-l", help="Languages to evaluate transfer on."),
    out_path: Path = typer.Option(..., "--out", "-o", help="CSV of accuracies per condition and language."),
    modes: str = typer.Option("neurons,random,all,none", help="neurons (masked to the set), random (same count per layer), all (plain LoRA on the MLP), none (attention LoRA only)."),
    target: str = typer.Option("en", help="Language of the answer choices (the Bible translation task)."),
    train_items: int = typer.Option(200, help="Training items (stats split)."),
    eval_items: int = typer.Option(100, help="Evaluation items per language (eval split, disjoint verses)."),
    preset: str = typer.Option("langloc", help="Adapter settings: langloc (r 8, alpha 16, gate and up projections) or mondal (the reference code's: r 8, alpha 16, gate projection only, weight decay 0.1). --r / --alpha override it."),
    r: Optional[int] = typer.Option(None, help="LoRA rank (default: the preset's, 8)."),
    alpha: Optional[int] = typer.Option(None, help="LoRA alpha (default: the preset's, 16)."),
    attention: bool = typer.Option(True, help="Also plain LoRA on the attention projections (Mondal et al.)."),
    down: bool = typer.Option(False, help="Also adapt the MLP output projection (its neuron columns)."),
    lr: float = typer.Option(1e-5, help="AdamW learning rate."),
    epochs: int = typer.Option(1, help="Epochs over the training items."),
    batch_size: int = typer.Option(8, help="Training batch size."),
    seed: int = typer.Option(0, help="Seed of items, random neurons and training."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the neuron set's)."),
    device: Optional[str] = DeviceOpt,
):
    """Neuron-masked LoRA (PEFT): fine-tune only a language's neurons, measure cross-lingual transfer.

    The task runs offline: given a verse in a language, choose its translation among 4
    candidates by log-likelihood (aligned Bible; training and evaluation verses disjoint).
    Baselines: random neurons of the same count, all neurons, no MLP adapter, no adapter.

    Example: [bold]langloc transfer -n runs/gemma/neurons/lape.json --language fr -l es,vi,id -o transfer.csv[/]
    """
    from langloc.tasks.bible_choice import bible_choice_items
    from langloc.adapters.masked_lora import ADAPTER_MODES as MODES
    from langloc.adapters.transfer import preset_settings, transfer_study
    from langloc.artefacts import write_csv
    from langloc.identify import NeuronSet
    from langloc.workflows import _load_model_of

    from langloc.manifest import make_manifest, write_manifest

    started = time.time()
    settings = preset_settings(preset, r=r, alpha=alpha)
    mode_list = _langs(modes)
    bad = [m for m in mode_list if m not in MODES]
    if bad or not mode_list:
        raise LanglocError(f"unknown mode(s) {', '.join(bad) or '(none)'}; choose from {', '.join(MODES)}")
    ns = NeuronSet.load(neurons)
    train_set = bible_choice_items(language, "stats", train_items, target=target, seed=seed)
    evals = {lang: bible_choice_items(lang, "eval", eval_items, target=target, seed=seed)
             for lang in [language, *[x for x in _langs(eval_languages) if x != language]]}
    lm = _load_model_of(ns.meta, model, "float32", device, str(neurons))
    ns.check_model(lm)
    rows = transfer_study(lm, ns.layers(language), train_items=train_set, eval_items=evals, modes=mode_list,
                          **settings, attention=attention, down=down, lr=lr, epochs=epochs,
                          batch_size=batch_size, seed=seed)
    write_csv(out_path, rows, list(dict.fromkeys(k for row in rows for k in row)))
    write_manifest(out_path, make_manifest(
        "langloc.transfer", model=lm.meta, corpus={"name": "bible", "task": "bible-choice", "target": target},
        split={"train": "stats", "eval": "eval"}, started=started,
        config={"neurons": str(neurons), "method": ns.method, "language": language, "eval_languages": list(evals),
                "modes": mode_list, "preset": preset, **settings, "attention": attention, "down": down, "lr": lr,
                "epochs": epochs, "batch_size": batch_size, "train_items": train_items, "eval_items": eval_items},
        seeds={"items": seed, "random_neurons": seed, "training": seed}), [out_path])
    t = Table("condition", *evals, title=f"choice accuracy after training on {language} items",
              caption="in brackets: 95% bootstrap interval over items")
    for cond in dict.fromkeys(r_["condition"] for r_ in rows):
        cells = {r_["lang"]: r_ for r_ in rows if r_["condition"] == cond}
        t.add_row(cond, *[f"{cells[x]['accuracy']:.2f} [{cells[x]['accuracy_lo']:.2f}, {cells[x]['accuracy_hi']:.2f}]"
                          for x in evals])
    out.print(t)
    out.print(f"-> {out_path}")


@app.command()
def share(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for categories.csv, stability.csv, attribution.csv, causal.csv, share.json and plots/."),
    tasks: str = typer.Option("bible-lm,bible-choice", "--tasks", "-t", help="Comma-separated parallel tasks: bible-lm (held-out verse given the one before), bible-choice (pick a verse's translation among 4), gsm-symbolic (needs its data, see langloc.tasks.gsm_symbolic)."),
    languages: str = typer.Option("en,fr,es,zh,ru,ja", "--languages", "-l", help="At least 2 languages; every item is the same input in each."),
    model: str = ModelOpt,
    items: int = typer.Option(50, help="Parallel items per task."),
    threshold: float = typer.Option(0.0, help="A neuron is activated in a language if its activation is above this."),
    position: str = typer.Option("last", help="last: the activation at the last prompt token (the paper's); all: over all prompt tokens, reduced by --reduce (attribution stays at the last token)."),
    reduce: str = typer.Option("any", help="With --position all: any (= max: activated if any token is above the threshold, the reference code's) or mean over the tokens."),
    gold_tokens: str = typer.Option("joint", help="Gold token for the effective score and gradients: joint (the token at the prompt's length in the tokenisation of prompt + continuation, the reference code's) or separate (the continuation tokenised on its own)."),
    top_k: int = typer.Option(800, help="top_contribution.csv: category make-up of the top_k neurons of largest contribution per layer (the reference code's 800)."),
    causal: bool = typer.Option(False, "--causal", help="Also deactivate all-shared / specific / random neurons (same count per layer) and boost all-shared ones; accuracy per language."),
    boost: str = typer.Option("1.5,2", help="Factors that --causal multiplies all-shared neurons by."),
    boost_controls: bool = typer.Option(True, help="With --causal: also boost random neurons of the same count."),
    choice_target: str = typer.Option("auto", help="Language of bible-choice's candidates; auto = en, or de if en is analysed. Must not be an analysed language."),
    max_chars: int = typer.Option(200, help="Longest verse (characters) the Bible tasks use."),
    split: str = typer.Option("eval", help="Bible split the items come from (eval = held-out chapters)."),
    seed: int = typer.Option(0, help="Seed of the item order and the random neurons."),
    batch_size: int = typer.Option(8, help="Sequences per forward pass."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    neuron_site: Optional[str] = SiteOpt,
):
    """Neuron sharing across languages: all-shared / partial-shared / specific / non-activated neurons per layer and task, attribution by category, causal tests.

    Per item (one input in K languages) a neuron is all-shared if it is activated (> threshold
    at the last prompt token) in all K languages, partial-shared in 2..K-1, specific in 1,
    non-activated in none. Attribution at the last token: |m|*||W_out[:, i]||, the effective
    score against the gold token's unembedding, and gradient x activation.

    Example: [bold]langloc share -m gemma-3-270m -l en,fr,es,zh,ru,ja --items 30 --causal -o share/[/]
    """
    from langloc.models import load_model
    from langloc.share.capture import check_gold_tokens, check_position
    from langloc.share.categories import CATEGORIES, check_threshold
    from langloc.share.causal import check_boosts
    from langloc.share.study import share_study
    from langloc.tasks import TASKS, get_task

    start = time.time()
    names, langs = _langs(tasks), _langs(languages)
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise LanglocError(f"unknown task(s) {', '.join(bad) or '(none)'}; choose from {', '.join(TASKS)}")
    if len(set(names)) != len(names):
        raise LanglocError("a task is listed twice in --tasks")
    if len(langs) < 2:
        raise LanglocError(f"sharing categories need at least 2 languages, got {len(langs)} ({languages!r})")
    threshold = check_threshold(threshold)
    check_position(position, reduce)
    check_gold_tokens(gold_tokens)
    if top_k < 1:
        raise LanglocError(f"--top-k must be at least 1, got {top_k}")
    boosts = check_boosts(_langs(boost))
    if causal and not boosts:
        raise LanglocError("--boost needs at least one factor, e.g. 1.5,2")
    if items < 1 or batch_size < 1:
        raise LanglocError(f"--items and --batch-size must be at least 1, got {items} and {batch_size}")
    options = {"bible-lm": {"max_chars": max_chars}, "bible-choice": {"max_chars": max_chars, "target": choice_target}}
    task_objs = {n: get_task(n, **options.get(n, {})) for n in names}
    # Items are built before the model loads: unknown languages or missing data fail first.
    task_items = {n: t.items(langs, items, split=split, seed=seed) for n, t in task_objs.items()}
    lm = load_model(model, dtype=dtype, device=device, neuron_site=neuron_site)
    meta = share_study(lm, task_objs, task_items, out=out_dir, threshold=threshold, position=position, reduce=reduce,
                       gold_tokens=gold_tokens, top_k=top_k, causal=causal, boosts=boosts, boost_controls=boost_controls, seed=seed, batch_size=batch_size,
                       settings={"split": split, "command": "share"})
    t = Table("task", "items", *[c.replace("_", "-") for c in CATEGORIES], "stability",
              title=f"category shares (mean over layers and items), {lm.name}, threshold {threshold:g}, {position} token")
    for n, s in meta["summary"].items():
        t.add_row(n, str(s["items"]), *[f"{100 * s['share_overall'][c]:.1f}%" for c in CATEGORIES],
                  f"{s['mean_stability']:.2f}")
    out.print(t)
    if causal:
        import csv

        with open(out_dir / "causal.csv", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for n in names:
            ct = Table("condition", "neurons", *langs, "mean", title=f"{n}: accuracy ({task_objs[n].accuracy_means})",
                       caption="below each accuracy: its 95% bootstrap interval over items")
            for cond in dict.fromkeys(r["condition"] for r in rows if r["task"] == n):
                got = {r["language"]: r for r in rows if r["task"] == n and r["condition"] == cond}
                cells = {x: float(r["accuracy"]) for x, r in got.items()}
                count = next(r["n_neurons"] for r in rows if r["task"] == n and r["condition"] == cond)

                def cell(x):
                    lo, hi = got[x].get("accuracy_lo"), got[x].get("accuracy_hi")
                    return f"{cells[x]:.3f}" + (f"\n[{float(lo):.2f}, {float(hi):.2f}]" if lo else "")

                ct.add_row(cond, count, *[cell(x) for x in langs], f"{sum(cells.values()) / len(cells):.3f}")
            out.print(ct)
    out.print(f"-> {out_dir}/categories.csv, stability.csv, attribution.csv, attribution_reference.csv, "
              f"top_contribution.csv{', causal.csv' if causal else ''}, "
              f"share.json, plots/ ({time.time() - start:.0f} s)")


@app.command()
def harness(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for results.json (the harness's results per condition) and metrics.csv."),
    tasks: str = typer.Option("", "--tasks", "-t", help="Comma-separated lm-evaluation-harness tasks, e.g. xnli_fr,belebele_fra_Latn (the harness downloads their data)."),
    bible_choice: str = typer.Option("", help="Also langloc's offline verse-translation choice task in these languages (written as harness tasks langloc_bible_choice_<lang>; needs no network)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the neuron set's, else gemma-3-270m)."),
    neurons: Optional[Path] = typer.Option(None, "--neurons", "-n", help="Neuron set (langloc identify) for --zero."),
    zero: str = typer.Option("", help="With --neurons: one condition per language, its neurons set to 0 at every position."),
    random_controls: bool = typer.Option(False, help="With --zero: also random neurons of the same count per layer."),
    intervention: list[Path] = typer.Option([], "--intervention", help="A saved intervention (e.g. steer's interventions/*.json) as one more condition; repeatable."),
    base: bool = typer.Option(True, help="Also evaluate the model with no intervention."),
    limit: Optional[float] = typer.Option(None, help="Documents per task (an integer), or a fraction of them (< 1)."),
    num_fewshot: Optional[int] = typer.Option(None, help="Few-shot examples (default: the task's own)."),
    include_path: Optional[Path] = typer.Option(None, help="Folder of your own harness task YAML files."),
    items: int = typer.Option(100, help="Items per language of --bible-choice (eval split)."),
    choice_target: str = typer.Option("en", help="Language of --bible-choice's candidates."),
    max_chars: int = typer.Option(200, help="Longest verse (characters) --bible-choice uses."),
    seed: int = typer.Option(0, help="Seed of the harness, the random controls and --bible-choice's items."),
    batch_size: int = typer.Option(8, help="Sequences per forward pass."),
    dtype: str = DtypeOpt,
    device: Optional[str] = DeviceOpt,
    neuron_site: Optional[str] = SiteOpt,
):
    """lm-evaluation-harness tasks (XNLI, XQuAD, Belebele, XStoryCloze ...) with language neurons deactivated or steered.

    Needs the optional extra: pip install 'langloc\\[harness]'. Every condition runs the same
    tasks: the model as it is (base), each --zero language's neurons zeroed (and random
    controls), each saved --intervention.

    Example: [bold]langloc harness -n runs/gemma/neurons/lape.json --zero fr,zh -t xnli_fr,xnli_zh --limit 200 -o harness/[/]
    Offline: [bold]langloc harness -n runs/gemma/neurons/lape.json --zero fr --bible-choice fr,es --items 50 -o harness/[/]
    """
    from langloc.evaluate.harness import _lm_eval, choice_task_yaml, harness_study
    from langloc.intervene import Edit, Intervention

    _lm_eval()  # a missing extra fails before anything loads
    task_list, choice_langs, zero_langs = _langs(tasks), _langs(bible_choice), _langs(zero)
    if not task_list and not choice_langs:
        raise LanglocError("give harness tasks with --tasks and/or --bible-choice LANGS")
    if zero_langs and neurons is None:
        raise LanglocError("--zero needs a neuron set (--neurons)")
    if limit is not None and (limit <= 0 or (limit >= 1 and limit != int(limit))):
        raise LanglocError(f"--limit must be a whole number of documents or a fraction in (0, 1), got {limit:g}")
    limit = int(limit) if limit is not None and limit >= 1 else limit
    ivs = {p.stem: Intervention.load(p) for p in intervention}
    if not (base or zero_langs or ivs):
        raise LanglocError("no condition to evaluate: --no-base with no --zero or --intervention")
    if choice_langs and include_path is not None:
        raise LanglocError("--bible-choice writes its own task folder; use it or --include-path, not both")
    choice_items = {}
    if choice_langs:
        from langloc.tasks.bible_choice import bible_choice_items

        # Items first (bad languages fail before the model loads); files once all is checked.
        choice_items = {f"langloc_bible_choice_{lang}": bible_choice_items(lang, "eval", items, target=choice_target,
                                                                           seed=seed, max_chars=max_chars)
                        for lang in choice_langs}
        task_list += list(choice_items)
    ns = None
    if neurons is not None:
        from langloc.identify import NeuronSet
        from langloc.workflows import _load_model_of

        ns = NeuronSet.load(neurons)
        missing = [x for x in zero_langs if x not in ns.languages]
        if missing:
            raise LanglocError(f"the neuron set has no neurons for {', '.join(missing)}; it has {', '.join(ns.languages)}")
        lm = _load_model_of(ns.meta, model, dtype, device, str(neurons))
        ns.check_model(lm)
    else:
        from langloc.models import load_model

        lm = load_model(model or "gemma-3-270m", dtype=dtype, device=device, neuron_site=neuron_site)
    conditions = {"base": None} if base else {}
    for lang in zero_langs:
        conditions[f"zero:{lang}"] = Intervention([Edit.uniform("zero", ns.layers(lang))])
        if random_controls:
            # Its own draw, from the seed derived from --seed and the condition's name (docs/statistics.md).
            conditions[f"zero:random({lang})"] = Intervention([Edit.uniform(
                "zero", ns.random_like(lang, seed, condition=f"zero:random({lang})"))])
    conditions.update(ivs)
    if choice_items:
        include_path = out_dir / "tasks"
        for name, task_items in choice_items.items():
            choice_task_yaml(include_path, name, task_items)
    rows = harness_study(lm, task_list, conditions, out=out_dir, limit=limit, num_fewshot=num_fewshot,
                         batch_size=batch_size, include_path=include_path, seed=seed,
                         settings={"command": "harness", "neurons": str(neurons) if neurons else None})
    t = Table(Column("task", overflow="fold"), "metric", *[Column(c, overflow="fold") for c in conditions],
              title=f"lm-evaluation-harness on {lm.name}")
    for task, metric in dict.fromkeys((r["task"], r["metric"]) for r in rows):
        cells = {r["condition"]: r["value"] for r in rows if r["task"] == task and r["metric"] == metric}
        t.add_row(task, metric, *[f"{cells[c]:.3f}" if c in cells else "-" for c in conditions])
    out.print(t)
    out.print(f"-> {out_dir}/metrics.csv, results.json")


@app.command("export-lape")
def export_lape_cmd(
    run: Path = typer.Argument(..., help="Run folder."),
    outdir: Path = typer.Argument(..., help="Folder for the reference-format files."),
    neurons: Optional[Path] = typer.Option(None, help="Neuron set to export as language_mask.pt (default RUN/neurons/lape.json if present)."),
):
    """Write the LAPE reference code's files: activation.<lang>.pt, language_mask.pt, languages.txt.

    Example: [bold]langloc export-lape runs/gemma lape-files/[/]
    """
    from langloc.workflows import export_run

    for p in export_run(run, outdir, neurons):
        out.print(str(p))


@app.command("import-lape")
def import_lape_cmd(
    indir: Path = typer.Argument(..., help="Folder with activation.<lang>.pt (and language_mask.pt, languages.txt)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="New run folder."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model the files were made with: stamps its fingerprint so later steps check it."),
    dtype: str = DtypeOpt,
):
    """Read the LAPE reference code's files into a langloc run folder (then identify/ablate it).

    Example: [bold]langloc import-lape lape-files/ -o runs/imported -m gemma-3-270m[/]
    """
    from langloc.models import load_model
    from langloc.workflows import import_run

    meta = load_model(model, dtype=dtype, device="cpu").meta if model else None
    out.print(f"run folder {import_run(indir, out_dir, model_meta=meta)}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("langloc-demo"), "--out", "-o", help="Run folder for the demo."),
    model: str = ModelOpt,
    languages: str = typer.Option(",".join(DEMO_LANGUAGES), "--languages", "-l"),
    tokens: int = typer.Option(16_384, help="Statistics tokens per language (at 16,384 the LAPE sets keep 89-100% of the 32,768-token sets' neurons: docs/performance.md)."),
    eval_tokens: int = typer.Option(384, help="Held-out tokens per language for perplexity."),
    eval_window: int = typer.Option(96, help="Tokens per held-out window (the bootstrap resamples windows)."),
    control_draws: int = typer.Option(1, help="Random controls per language (each costs as much as the language's set)."),
    dtype: str = typer.Option("fast", help="fast (default here: bfloat16 where the CPU computes it natively, else float32), auto, float32, bfloat16, float16."),
):
    """collect -> identify -> ablate -> plots on the Bible corpus in 10 languages, then a summary.

    At most 15 minutes on 2 CPU cores of the slowest class (AVX2 only, float32), including the
    one-time model conversion; about 6 minutes with AVX512-BF16. It prints its own estimate
    after the first batches.
    """
    from langloc.demo import DemoConfig, own_language_most, run

    config = DemoConfig(out=out_dir, model=model, languages=tuple(_langs(languages)), tokens=tokens,
                        eval_tokens=eval_tokens, eval_window=eval_window, dtype=dtype,
                        control_draws=control_draws)
    rows, ns, csv_path, seconds = run(config, say=out.print)
    _print_ablation(rows)
    langs = list(config.languages)
    worst = max((r for r in rows if r.deactivated.startswith("random:")), key=lambda r: r.ratio)
    out.print(f"\n{ns.unique_count()} language-specific neurons ({', '.join(f'{l} {ns.count(l)}' for l in ns.languages)})")
    out.print(f"zeroing a language's neurons hurts that language most for {own_language_most(rows, langs)}/{len(langs)} "
              f"languages; the largest change from a random control is x{worst.ratio:.3f} "
              f"(95% interval {worst.ratio_lo:.3f}-{worst.ratio_hi:.3f}; {worst.deactivated} on {worst.evaluated})")
    out.print(f"files: {csv_path}, {out_dir}/neurons/lape.json, {out_dir}/plots/*.png ({seconds:.0f} s)")


class Interrupted(Exception):
    """Raised by the SIGINT handler: click would turn KeyboardInterrupt into a bare 'Aborted!'."""


def _on_sigint(signum, frame):
    raise Interrupted()


def main() -> None:
    import signal

    from langloc import distributed

    signal.signal(signal.SIGINT, _on_sigint)
    try:
        distributed.init_from_env()
        app()
    except LanglocError as exc:
        # escape: messages name things like 'langloc[harness]' that rich would take for markup
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt):
        err.print("[yellow]interrupted:[/] finished artefacts are kept; rerun the same command with --resume to continue")
        sys.exit(130)
    except OSError as exc:
        # Disk full, permission denied, ...: artefacts are written atomically, so none is half-written.
        err.print(f"[red]error:[/] {escape(str(exc.strerror or exc))} ({escape(str(getattr(exc, 'filename', '') or 'while writing'))}); "
                  "no partial file was left", highlight=False, soft_wrap=True)
        sys.exit(2)



if __name__ == "__main__":
    main()
