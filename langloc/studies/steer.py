"""steer: steer the output language with language neurons, DiffMean, directions fitted on sampled
residual states (a probe, LDA, PCA) and an instruction (prompting), under a strict judge.

For each method (neuron sets; ``--methods``: diffmean, probe, lda, pca, prompting) and target
language: search the setting on tuning
prompts or take the one given, evaluate it on held-out prompts, run the random control, and
steer from other source languages (:func:`langloc.steer.evaluation.steer_study`, which computes
and returns the rows; this module writes every file). Writes
``OUT/steer.json`` (the manifest), ``summary.csv``, ``methods.csv``, ``matrix.csv``,
``native.csv``, ``generations.jsonl``, ``interventions/`` and ``steering.png``. Under torchrun
the native references' languages, then the (method, target) cells with the unsteered
continuations, then the matrix's cells are shared out over the processes; the first writes
the files, the same as one process's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.errors import LanglocError
from langloc.steer.evaluation import GridSpec
from langloc.studies.base import Manifest, StudyConfig, check_numbers, load_model_of, run_corpus, run_corpus_spec

KIND = kinds.STEER


def rules_text(rules: dict) -> str:
    """``{"set": (1.0, 2.0), "scale": (2.0,)}`` -> ``"set:1/2,scale:2"``: neuron rules as
    ``--rules`` writes them (:func:`_rules` reads them back)."""
    return ",".join(f"{rule}:{'/'.join(f'{s:g}' for s in strengths)}" for rule, strengths in rules.items())


# The search grid's defaults are stated once, in GridSpec; the config's (and the command line's) are its.
_GRID = GridSpec()


@dataclass
class Config(StudyConfig):
    """neurons: neuron set files, each one method; methods: the other methods, in this order
    (:data:`METHODS`): diffmean (the DiffMean residual vector; needs a run whose statistics hold
    residual sums), probe, lda, pca (residual directions fitted on the run's residual sample:
    ``collect --residual-sample N``), prompting (an instruction to continue in the target
    language, through the chat template where the tokenizer has one); diffmean: False drops
    diffmean from the methods (the older switch, kept); targets: target
    languages; source: the language of the prompts (DiffMean subtracts its mean; the off modes
    zero its neurons); matrix_sources: other source languages steered with the setting chosen
    for ``source``, on their built-in prompts (the source x target matrix); run: run folder of
    the statistics; model: model (default the run's / the set's); prompts, tune_prompts:
    held-out and tuning prompts (builtin:<lang> or a file); fixed: evaluate these settings
    instead of searching, written as the study labels them (:func:`~langloc.steer.steering.parse_setting`):
    one for the neuron methods (e.g. ``on(autox2)+off``; value ``auto``: each method's own,
    median_response for expert units, else mean_active) and one per residual method, e.g.
    ``diffmean(L6x4)``, ``probe(L6x0.5)``, layers as for residual_layers (``diffmean(L0.5x0.25)``: half the
    depth) (prompting has one setting and needs none);
    empty: search each method's setting on the tuning prompts; rules: search grid of neuron rules
    (rule:strength/strength,...); modes: neuron modes searched (on, on+off, off); positions:
    position modes searched (all, prompt, generated); residual_layers: DiffMean layer groups
    searched: layers (6, a band 5-7) or, with a decimal point, fractions of the depth (0.5, 0.4-0.6),
    resolved per model (the same for probe, lda and pca); alphas: DiffMean's (and the fitted
    directions') strengths searched, in typical residual norms (the defaults of rules, modes,
    positions, residual_layers and alphas are :class:`~langloc.steer.evaluation.GridSpec`'s); k: the strict judge's
    perplexity factor (default: measured, the 95th percentile of native ppl / median);
    max_new_tokens, sample, temperature, top_p, top_k, no_repeat_ngram_size, repetition_penalty,
    batch_size: generation; decoding: ``greedy`` (the default: the decoding those options give,
    greedy unless ``sample``) or ``publisher`` (the sampling the model's publisher recommends:
    :func:`~langloc.models.loading.publisher_decoding`; refused for a model without, and with
    any of sample, temperature, top_p, top_k, repetition_penalty); seed: sampling seed and the controls'; max_ppl, min_distinct: the
    lenient judge; relevance, relevance_others: the strict judge's relevance criterion (PMI > 0
    against that many other prompts; off: not judged, for speed); controls, control_draws: random controls; quantile_tokens: text for
    quantile values; candidates: languages the language identifier chooses from; dtype,
    device: how the model is loaded; progress: show progress bars."""

    neurons: tuple[Path, ...] = ()
    targets: tuple[str, ...] = ()
    diffmean: bool = True
    methods: tuple[str, ...] = ("diffmean",)
    source: Optional[str] = "en"
    matrix_sources: tuple[str, ...] = ()
    run: Optional[Path] = None
    model: Optional[str] = None
    prompts: str = "builtin:en"
    tune_prompts: Optional[str] = None
    fixed: tuple[str, ...] = ()
    rules: str = rules_text(_GRID.rules)
    modes: tuple[str, ...] = _GRID.modes
    positions: tuple[str, ...] = _GRID.positions
    residual_layers: tuple[str, ...] = _GRID.residual_layers
    alphas: tuple[float, ...] = _GRID.alphas
    k: Optional[float] = None
    max_new_tokens: int = 32
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    decoding: str = "greedy"
    seed: int = 0
    batch_size: int = 16
    max_ppl: float = 200.0
    min_distinct: float = 0.5
    relevance: bool = True
    relevance_others: int = 4
    controls: bool = True
    control_draws: int = 1
    quantile_tokens: int = 16384
    candidates: Optional[tuple[str, ...]] = None
    dtype: str = "auto"
    device: Optional[str] = None
    progress: bool = True


METHODS = ("diffmean", "probe", "lda", "pca", "prompting")  # besides the neuron sets
DECODINGS = ("greedy", "publisher")
RESIDUAL = ("diffmean", "probe", "lda", "pca")  # steered by a residual setting (layers x alpha)


def _methods(c: Config) -> list[str]:
    """The methods besides the neuron sets, checked, in the order given (--no-diffmean drops diffmean)."""
    bad = [m for m in c.methods if m not in METHODS]
    if bad:
        raise LanglocError(f"--methods: unknown {', '.join(bad)}; choose from {', '.join(METHODS)} (neuron sets come "
                           "with --neurons)")
    if len(set(c.methods)) != len(c.methods):
        raise LanglocError(f"--methods: each method once, got {','.join(c.methods)}")
    return [m for m in c.methods if c.diffmean or m != "diffmean"]


def _layer_groups(specs) -> tuple:
    """The layer groups as given, each checked (fractions are resolved once the model is loaded)."""
    from langloc.steer.steering import LayerGroupError, layer_group

    for spec in specs:
        try:
            layer_group(spec, num_layers=1)
        except LayerGroupError as exc:
            raise LanglocError(f"--residual-layers: {exc}") from None
    if not specs:
        raise LanglocError("--residual-layers: give at least one layer group")
    return tuple(str(s) for s in specs)


def _rules(spec: str) -> dict:
    from langloc.steer.steering import STEER_RULES

    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        rule, _, strengths = part.partition(":")
        if rule not in STEER_RULES or not strengths:
            raise LanglocError(f"--rules: give rule:strength/strength,... with rules {', '.join(STEER_RULES)}; got {part!r}")
        try:
            out[rule] = tuple(float(x) for x in strengths.split("/"))
        except ValueError:
            raise LanglocError(f"--rules: strengths must be numbers, got {strengths!r}") from None
    if not out:
        raise LanglocError("--rules: give at least one rule")
    return out


def _spec(c: Config):
    """The search grid (positions are checked by :func:`run`, for the fixed setting too)."""
    from langloc.steer.steering import STEER_MODES
    from langloc.steer.evaluation import GridSpec

    if any(m not in STEER_MODES for m in c.modes) or not c.modes:
        raise LanglocError(f"--modes must be one or more of {', '.join(STEER_MODES)}, got {','.join(c.modes)!r}")
    check_numbers("alphas", c.alphas)
    return GridSpec(rules=_rules(c.rules), modes=tuple(c.modes), positions=tuple(c.positions),
                    residual_layers=_layer_groups(c.residual_layers), alphas=tuple(c.alphas),
                    residual_positions=tuple(c.positions))


def _fixed(c: Config, sets: dict, methods: list[str], num_layers: int | None = None):
    """The neuron setting of ``--fixed`` (None where not given) and the residual methods'
    settings, by method; ``num_layers`` (the run's model) resolves layers given as fractions of
    the depth, as for ``--residual-layers``."""
    from langloc.steer.steering import ResidualSetting, parse_setting

    if not c.fixed:
        return None, {}
    given = [parse_setting(label, num_layers) for label in c.fixed]
    neuron = [s for s in given if not isinstance(s, ResidualSetting)]
    residual = {}
    for s in given:
        if isinstance(s, ResidualSetting):
            kind = getattr(s, "method", "diffmean")
            if kind in residual:
                raise LanglocError(f"--fixed: give at most one {kind}(...) setting")
            residual[kind] = s
    if len(neuron) > 1:
        raise LanglocError("--fixed: give at most one neuron setting (and one setting per residual method)")
    if sets and not neuron:
        raise LanglocError("--fixed: give a neuron setting too, e.g. on(autox1), for the neuron set(s)")
    for m in methods:
        if m in RESIDUAL and m not in residual:
            leave = "or --no-diffmean" if m == "diffmean" else "or leave it out of --methods"
            raise LanglocError(f"--fixed: give a {m}(L6x4) setting too, {leave}")
    if neuron and neuron[0].value != "auto" and neuron[0].rule != "scale":
        from langloc.intervene.values import parse_source

        parse_source(neuron[0].value)  # an unknown value source fails before the model loads
    return (neuron[0] if neuron else None), {m: s for m, s in residual.items() if m in methods}


def _load_sets(files) -> dict:
    from langloc.identify import NeuronSet

    sets = {}
    for f in files:
        ns = NeuronSet.load(f)
        name = ns.method if ns.method not in sets else f"{ns.method}:{Path(f).stem}"
        sets[name] = ns
    return sets


def _prompts(c: Config):
    from langloc.steer import prompts as P

    eval_p = P.load_prompts(c.prompts, "eval")
    if c.fixed:
        return eval_p, None
    tune_spec = c.tune_prompts or (c.prompts if c.prompts.startswith("builtin:") else None)
    if tune_spec is None:
        raise LanglocError("the search needs tuning prompts (--tune-prompts FILE) separate from --prompts")
    tune_p = P.load_prompts(tune_spec, "tune")
    if set(tune_p) & set(eval_p):
        raise LanglocError("tuning and evaluation prompts overlap; the evaluation must be held out")
    return eval_p, tune_p


def _values(lm, c: Config, run_meta: dict | None):
    """Where the values target neurons are set to come from: the run's statistics, median
    segment responses and text of its statistics split (for quantiles)."""
    from langloc.data.packing import corpus_windows, iter_batches
    from langloc.stats import ActivationStats
    from langloc.steer.steering import ValueContext
    from langloc.workflows import median_responses

    if not run_meta:
        return ValueContext(stats=None, medians=None, batches=None)
    spec = run_corpus_spec(run_meta)
    corpus = run_corpus(run_meta, seed=run_meta.get("seed", 0)) if not spec.startswith("imported:") else None
    window = run_meta.get("window", 512)

    def batches(lang):  # text for quantile values: the run's statistics split
        return iter_batches(corpus_windows(lm, corpus, lang, "stats", window=window,
                                           max_tokens=c.quantile_tokens, lazy=True), 4)

    return ValueContext(stats=ActivationStats.load(c.run), medians=median_responses(c.run, list(c.targets)),
                        batches=batches if corpus is not None else None)


def _residual_methods(lm, names: list[str], source: str, stats, run, eval_prompts: list[str]) -> dict:
    """DiffMean and the fitted directions, by name, with their unit of alpha measured: the
    residual stream's typical norm per layer on the source language's built-in prompts (all of
    them; where it has none, on the held-out prompts). It is measured once, unsteered, and
    judges nothing: the choice of a setting still sees the tuning prompts only."""
    from langloc.stats.residual_sample import ResidualSamples
    from langloc.steer import prompts as P
    from langloc.steer.diffmean import residual_norms
    from langloc.steer.directions import DirectionMethod
    from langloc.steer.evaluation import DiffMeanMethod

    if not names:
        return {}
    builtin = source in P.PROMPTS
    reference = f"builtin:{source} (all {len(P.PROMPTS[source])})" if builtin else "the held-out prompts"
    norms = residual_norms(lm, P.builtin_prompts(source, "all") if builtin else eval_prompts)
    samples = ResidualSamples(run) if run else None
    return {n: DiffMeanMethod(stats, norms, reference) if n == "diffmean"
            else DirectionMethod(stats, norms, reference, name=n, samples=samples) for n in names}


def _publisher(c: Config, lm, made_for: dict) -> dict | None:
    """With ``--decoding publisher``: the model's publisher's decoding (settings and source),
    found before the model loads where it is named (``made_for``: the run's or neuron set's
    metadata); None for ``greedy``."""
    if c.decoding not in DECODINGS:
        raise LanglocError(f"--decoding must be one of {', '.join(DECODINGS)}, got {c.decoding!r}")
    if c.decoding == "greedy":
        return None
    if c.sample or (c.temperature, c.top_p, c.top_k, c.repetition_penalty) != (1.0, 1.0, 0, 1.0):
        raise LanglocError("--decoding publisher sets the sampling itself: leave out --sample, --temperature, "
                           "--top-p, --top-k and --repetition-penalty")
    from langloc.models.loading import publisher_decoding

    made_by = made_for.get("model") or {}
    name = lm.name if lm is not None else (c.model or made_by.get("name"))
    if not name:
        raise LanglocError("--decoding publisher: give the model (--model), or a run or neuron set that names it")
    settings, source = publisher_decoding(name)
    return {"name": "publisher", "model": name, "source": source, "recommended": settings}


def run(lm, config: Config, out: str | Path | None) -> Manifest:
    from dataclasses import replace

    from langloc.controls import check_draws
    from langloc.stats import read_run
    from langloc.steer import prompts as P
    from langloc.steer.judge import DEFAULT_CANDIDATES, FluencyRule, LanguageIdentifier
    from langloc.steer.prompting import PromptingMethod, prompt_format
    from langloc.steer.relevance import Relevance
    from langloc.steer.steering import Generation, Steerer
    from langloc import distributed
    from langloc.manifest import make_manifest, stamp
    from langloc.steer.evaluation import NeuronMethod, chosen_interventions, steer_study

    c = config
    check_draws(c.control_draws)
    if not c.targets:
        raise LanglocError("give at least one target language (--target)")
    if not c.source:
        raise LanglocError("give the source language of the prompts (--source)")
    from langloc.intervene.intervention import POSITIONS

    if not c.positions or any(p not in POSITIONS for p in c.positions):
        raise LanglocError(f"--positions must be one or more of {', '.join(POSITIONS)}, got {','.join(c.positions)!r}")
    if not c.sample and (c.temperature, c.top_p, c.top_k) != (1.0, 1.0, 0):
        raise LanglocError("--temperature, --top-p and --top-k shape sampling: add --sample, or leave them out "
                           "for greedy decoding")
    spec = None if c.fixed else _spec(c)
    gen = Generation(max_new_tokens=c.max_new_tokens, do_sample=c.sample, temperature=c.temperature, top_p=c.top_p,
                     top_k=c.top_k, seed=c.seed, batch_size=c.batch_size, repetition_penalty=c.repetition_penalty,
                     no_repeat_ngram_size=c.no_repeat_ngram_size)
    fluency = FluencyRule(max_ppl=c.max_ppl, min_distinct=c.min_distinct)
    sets = _load_sets(c.neurons)
    names = _methods(c)
    if not sets and not names:
        raise LanglocError("give at least one neuron set (--neurons) or method (--methods)")
    if "diffmean" in names and not c.run:
        raise LanglocError("DiffMean needs the run folder whose statistics hold the residual means (--run)")
    fitted = [n for n in names if n in RESIDUAL and n != "diffmean"]
    if fitted:
        from langloc.stats.residual_sample import HINT, ResidualSamples

        if not c.run:
            raise LanglocError(f"{', '.join(fitted)} are fitted on a run's residual sample: give the run (--run); {HINT}")
        # one line naming what is missing (the matrix refits against each of its sources too)
        ResidualSamples(c.run).require([*c.targets, c.source, *c.matrix_sources])
    run_meta = read_run(c.run) if c.run else None
    made_for = run_meta or (next(iter(sets.values())).meta if sets else {})  # what the model is named by
    fixed_neurons, fixed_residual = _fixed(c, sets, names, made_for.get("model", {}).get("num_layers"))
    for name, ns in sets.items():
        missing = [t for t in c.targets if t not in ns.languages]
        if missing:
            raise LanglocError(f"neuron set {name!r} has no neurons for {', '.join(missing)} ({', '.join(ns.languages)})")
    eval_p, tune_p = _prompts(c)
    relevance = Relevance(c.relevance, c.relevance_others)
    for what, ps in (("held-out", eval_p), ("tuning", tune_p if spec is not None else None)):
        if relevance.on and ps is not None and len(set(ps)) <= relevance.others:
            raise LanglocError(f"the relevance criterion compares each output with {relevance.others} other prompts: "
                               f"give more than {relevance.others} distinct {what} prompts, or --no-relevance")
    for lang in (*c.targets, *c.matrix_sources):
        P.builtin_prompts(lang, "all")  # native references and matrix prompts: refuse before the model loads
    publisher = _publisher(c, lm, made_for)  # refused before the model loads
    if publisher is not None:
        gen = replace(gen, **publisher["recommended"])
    if lm is None:
        if not (run_meta or sets or c.model):
            raise LanglocError("give the model (--model), or a run (--run) or neuron set (--neurons) that names it")
        lm = load_model_of(made_for, c.model, c.dtype,
                           c.device or distributed.local_device(), str(c.run or (c.neurons[0] if c.neurons else "--model")))
    values = _values(lm, c, run_meta)
    methods = [NeuronMethod(name, ns) for name, ns in sets.items()]
    groups = (spec.layer_groups(lm.num_layers) if spec is not None
              else tuple(s.layers for s in fixed_residual.values()))
    if any(n in RESIDUAL for n in names) and any(not 0 <= l < lm.num_layers for g in groups for l in g):
        raise LanglocError(f"residual layers {', '.join(map(str, sorted({l for g in groups for l in g})))} must lie "
                           f"in 0..{lm.num_layers - 1} (the model has {lm.num_layers} layers)")
    if "diffmean" in names:
        values.stats.mean_residual(c.source)  # a clear error for statistics without residual sums
    residual = _residual_methods(lm, [n for n in names if n in RESIDUAL], c.source, values.stats, c.run, eval_p)
    methods += [residual[n] if n in residual else PromptingMethod(prompt_format(lm.tokenizer)) for n in names]
    fixed = None
    if c.fixed:
        fixed = {m.name: replace(fixed_neurons, value=m.value if fixed_neurons.value == "auto" else fixed_neurons.value)
                 for m in methods if isinstance(m, NeuronMethod)}
        fixed.update(fixed_residual)
    steerer = Steerer(lm, values, gen, fluency,
                      LanguageIdentifier(list(c.candidates) if c.candidates else DEFAULT_CANDIDATES),
                      relevance=relevance)
    started = time.time()
    result, gens = steer_study(steerer, methods, c, eval_prompts=eval_p, tune_prompts=tune_p,
                               prompts_of=lambda lang: P.builtin_prompts(lang, "all"), spec=spec, fixed=fixed,
                               decoding=publisher, parts=Path(out) / ".parts" if out is not None else None)
    result = stamp(result, make_manifest(KIND, model=lm.meta, config=c.to_dict(),
                                         seeds={"controls": c.seed, "generation": steerer.gen.seed}, started=started))
    if out is not None and distributed.is_main():  # under torchrun the first process writes
        for name, iv in chosen_interventions(steerer, methods, result).items():
            iv.save(Path(out) / "interventions" / name)
        write_outputs(Path(out), result, gens)
    return Manifest(result, result=result, path=Path(out) / "steer.json" if out else None)


def write_outputs(out: Path, result: dict, gens: list[dict]) -> None:
    """steer.json (the manifest), summary.csv, methods.csv, matrix.csv, native.csv,
    generations.jsonl, steering.png and, where a method's ratio to the native ceiling is defined,
    native_ratio.png."""
    import json

    from langloc.artefacts import atomic_path, write_csv, write_json
    from langloc.plotting import plot_native_ratio, plot_steering, run_label
    from langloc.steer.evaluation import COLUMNS, MATRIX_COLUMNS, METHOD_COLUMNS, NATIVE_COLUMNS

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "steer.json", result)
    write_csv(out / "summary.csv", result["rows"], COLUMNS, float_digits=4)
    write_csv(out / "methods.csv", result["method_table"], METHOD_COLUMNS, float_digits=4)
    write_csv(out / "matrix.csv", result["matrix"], MATRIX_COLUMNS, float_digits=4)
    write_csv(out / "native.csv", result["native"], NATIVE_COLUMNS, float_digits=4)
    with atomic_path(out / "generations.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for g in gens:
                f.write(json.dumps(g, ensure_ascii=False) + "\n")
    plot_steering(result["rows"], out / "steering.png")
    if any(m.get("ratio_to_native") is not None for m in result["method_table"]):
        plot_native_ratio({run_label(result): result["method_table"]}, out / "native_ratio.png")
