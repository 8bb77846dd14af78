"""langloc command line: a thin layer over :mod:`langloc.workflows` (the steps that make a run
folder) and :mod:`langloc.studies` (the experiments). Every command parses its options, builds
the config, runs and prints (:mod:`langloc.console`).

Every failure the user can fix is a LanglocError, printed as one line ``error: ...`` with exit
status 2; nothing is left half-written because every artefact is written atomically.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
import typing
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from langloc.demo import DemoConfig
from langloc.errors import LanglocError
from langloc.identify.methods import METHODS
from langloc import console as tables
from langloc.models.loading import DEFAULT_MODEL
from langloc.regions.importance import ImportanceConfig
from langloc.studies import STUDIES
from langloc.studies.base import field_default, split_list
from langloc.workflows import CollectConfig, IdentifyConfig, RegionsConfig


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

MODEL_HELP = "Hugging Face id, local folder, or alias: gemma-3-270m, smollm2-135m, qwen2.5-coder-1.5b."
DTYPE_HELP = "auto (float32 on CPU, bfloat16 on GPU), fast (bfloat16 where the CPU/GPU computes it natively, else float32), float32, bfloat16 or float16."
DEVICE_HELP = "cpu, cuda, cuda:1, or auto (device_map='auto': spread a large model over all GPUs). Default: cuda if available."
SITE_HELP = "For architectures not in langloc's table: LAYERS:NEURON:DOWN module paths relative to model.base_model, e.g. layers:mlp.act_fn:mlp.down_proj."
ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP)
DtypeOpt = typer.Option("auto", help=DTYPE_HELP)
LidOpt = typer.Option(False, "--lid-filter", help="Keep only documents (lines of a .txt corpus) that py3langid gives their language with probability >= --lid-threshold; report what is dropped, and filter the held-out split of later steps the same way (needs langloc[langid]).")
LidThresholdOpt = typer.Option(0.5, help="With --lid-filter: the least probability of the language (over the 22 Bible languages and it) a document needs to be kept.")

# The settings of a command are its study's Config (the demo's: DemoConfig, a build step's: its
# config in langloc.workflows), and so are their defaults: the options read them from there
# (opt), so that each default is stated once. An identification method's settings are its own
# class (langloc.identify.methods), whose options method_options adds. tests/test_defaults.py
# checks every option against its field.
CONFIGS = {**{name: study.Config for name, study in STUDIES.items()}, "demo": DemoConfig, "collect": CollectConfig,
           "identify": IdentifyConfig, "importance": ImportanceConfig, "regions": RegionsConfig}


def opt(command: str, setting: str, *flags: str, repeat: bool = False, **kwargs):
    """A typer option whose default is field ``setting`` of ``command``'s config, written as the
    command line takes it: a tuple as comma-separated text, or as a list for a repeatable option
    (``repeat``). ``flags`` and ``kwargs`` (help, ...) as typer.Option takes them."""
    value = field_default(CONFIGS[command], setting)
    if isinstance(value, tuple):
        value = list(value) if repeat else ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return typer.Option(value, *flags, **kwargs)


def method_options(validate: bool = False):
    """Add to the command below one option per setting of every identification method (of the
    methods that work on the counters alone, for ``validate``): identify's default to the
    setting's default with its help; validate's to None (the set's recorded settings, else
    identify's). The command takes them as ``**settings``."""

    def add(command):
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        for name, m in METHODS.items():
            if validate and not m.counters:
                continue
            hints = typing.get_type_hints(m.Settings)
            for f in dataclasses.fields(m.Settings):
                if validate:
                    option = typer.Option(None, f"--{f.name.replace('_', '-')}",
                                          help=f"For the stability check, {f.metadata['help']}")
                    tp = Optional[hints[f.name]]
                else:
                    option = typer.Option(f.default, f.metadata.get("flag", f"--{f.name.replace('_', '-')}"),
                                          help=f.metadata["help"])
                    tp = hints[f.name]
                params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=tp))
        setattr(command, "__signature__", signature.replace(parameters=params))  # the protocol typer reads
        return command

    return add


def _config(cls, options: dict, **renamed):
    """A build step's config from a command's options (every option named like a field)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in options.items() if k in names}, **renamed})


def _langs(spec: str) -> list[str]:
    return split_list(spec)


def _lid(on: bool, threshold: float) -> dict | None:
    """load_corpus's lid_filter for --lid-filter / --lid-threshold."""
    return {"threshold": threshold} if on else None


def _notes(corpus, languages: list[str]) -> None:
    """What was skipped of the text (bad encoding, the language-ID filter), on stderr."""
    for line in tables.corpus_notes(corpus, languages):
        err.print(line, highlight=False, soft_wrap=True)


def _show(*items) -> None:
    """Print tables and lines (lists of them are flattened); under torchrun the first process
    prints, the others (whose studies return the same results and write nothing) do not."""
    from langloc import distributed

    if not distributed.is_main():
        return
    for item in items:
        for x in item if isinstance(item, list) else [item]:
            out.print(x)


def _run(name: str, lm, options: dict, where: Path, **renamed):
    """Run the study ``name`` with the config built from a command's options."""
    study = STUDIES[name]
    return study.run(lm, study.Config.from_options(options, **renamed), where)


@app.command()
def collect(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Run folder to create or extend."),
    languages: str = typer.Option(..., "--languages", "-l", help="Comma-separated ISO 639-1 codes, e.g. en,fr,zh."),
    model: str = opt("collect", "model", "--model", "-m", help=MODEL_HELP),
    corpus: str = opt("collect", "corpus", help="bible (built-in, 22 languages), a folder of <lang>.txt|.jsonl|.parquet, or hf:PATH[:CONFIG] with {lang}."),
    tokens: int = opt("collect", "tokens", help="Token budget per language."),
    window: int = opt("collect", "window", help="Tokens per packed window (no padding)."),
    batch_size: int = opt("collect", "batch_size", help="Windows per forward pass."),
    seed: int = opt("collect", "seed", help="Seed for the order of documents."),
    dtype: str = opt("collect", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("collect", "device", help=DEVICE_HELP),
    neuron_site: Optional[str] = opt("collect", "neuron_site", "--neuron-site", help=SITE_HELP),
    resume: bool = opt("collect", "resume", help="Continue an interrupted collection from its last checkpoint."),
    checkpoint_every: int = opt("collect", "checkpoint_every", help="Checkpoint counters and position every N batches."),
    segments: int = opt("collect", "segments", help="Also store each neuron's mean response on N text segments per language (needed by identify --method expert_units; 100 is a good start)."),
    segment_tokens: int = opt("collect", "segment_tokens", help="Tokens per segment for --segments."),
    residual_sample: int = opt("collect", "residual_sample", help="Also keep a seeded sample of N tokens' residual states (every decoder layer's output) per language, for steer's probe, lda and pca methods (2000 is a good start); 0: none. Disk: N x layers x hidden x 2 bytes per language (bfloat16), e.g. gemma-3-270m (18 x 640), N=2000: 46 MB per language. The same for any batch size or number of processes."),
    lid_filter: bool = LidOpt,
    lid_threshold: float = LidThresholdOpt,
):
    """Count, per language and neuron, how often the neuron is active (> 0), on the decoder body only.

    Adds to an existing run folder without recomputing its languages. Checkpoints as it goes:
    after a crash, Ctrl-C or kill, run the same command with --resume. Runs data-parallel
    under torchrun (e.g. [bold]torchrun --nproc-per-node 8 $(which langloc) collect ...[/]);
    the result is bit-identical to one process.

    Example: [bold]langloc collect -m gemma-3-270m -l en,fr,zh --tokens 50000 -o runs/gemma[/]
    """
    from langloc import distributed
    from langloc.workflows import collect_run

    stats, c = collect_run(_config(CollectConfig, locals(), out=out_dir, languages=tuple(_langs(languages)),
                                   lid_filter=_lid(lid_filter, lid_threshold)))
    if distributed.is_main():
        _notes(c, _langs(languages))
        _show(tables.collect(stats), f"statistics in {out_dir}/stats; next: langloc identify {out_dir}")


@app.command()
@method_options()
def identify(
    run: Path = typer.Argument(..., help="Run folder made by collect."),
    method: str = opt("identify", "method", help="One of: " + ", ".join(f"{k} ({m.about})" for k, m in METHODS.items()) + "."),
    output: Optional[Path] = opt("identify", "output", "--output", help="Neuron set file (default RUN/neurons/<method>.json)."),
    **settings,
):
    """Find language-specific neurons and plot them per layer and their overlap.

    Examples: [bold]langloc identify runs/gemma[/] (LAPE),
    [bold]langloc identify runs/gemma --method thresholding --other-max 0.5[/],
    [bold]langloc identify runs/gemma --method expert_units --units 2000[/]
    """
    from langloc.workflows import identify_run

    ns, path = identify_run(run, IdentifyConfig(method=method, output=output), **settings)
    _show(tables.identify(ns), f"{ns.unique_count()} distinct neurons ({method}) -> {path}; plots in {run}/plots")


@app.command()
def compare(
    neurons: list[Path] = typer.Argument(..., help="Two or more neuron set files (e.g. RUN/neurons/*.json)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for compare.csv and compare.png."),
):
    """How much the neuron sets of different methods agree, per language and layer.

    Sizes, shared neurons and Jaccard similarity, as a CSV and a heatmap.

    Example: [bold]langloc compare runs/gemma/neurons/lape.json runs/gemma/neurons/thresholding.json -o runs/gemma/compare[/]
    """
    m = _run("compare", None, locals(), out_dir)
    _show(tables.compare(m.result), f"-> {m.path}, {out_dir}/compare.png")


@app.command()
def steer(
    targets: str = typer.Option(..., "--target", "-t", help="Target language(s), comma-separated, e.g. fr,zh,ja (each needs built-in native prompts: en fr es de zh ru ja ar hi vi id)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for steer.json, summary.csv, methods.csv, matrix.csv, native.csv, generations.jsonl, interventions/, steering.png, native_ratio.png."),
    neurons: list[Path] = opt("steer", "neurons", "--neurons", "-n", repeat=True, help="Neuron set file(s); each is one method in the table. Repeat the option to compare methods."),
    methods: str = opt("steer", "methods", help="Methods beside the neuron sets, in this order, comma-separated (docs/methods.md §7a): diffmean (alpha typical norms along mean residual state on the target - on the source, added to chosen layers' outputs; needs --run), probe, lda, pca (the same, along a direction fitted on the run's residual sample, target vs source: needs --run collected with --residual-sample N), prompting (no intervention: an instruction to continue in the target language, through the chat template where the tokenizer has one). E.g. prompting,diffmean,probe,lda,pca."),
    diffmean: bool = opt("steer", "diffmean", help="--no-diffmean drops diffmean from --methods."),
    source: str = opt("steer", "source", help="Language of the prompts: DiffMean subtracts its mean, the off modes zero its neurons."),
    matrix_sources: str = opt("steer", "matrix_sources", help="Other source languages (comma-separated, built-in prompts, all of them held out) steered with the settings chosen for --source: the source x target matrix, for the best method and LAPE."),
    run: Optional[Path] = opt("steer", "run", "--run", "--run-folder", help="Run folder with the statistics (mean active values, residual means, expert-unit medians). Under torchrun write --run-folder: torchrun's own parser refuses --run as ambiguous."),
    model: Optional[str] = opt("steer", "model", "--model", "-m", help="Model (default: the run's / the neuron set's)."),
    prompts: str = opt("steer", "prompts", help="builtin:<lang> (its held-out part) or a file with one prompt per line."),
    tune_prompts: Optional[str] = opt("steer", "tune_prompts", help="Prompts for the search (default: the built-in set's tuning part)."),
    fixed: list[str] = opt("steer", "fixed", repeat=True, help="Evaluate these settings instead of searching, written as summary.csv labels them: one for the neuron sets, e.g. 'on(autox2)+off@generated' (rules: on(VALUExS) set, on(+VALUExS) add, on(xS) scale; VALUE auto, mean_active, p90, a number...), and one per residual method, e.g. 'diffmean(L6x4)', 'probe(L6x0.5)', 'lda(L5-7x1)', 'pca(L6x0.25)', with layers as --residual-layers takes them ('diffmean(L0.5x0.25)': half the depth; prompting has one setting). Repeat the option."),
    rules: str = opt("steer", "rules", help="Neuron rules the search tries, each with its strengths."),
    modes: str = opt("steer", "modes", help="Neuron modes the search tries: on, on+off, off."),
    positions: str = opt("steer", "positions", help="Position modes the search tries: all, prompt (the prefill only) or generated (new tokens only)."),
    residual_layers: str = opt("steer", "residual_layers", help="DiffMean layer groups the search tries first: an integer is a layer (6, a band 5-7); a number with a decimal point a fraction of the depth (0.5, a band 0.4-0.6: layer round(f x (L-1))), resolved per model."),
    alphas: str = opt("steer", "alphas", help="DiffMean strengths the search tries first, in typical residual norms at the layer (docs/methods.md §7a). Where the best sits at an edge of the grid (alpha, layer or neuron strength), the search goes outward on the tuning prompts until the optimum is inside or a bound is reached; summary.csv says which (at_grid_edge), and marks a search where every setting scored the same (search_flat)."),
    k: Optional[float] = opt("steer", "k", help="Strict judge: perplexity at most k x the native median (default: measured, the 95th percentile of the unsteered model's native ppl / median; do not tune it)."),
    max_new_tokens: int = opt("steer", "max_new_tokens", help="Tokens generated per prompt."),
    sample: bool = opt("steer", "sample", "--sample/--greedy", help="Sample the continuations (seeded by --seed, the same draws for every setting) instead of greedy decoding. Report greedy beside it."),
    temperature: float = opt("steer", "temperature", help="With --sample: softmax temperature."),
    top_p: float = opt("steer", "top_p", help="With --sample: nucleus (top-p) sampling; 1.0: off."),
    top_k: int = opt("steer", "top_k", help="With --sample: keep the k likeliest tokens; 0: off (Hugging Face's own default of 50 is never applied unseen)."),
    no_repeat_ngram_size: int = opt("steer", "no_repeat_ngram_size", help="Never repeat an n-gram of this size (Hugging Face generate; 0: off)."),
    repetition_penalty: float = opt("steer", "repetition_penalty", help="Hugging Face generate's repetition penalty (1.0: off, the default; report both if you use one)."),
    decoding: str = opt("steer", "decoding", help="greedy (default: the decoding the options above give, greedy unless --sample) or publisher: the sampling the model's publisher recommends (recorded per alias: gemma-3-270m top-k 64, top-p 0.95; qwen2.5-coder-1.5b temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.05; a hub id or folder: its generation_config.json), seeded by --seed; refused for a model without one (smollm2-135m). Write the decoding down before the run (docs/methods.md §7a)."),
    seed: int = opt("steer", "seed", help="Seed for sampling; the random controls' seeds are derived from it (docs/statistics.md)."),
    min_distinct: float = opt("steer", "min_distinct", help="Both judges: at least this share of the output's tokens are distinct."),
    relevance: bool = opt("steer", "relevance", help="Strict judge: also require the output to be relevant to its prompt (PMI > 0 under the unsteered model against 4 other prompts; validated on gemma-3-270m: docs/methods.md §7a). Recorded in steer.json; --no-relevance skips it (5 scoring passes per judged output) and leaves the relevance columns and the CLaS-style score empty."),
    controls: bool = opt("steer", "controls", help="Also run each method's random control (random neurons of the same count per layer; for DiffMean, probe, LDA and PCA a random direction of the same norm; for prompting the instruction naming a random other language)."),
    control_draws: int = opt("steer", "control_draws", help="Independent draws of each random control; its rates are their mean."),
    dtype: str = opt("steer", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("steer", "device", help=DEVICE_HELP),
):
    """Steer the output language with neurons, DiffMean, fitted residual directions (probe, LDA, PCA) and prompting, each setting searched on tuning prompts (or --fixed) and measured on held-out ones, under a strict judge (docs/methods.md §7a); under torchrun the (method, target) cells run in parallel.

    Example: [bold]langloc steer -n runs/gemma/neurons/lape.json -t fr,zh --run runs/gemma --methods prompting,diffmean,probe,lda,pca -o steer/[/] (the run collected with --residual-sample 2000)"""
    m = _run("steer", None, locals(), out_dir)
    _show(tables.steer(m.result), f"-> {out_dir}/summary.csv, methods.csv, matrix.csv, generations.jsonl, steering.png")


@app.command()
def ablate(
    run: Path = typer.Argument(..., help="Run folder made by collect (and identify)."),
    neurons: Optional[Path] = opt("ablate", "neurons", help="Neuron set (default RUN/neurons/lape.json)."),
    model: Optional[str] = opt("ablate", "model", "--model", "-m", help="Model (default: the run's)."),
    languages: Optional[str] = opt("ablate", "languages", "--languages", "-l", help="Subset of the set's languages."),
    eval_tokens: int = opt("ablate", "eval_tokens", help="Held-out tokens per language for perplexity."),
    corpus: Optional[str] = opt("ablate", "corpus", help="Corpus whose eval split is used (default: the run's corpus)."),
    window: Optional[int] = opt("ablate", "window", help="Tokens per evaluation window (default: the run's window if --eval-tokens fill 16 of them, else --eval-tokens / 16; the interval needs at least 8 windows)."),
    batch_size: int = opt("ablate", "batch_size", help="Windows per forward pass."),
    controls: bool = opt("ablate", "controls", help="Also zero random neurons of the same count per layer."),
    control_draws: int = opt("ablate", "control_draws", help="Independent draws of each random control; the control is reported as their mean and range (ratio_min, ratio_max)."),
    seed: int = opt("ablate", "seed", help="Run seed: each control's draws are derived from it and their names (docs/statistics.md)."),
    dtype: str = opt("ablate", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("ablate", "device", help=DEVICE_HELP),
):
    """Zero each language's neurons and measure every language's perplexity (exp of mean NLL).

    Writes RUN/ablation.csv (deactivated,evaluated,base_ppl,ppl,ratio,ratio_lo,ratio_hi,
    ratio_min,ratio_max,draws,windows: ratio_lo/hi is the 95% interval over the held-out windows,
    left empty below 8 windows)
    and RUN/plots/ablation.png. Runs its conditions in parallel under torchrun (e.g.
    [bold]torchrun --nproc-per-node 2 $(which langloc) ablate ...[/]); the CSV is the one
    process's.

    Example: [bold]langloc ablate runs/gemma --eval-tokens 4096[/]
    """
    from langloc import distributed

    m = _run("ablate", None, locals(), run)
    if distributed.is_main():
        _show(tables.ablation(m.result), f"-> {m.path}, {run}/plots/ablation.png")


def _print_ablation(rows) -> None:
    _show(tables.ablation(rows))


@app.command()
def importance(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Region folder to create or extend."),
    languages: str = typer.Option(..., "--languages", "-l", help="Comma-separated ISO 639-1 codes; the core region sums over them (Zhang et al.: ar,es,ru,zh,ko,vi)."),
    model: str = ModelOpt,
    corpus: str = opt("importance", "corpus", help="bible, a folder of <lang>.txt|.jsonl|.parquet, or hf:PATH[:CONFIG]."),
    tokens: int = opt("importance", "tokens", help="Token budget per language (the paper: 10k-100k windows of 512)."),
    window: int = opt("importance", "window", help="Tokens per packed window."),
    batch_size: int = opt("importance", "batch_size", help="Windows per forward/backward pass."),
    precision: str = opt("importance", "precision", help="Storage of the scores: bfloat16 (float32's range, half the size) or float32."),
    seed: int = opt("importance", "seed", help="Seed for the order of documents."),
    dtype: str = opt("importance", "dtype", help="Model dtype for the gradients (float32 recommended)."),
    device: Optional[str] = opt("importance", "device", help=DEVICE_HELP),
    neuron_site: Optional[str] = opt("importance", "neuron_site", "--neuron-site", help=SITE_HELP),
    resume: bool = opt("importance", "resume", help="Continue an interrupted language from its last checkpoint."),
    checkpoint_every: int = opt("importance", "checkpoint_every", help="Checkpoint the summed gradients every N batches."),
    lid_filter: bool = LidOpt,
    lid_threshold: float = LidThresholdOpt,
):
    """Score every decoder-layer weight for each language: |θ · ∂L/∂θ| (Zhang et al.).

    The gradient is that of the mean token NLL over the whole budget, summed over batches
    with no optimiser step; embeddings, LM head and norms are not scored.

    Writes OUT/importance/<lang>.safetensors. Runs data-parallel under torchrun.

    Example: [bold]langloc importance -m gemma-3-270m -l ar,es,ru,zh,ko,vi --tokens 16384 -o runs/regions[/]
    """
    from langloc import distributed
    from langloc.workflows import importance_run

    c = importance_run(_config(ImportanceConfig, locals(), out=out_dir, languages=tuple(_langs(languages)),
                               lid_filter=_lid(lid_filter, lid_threshold)))
    if distributed.is_main():
        _notes(c, _langs(languages))
        out.print(f"scores in {out_dir}/importance; next: langloc regions {out_dir}")


@app.command()
def regions(
    folder: Path = typer.Argument(..., help="Region folder made by langloc importance."),
    rate: float = opt("regions", "rate", help="Share of each weight matrix in the Top / Bottom / Random regions."),
    languages: Optional[str] = opt("regions", "languages", "--languages", "-l", help="Languages to sum (default: all scored)."),
    seed: int = opt("regions", "seed", help="Seed of the Random region."),
    rounding: str = opt("regions", "rounding", help="Entries per region: floor = int(rate * entries), the reference code's; nearest = round(rate * entries)."),
    probe_tokens: int = opt("regions", "probe_tokens", help="Held-out tokens per language to find the residual stream's largest activations."),
    top_dims: int = opt("regions", "top_dims", help="The densest and the loudest hidden dimensions reported."),
    model: Optional[str] = opt("regions", "model", "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = opt("regions", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("regions", "device", help=DEVICE_HELP),
):
    """Core (Top / Bottom / Random) and monolingual (top and bottom) regions per weight matrix, and where they sit.

    The core score of an entry is the sum of its importance over the languages. Where the Top
    region sits: its entries per hidden dimension, against the residual stream's largest
    ("massive") activations.

    Writes FOLDER/regions.safetensors, dimensions.csv, regions.json and plots/regions.png.

    Example: [bold]langloc regions runs/regions --rate 0.01[/]
    """
    from langloc.regions.regions import check_rate, check_rounding
    from langloc.regions.folder import folder_info, folder_model
    from langloc.workflows import regions_run

    check_rate(rate)
    check_rounding(rounding)
    folder_info(folder)
    lm = folder_model(folder, model, dtype, device)
    s = regions_run(folder, lm, _config(RegionsConfig, locals(), languages=tuple(_langs(languages)) if languages else None))
    _show(tables.regions(s, rate), f"-> {folder}/regions.safetensors, dimensions.csv, plots/regions.png")


@app.command("region-ablate")
def region_ablate(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    languages: str = typer.Option(..., "--languages", "-l", help="Languages to evaluate (any in the corpus)."),
    regions_: Optional[str] = opt("region-ablate", "regions", "--regions", help="Regions to zero (default: top,bottom,random and every mono:<lang>)."),
    eval_tokens: int = opt("region-ablate", "eval_tokens", help="Held-out tokens per language for perplexity."),
    corpus: Optional[str] = opt("region-ablate", "corpus", help="Corpus whose eval split is used (default: the folder's)."),
    batch_size: int = opt("region-ablate", "batch_size", help="Windows per forward pass."),
    model: Optional[str] = opt("region-ablate", "model", "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = opt("region-ablate", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("region-ablate", "device", help=DEVICE_HELP),
):
    """Zero a region's weights and measure every language's perplexity ratio.

    Writes FOLDER/region_ablation.csv and plots/region_ablation.png.

    Example: [bold]langloc region-ablate runs/regions -l en,zh,fr,es,ru,ja,ar,ko,vi,hi[/]
    """
    from langloc import distributed

    m = _run("region-ablate", None, locals(), folder, regions=regions_)
    if distributed.is_main():
        _show(tables.ablation(m.result), f"-> {m.path}, {folder}/plots/region_ablation.png")


@app.command()
def spread(
    models: list[str] = typer.Argument(..., help="Models to measure, each on the same cases (alias, local folder or hub id)."),
    out_path: Path = typer.Option(Path("spread.csv"), "--out", "-o", help="CSV of the relative change at each site and the perplexity ratio, per model and case."),
    language: str = opt("spread", "language", "--language", "-l", help="Language of the held-out text."),
    corpus: str = opt("spread", "corpus", help="Corpus whose eval split is read (bible, a folder of <lang>.txt, or hf:PATH)."),
    tokens: int = opt("spread", "tokens", help="Held-out tokens."),
    window: int = opt("spread", "window", help="Tokens per window."),
    layer: int = opt("spread", "layer", help="Decoder layer whose MLP holds the perturbed matrices."),
    big: float = opt("spread", "big", help="The value the '=big' case sets one entry to."),
    batch_size: int = opt("spread", "batch_size", help="Windows per forward pass."),
    dtype: str = opt("spread", "dtype", help="float32 (default: the changes measured are small), bfloat16, float16, fast or auto."),
    device: Optional[str] = opt("spread", "device", help=DEVICE_HELP),
):
    """How far one perturbed weight moves the residual stream, before and after a block's output norm.

    In layer LAYER's MLP, the matrix that reads the residual stream and the one that writes it,
    on the stream's loudest dimension and on an ordinary one: one entry x4, the entry set to
    BIG, the whole column zeroed. Each row gives the relative change of the block's output,
    after its output norm (Gemma's sandwich norm; absent in Llama), of the residual stream, of
    the next layer's input and of the final hidden state, with the perplexity ratio.

    Example: [bold]langloc spread smollm2-135m gemma-3-270m -o spread.csv[/]
    """
    m = _run("spread", None, locals(), out_path)
    _show(tables.spread(m.result), f"-> {out_path}")


@app.command()
def perturb(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    languages: str = typer.Option(..., "--languages", "-l", help="Languages to evaluate."),
    matrix: Optional[str] = opt("perturb", "matrix", help="LAYER.MODULE (e.g. 1.mlp.down_proj) or a full parameter name. Default: the lowest layer's matrix with the most Top entries on the densest dimension."),
    dims: Optional[str] = opt("perturb", "dims", help="Comma-separated hidden dimensions. Default: the Top region's densest dimension and an ordinary (median) one."),
    scale: Optional[float] = opt("perturb", "scale", help="Multiply the parameter by this (default 4 when --value is not given)."),
    value: Optional[float] = opt("perturb", "value", help="Set the parameter to this instead."),
    whole: bool = opt("perturb", "whole", help="Perturb every entry of the matrix on the dimension, not one."),
    eval_tokens: int = opt("perturb", "eval_tokens", help="Held-out tokens per language for perplexity."),
    batch_size: int = opt("perturb", "batch_size", help="Windows per forward pass."),
    model: Optional[str] = opt("perturb", "model", "--model", "-m", help="Model (default: the folder's)."),
    dtype: str = opt("perturb", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("perturb", "device", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="CSV to write (default FOLDER/perturb.csv), so that several cases can sit in one folder."),
):
    """Scale or set one parameter on a hidden dimension and measure perplexity.

    The entry perturbed is the one with the largest |θ| among the Top region's entries on that
    dimension. On a dimension the core region concentrates on, one parameter can break the
    model; on an ordinary one nothing happens.

    Writes FOLDER/perturb.csv (or --out).

    Example: [bold]langloc perturb runs/regions -l en,fr,zh --scale 4 -o runs/regions/perturb-x4.csv[/]
    """
    from langloc import distributed

    m = _run("perturb", None, locals(), out or folder)
    if distributed.is_main():
        _show(tables.perturb(m.result), f"-> {m.path}")


@app.command()
def train(
    folder: Path = typer.Argument(..., help="Region folder with regions.safetensors (langloc regions)."),
    language: str = typer.Option(..., "--language", help="The language to further pre-train on (its stats split)."),
    eval_languages: str = typer.Option(..., "--eval-languages", "-l", help="Languages whose held-out perplexity shows forgetting."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (one subfolder per mode)."),
    region: str = opt("train", "region", help="Region frozen in mode core (top, or e.g. mono:fr)."),
    modes: str = opt("train", "modes", help="Freezing modes to run with the same seed, data and steps: core, random (the file's random region), none."),
    steps: int = opt("train", "steps", help="Optimiser steps."),
    batch_size: int = opt("train", "batch_size", help="Windows per step."),
    window: Optional[int] = opt("train", "window", help="Tokens per window (default: the folder's)."),
    lr: float = opt("train", "lr", help="Peak learning rate (linear warm-up, cosine decay to 10%)."),
    weight_decay: float = opt("train", "weight_decay", help="AdamW weight decay (matrices only)."),
    warmup: int = opt("train", "warmup", help="Warm-up steps."),
    max_grad_norm: float = opt("train", "max_grad_norm", help="Gradient clipping (0: none)."),
    precision: str = opt("train", "precision", help="Autocast of the forward pass: bf16, fp16 (with a GradScaler) or fp32; weights and optimiser stay float32."),
    train_embeddings: bool = opt("train", "train_embeddings", help="Also train the token embeddings (and a tied LM head). --no-train-embeddings trains the decoder layers and norms only: much cheaper with a large vocabulary."),
    eval_tokens: int = opt("train", "eval_tokens", help="Held-out tokens per language for perplexity."),
    eval_every: int = opt("train", "eval_every", help="Measure perplexity every N steps (and at step 0)."),
    checkpoint_every: int = opt("train", "checkpoint_every", help="Checkpoint weights, optimiser, data position and RNG every N steps."),
    seed: int = opt("train", "seed", help="Seed of the data order (the same for every mode)."),
    resume: bool = opt("train", "resume", help="Continue an interrupted mode from its checkpoint (the default: rerunning the same command continues; --no-resume refuses to)."),
    corpus: Optional[str] = opt("train", "corpus", help="Corpus (default: the folder's)."),
    model: Optional[str] = opt("train", "model", "--model", "-m", help="Model (default: the folder's)."),
    device: Optional[str] = opt("train", "device", help=DEVICE_HELP),
):
    """Further pre-train on one language with the core region frozen, a random region frozen, or nothing.

    Frozen entries stay bit-identical (gradients masked, values restored in the float32 master
    weights and their AdamW moments zeroed after every step). Writes OUT/forgetting.csv
    (mode, step, language, ppl, ratio to step 0), OUT/summary.csv and OUT/plots/forgetting.png.

    Example: [bold]langloc train runs/regions --language fr -l en,es,ru,zh --steps 200 -o runs/forget-fr[/]
    """
    m = _run("train", None, locals(), out_dir)
    _show(tables.forgetting(m.result, language), f"-> {out_dir}/forgetting.csv, summary.csv, plots/forgetting.png")


@app.command()
def transfer(
    neurons: Path = typer.Option(..., "--neurons", "-n", help="Neuron set (langloc identify) whose language's neurons the adapter may change."),
    language: str = typer.Option(..., "--language", help="Train on this language's items (and use its neurons)."),
    eval_languages: str = typer.Option(..., "--eval-languages", "-l", help="Languages to evaluate transfer on."),
    out_path: Path = typer.Option(..., "--out", "-o", help="CSV of accuracies per condition and language."),
    modes: str = opt("transfer", "modes", help="neurons (masked to the set), random (same count per layer), all (plain LoRA on the MLP), none (attention LoRA only)."),
    target: str = opt("transfer", "target", help="Language of the answer choices (the Bible translation task)."),
    train_items: int = opt("transfer", "train_items", help="Training items (stats split)."),
    eval_items: int = opt("transfer", "eval_items", help="Evaluation items per language (eval split, disjoint verses)."),
    preset: str = opt("transfer", "preset", help="Adapter settings: langloc (r 8, alpha 16, gate and up projections) or mondal (the reference code's: r 8, alpha 16, gate projection only, weight decay 0.1). --r / --alpha override it."),
    r: Optional[int] = opt("transfer", "r", "--r", "--lora-r", help="LoRA rank (default: the preset's, 8). Under torchrun write --lora-r: torchrun's own parser refuses --r as ambiguous."),
    alpha: Optional[int] = opt("transfer", "alpha", help="LoRA alpha (default: the preset's, 16)."),
    attention: bool = opt("transfer", "attention", help="Also plain LoRA on the attention projections (Mondal et al.)."),
    down: bool = opt("transfer", "down", help="Also adapt the MLP output projection (its neuron columns)."),
    lr: float = opt("transfer", "lr", help="AdamW learning rate."),
    epochs: int = opt("transfer", "epochs", help="Epochs over the training items."),
    batch_size: int = opt("transfer", "batch_size", help="Training batch size."),
    seed: int = opt("transfer", "seed", help="Seed of items, random neurons and training."),
    save_adapters: Optional[Path] = opt("transfer", "save_adapters", help="Save each trained adapter to SAVE_ADAPTERS/<mode> (then: langloc harness --adapter SAVE_ADAPTERS/neurons ...)."),
    model: Optional[str] = opt("transfer", "model", "--model", "-m", help="Model (default: the neuron set's)."),
    device: Optional[str] = opt("transfer", "device", help=DEVICE_HELP),
):
    """Neuron-masked LoRA (PEFT): fine-tune only a language's neurons, measure cross-lingual transfer.

    The task runs offline: given a verse in a language, choose its translation among 4
    candidates by log-likelihood (aligned Bible; training and evaluation verses disjoint).
    Baselines: random neurons of the same count, all neurons, no MLP adapter, no adapter.
    Runs its conditions in parallel under torchrun.

    Example: [bold]langloc transfer -n runs/gemma/neurons/lape.json --language fr -l es,vi,id -o transfer.csv[/]
    """
    m = _run("transfer", None, locals(), out_path)
    _show(tables.transfer(m.result, language), f"-> {out_path}")


@app.command()
def share(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for categories.csv, stability.csv, attribution.csv, causal.csv, share.json and plots/."),
    tasks: str = opt("share", "tasks", "--tasks", "-t", help="Comma-separated parallel tasks: bible-lm (held-out verse given the one before), bible-choice (pick a verse's translation among 4), gsm-symbolic (needs its data, see langloc.tasks.gsm_symbolic)."),
    languages: str = opt("share", "languages", "--languages", "-l", help="At least 2 languages; every item is the same input in each."),
    model: str = opt("share", "model", "--model", "-m", help=MODEL_HELP),
    items: int = opt("share", "items", help="Parallel items per task."),
    threshold: float = opt("share", "threshold", help="A neuron is activated in a language if its activation is above this."),
    position: str = opt("share", "position", help="last: the activation at the last prompt token (the paper's); all: over all prompt tokens, reduced by --reduce (attribution stays at the last token)."),
    reduce: str = opt("share", "reduce", help="With --position all: any (= max: activated if any token is above the threshold, the reference code's) or mean over the tokens."),
    gold_tokens: str = opt("share", "gold_tokens", help="Gold token for the effective score and gradients: joint (the token at the prompt's length in the tokenisation of prompt + continuation, the reference code's) or separate (the continuation tokenised on its own)."),
    top_k: int = opt("share", "top_k", help="top_contribution.csv: category make-up of the top_k neurons of largest contribution per layer (the reference code's 800)."),
    causal: bool = opt("share", "causal", "--causal", help="Also deactivate all-shared / specific / random neurons (same count per layer) and boost all-shared ones; accuracy per language."),
    boost: str = opt("share", "boost", help="Factors that --causal multiplies all-shared neurons by."),
    boost_controls: bool = opt("share", "boost_controls", help="With --causal: also boost random neurons of the same count."),
    choice_target: str = opt("share", "choice_target", help="Language of bible-choice's candidates; auto = en, or de if en is analysed. Must not be an analysed language."),
    max_chars: int = opt("share", "max_chars", help="Longest verse (characters) the Bible tasks use."),
    split: str = opt("share", "split", help="Bible split the items come from (eval = held-out chapters)."),
    seed: int = opt("share", "seed", help="Seed of the item order and the random neurons."),
    batch_size: int = opt("share", "batch_size", help="Sequences per forward pass."),
    dtype: str = opt("share", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("share", "device", help=DEVICE_HELP),
    neuron_site: Optional[str] = opt("share", "neuron_site", "--neuron-site", help=SITE_HELP),
):
    """Neuron sharing across languages: all-shared / partial-shared / specific / non-activated neurons per layer and task, attribution by category, causal tests.

    Per item (one input in K languages) a neuron is all-shared if it is activated (> threshold
    at the last prompt token) in all K languages, partial-shared in 2..K-1, specific in 1,
    non-activated in none. Attribution at the last token: |m|*||W_out[:, i]||, the effective
    score against the gold token's unembedding, and gradient x activation. Runs in parallel under torchrun.

    Example: [bold]langloc share -m gemma-3-270m -l en,fr,es,zh,ru,ja --items 30 --causal -o share/[/]
    """
    start = time.time()
    m = _run("share", None, locals(), out_dir)
    _show(*tables.share(m),
          f"-> {out_dir}/categories.csv, stability.csv, attribution.csv, attribution_reference.csv, "
          f"top_contribution.csv{', causal.csv' if causal else ''}, share.json, plots/ ({time.time() - start:.0f} s)")


@app.command()
def harness(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for results.json (the harness's results per condition) and metrics.csv."),
    tasks: str = opt("harness", "tasks", "--tasks", "-t", help="Comma-separated lm-evaluation-harness tasks, e.g. xnli_fr,belebele_fra_Latn (the harness downloads their data)."),
    bible_choice: str = opt("harness", "bible_choice", help="Also langloc's offline verse-translation choice task in these languages (written as harness tasks langloc_bible_choice_<lang>; needs no network)."),
    model: Optional[str] = opt("harness", "model", "--model", "-m", help="Model (default: the neuron set's, else gemma-3-270m)."),
    neurons: Optional[Path] = opt("harness", "neurons", "--neurons", "-n", help="Neuron set (langloc identify) for --zero."),
    zero: str = opt("harness", "zero", help="With --neurons: one condition per language, its neurons set to 0 at every position."),
    random_controls: bool = opt("harness", "random_controls", help="With --zero: also random neurons of the same count per layer."),
    intervention: list[Path] = opt("harness", "intervention", "--intervention", repeat=True, help="A saved intervention (e.g. steer's interventions/*.json) as one more condition; repeatable."),
    adapter: list[Path] = opt("harness", "adapter", "--adapter", repeat=True, help="A saved LoRA adapter folder (langloc transfer --save-adapters) as one more condition, named adapter:<folder name>; repeatable."),
    base: bool = opt("harness", "base", help="Also evaluate the model with no intervention."),
    limit: Optional[float] = opt("harness", "limit", help="Documents per task (an integer), or a fraction of them (< 1)."),
    num_fewshot: Optional[int] = opt("harness", "num_fewshot", help="Few-shot examples (default: the task's own)."),
    include_path: Optional[Path] = opt("harness", "include_path", help="Folder of your own harness task YAML files."),
    items: int = opt("harness", "items", help="Items per language of --bible-choice (eval split)."),
    choice_target: str = opt("harness", "choice_target", help="Language of --bible-choice's candidates."),
    max_chars: int = opt("harness", "max_chars", help="Longest verse (characters) --bible-choice uses."),
    seed: int = opt("harness", "seed", help="Seed of the harness, the random controls and --bible-choice's items."),
    batch_size: int = opt("harness", "batch_size", help="Sequences per forward pass."),
    dtype: str = opt("harness", "dtype", help=DTYPE_HELP),
    device: Optional[str] = opt("harness", "device", help=DEVICE_HELP),
    neuron_site: Optional[str] = opt("harness", "neuron_site", "--neuron-site", help=SITE_HELP),
):
    """lm-evaluation-harness tasks (XNLI, XQuAD, Belebele, XStoryCloze ...) with language neurons deactivated or steered.

    Needs the optional extra: pip install 'langloc\\[harness]'. Every condition runs the same
    tasks: the model as it is (base), each --zero language's neurons zeroed (and random
    controls), each saved --intervention, each saved --adapter.

    Example: [bold]langloc harness -n runs/gemma/neurons/lape.json --zero fr,zh -t xnli_fr,xnli_zh --limit 200 -o harness/[/]
    Offline: [bold]langloc harness -n runs/gemma/neurons/lape.json --zero fr --bible-choice fr,es --items 50 -o harness/[/]
    """
    m = _run("harness", None, locals(), out_dir)
    _show(tables.harness(**m.result), f"-> {out_dir}/metrics.csv, results.json")


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


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (collect, identify)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="New folder to share (e.g. upload to a model hub)."),
    neurons: list[Path] = typer.Option([], "--neurons", "-n", help="Neuron set(s) to export (default: every RUN/neurons/*.json); repeatable."),
    diffmean: str = typer.Option("", help="DiffMean directions to export, as source-target pairs, e.g. en-fr,en-zh (needs the run's residual sums)."),
    gguf: bool = typer.Option(False, help="Also write each direction as a llama.cpp control vector (directions/<pair>.gguf; layers 1..L-1, llama.cpp has no slot for layer 0)."),
):
    """Neuron sets and DiffMean directions in a documented, versioned safetensors + JSON folder
    with the model's fingerprint (docs/artefacts.md, "Sharing"): OUT/langloc.json, README.md,
    neurons/<method>.safetensors, directions/<source>-<target>.safetensors.

    langloc.hub applies a direction to any Hugging Face model with no run folder (README).

    Example: [bold]langloc export runs/gemma --diffmean en-fr,en-zh --gguf -o gemma-languages[/]
    """
    from langloc.exports import export_run, parse_pairs

    path = export_run(run, out_dir, neurons=neurons, directions=parse_pairs(diffmean), gguf=gguf)
    out.print(f"-> {path}/langloc.json, README.md ({len(list(path.rglob('*.safetensors')))} safetensors files)")


@app.command("import")
def import_cmd(
    folder: Path = typer.Argument(..., help="A folder made by langloc export."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="New run folder."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Check the export against this model's fingerprint before importing."),
    dtype: str = DtypeOpt,
):
    """An export as a run folder: run.json, neurons/<method>.json, directions/; then e.g.
    [bold]langloc ablate OUT[/] (the exporting run's corpus, or --corpus).

    Example: [bold]langloc import gemma-languages -o runs/shared -m gemma-3-270m[/]
    """
    from langloc.exports import import_export
    from langloc.models import load_model

    meta = load_model(model, dtype=dtype, device="cpu").meta if model else None
    out.print(f"run folder {import_export(folder, out_dir, model_meta=meta)}")


@app.command()
def demo(
    out_dir: Path = opt("demo", "out", "--out", "-o", help="Run folder for the demo."),
    model: str = opt("demo", "model", "--model", "-m", help=MODEL_HELP),
    languages: str = opt("demo", "languages", "--languages", "-l"),
    tokens: int = opt("demo", "tokens", help="Statistics tokens per language (at 16,384 the LAPE sets keep 89-100% of the 32,768-token sets' neurons: docs/performance.md)."),
    eval_tokens: int = opt("demo", "eval_tokens", help="Held-out tokens per language for perplexity."),
    eval_window: int = opt("demo", "eval_window", help="Tokens per held-out window (the interval's units are windows: at least 8 per language)."),
    control_draws: int = opt("demo", "control_draws", help="Random controls per language (each costs as much as the language's set)."),
    dtype: str = opt("demo", "dtype", help="fast (default here: bfloat16 where the CPU computes it natively, else float32), auto, float32, bfloat16, float16."),
):
    """collect -> identify -> ablate -> plots on the Bible corpus in 10 languages, then a summary.

    At most 15 minutes on 2 CPU cores of the slowest class (AVX2 only, float32), including the
    one-time model conversion; about 6 minutes with AVX512-BF16. It prints its own estimate
    after the first batches.
    """
    from langloc.demo import DemoConfig, own_language_most, report_path, run

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
    out.print(f"report: {report_path(config)} (one self-contained page; open it in a browser)")


@app.command()
def report(
    paths: list[Path] = typer.Argument(..., help="Run folders and study output folders (or their JSON files); every output under them is found by its manifest."),
    out_file: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    title: Optional[str] = typer.Option(None, help="Page title (default: the folders' names)."),
):
    """One self-contained HTML page of everything under the folders: model and corpus, neuron
    sets per layer and their overlap, the ablation matrix with intervals and controls, steering
    with example outputs, regions, sharing, forgetting, transfer, ...

    Plots are inline SVG, styling inline, no URL that would load anything: it opens offline.

    Every figure says the command that reproduces it. Details: docs/report.md.

    Example: [bold]langloc report runs/gemma steer/lape runs/regions -o report.html[/]
    """
    from langloc.report.sections import write_report

    path = write_report(paths, out_file, title=title)
    out.print(f"-> {path} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command()
@method_options(validate=True)
def validate(
    run: Path = typer.Argument(..., help="Run folder made by collect and identify."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default RUN/validate)."),
    neurons: Optional[Path] = opt("validate", "neurons", help="Neuron set to validate (default RUN/neurons/lape.json)."),
    domain: Optional[str] = opt("validate", "domain", help="Second domain: a folder corpus (<lang>.txt, <lang>.eval.txt), or gsm-symbolic (the multilingual GSM-symbolic word problems, written to OUT/domain/gsm-symbolic)."),
    methods: str = opt("validate", "methods", help="Methods whose stability over shards is measured (lape, thresholding)."),
    shards: int = opt("validate", "shards", help="Disjoint shards of the run's statistics windows (counted again, resumably, into OUT/shards)."),
    resamples: int = opt("validate", "resamples", help="Bootstrap resamples of the shards for the stable core."),
    stats_batch_size: int = opt("validate", "stats_batch_size", help="Windows per batch when counting the shards: collect's --batch-size, so that they add up to the run exactly."),
    core_min: float = opt("validate", "core_min", help="A neuron is in the stable core if found in at least this share of resamples."),
    eval_tokens: int = opt("validate", "eval_tokens", help="Held-out tokens per language (and on the second domain); 384 (12 windows of 32) keeps the defaults within 30 minutes on 2 CPU cores for 10 languages (docs/validate.md)."),
    window: int = opt("validate", "window", help="Tokens per evaluation window (the interval's units are windows: at least 8 per language)."),
    control_draws: int = opt("validate", "control_draws", help="Independent draws of the matched and of the random control."),
    bins: int = opt("validate", "bins", help="Activation-probability bins of the matched control (10: width 0.1)."),
    budget_curve: bool = opt("validate", "budget_curve", help="Also find the set on the first 1/K, 2/K, ... K/K of the statistics (prefix sums of the shards, no second pass): Jaccard with the full set, share of the stable core, own-language ratio with its interval (at most (K-1) evaluations per language). Writes OUT/budget_curve.csv, .txt and plots/budget_curve.png."),
    curve_target: float = opt("validate", "curve_target", help="The share of the full set that the budget curve's sentence per language asks for."),
    seed: int = opt("validate", "seed", help="Seed of the controls' draws and the shard resamples."),
    dtype: Optional[str] = opt("validate", "dtype", help="Default: the run's dtype (so the shards add up to the run)."),
    device: Optional[str] = opt("validate", "device", help=DEVICE_HELP),
    **settings,
):
    """Are the neurons real? Stability over shards, selectivity with 95% intervals, an
    activation-matched and a random control, a second domain, and which part of each set
    (exclusive or shared with other languages) causes spill-over. One verdict per language.

    Writes OUT/validation.csv, verdicts.txt, stability.csv, conditions.csv, controls.csv,
    domain.csv, plots/validation.png, plots/stability.png, with --budget-curve budget_curve.csv
    (docs/validate.md). Resumes where it stopped when run again. Runs in parallel under torchrun.

    The identification settings of the stability check (--top-rate, --rate, ...: one per
    setting of each method in --methods' choices): by default, for the set's own method the
    settings recorded in it (which must find the set again on the run's statistics; a value
    given must equal them), for another method identify's default.

    Example: [bold]langloc validate runs/gemma --domain gsm-symbolic[/]
    """
    m = _run("validate", None, locals(), out_dir or run / "validate",
             identify={k: v for k, v in settings.items() if v is not None})
    _show(tables.validation(m.result), m.get("budget_curve") or [], f"-> {m.path}")


@app.command()
def planted(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the planted model, corpus, truth and run."),
):
    """Build a tiny Llama whose language neurons are known by construction, with its synthetic
    corpus of 4 "languages", collect its statistics and identify LAPE neurons (docs/validate.md).

    Writes OUT/model, OUT/corpus, OUT/domain, OUT/truth.json and the run folder OUT/run;
    then try [bold]langloc validate OUT/run --domain OUT/domain --methods lape[/] (it prints
    that command for OUT).
    """
    from langloc.planted import planted_run, read_truth, validate_hint

    run = planted_run(out_dir)
    _show(f"planted: {read_truth(out_dir)['specific']}", f"-> {run}")
    out.print(f"then: {escape(validate_hint(out_dir))}", soft_wrap=True, highlight=False)  # one line, to copy


class Interrupted(Exception):
    """Raised by the SIGINT handler: click would turn KeyboardInterrupt into a bare 'Aborted!'."""


def _on_sigint(signum, frame):
    raise Interrupted()


_AGAIN = "rerun the same command into the same folder: it continues after its last finished step"
# How an interrupted command continues; the commands not named here start again.
RESUME_ROUTES = {
    "collect": "rerun the same command with --resume to continue from its last checkpoint",
    "importance": "rerun the same command with --resume to continue from its last checkpoint",
    "train": "rerun the same command to continue from its last checkpoint (train resumes by default)",
    "steer": _AGAIN,
    "validate": _AGAIN,
}


def interrupted_message(argv: list[str]) -> str:
    """The line printed on Ctrl-C: the resume route of the command that was interrupted."""
    command = next((a for a in argv[1:] if not a.startswith("-")), "")
    route = RESUME_ROUTES.get(command, f"{command or 'this command'} does not resume: rerun it to start again")
    return f"interrupted: finished artefacts are kept; {route}"


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
        err.print(escape(interrupted_message(sys.argv)), style="yellow", highlight=False, soft_wrap=True)
        sys.exit(130)
    except OSError as exc:
        # Disk full, permission denied, ...: artefacts are written atomically, so none is half-written.
        err.print(f"[red]error:[/] {escape(str(exc.strerror or exc))} ({escape(str(getattr(exc, 'filename', '') or 'while writing'))}); "
                  "no partial file was left", highlight=False, soft_wrap=True)
        sys.exit(2)
    finally:
        distributed.shutdown()  # under torchrun: leave the process group before the interpreter exits


if __name__ == "__main__":
    main()
