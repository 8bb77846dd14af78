"""steer: switch language neurons on/off during generation and measure the output language.

For each neuron set (method) and target language: search the setting (mode, strength,
positions) on tuning prompts or take the one given, evaluate it on held-out prompts, and run
the random control (:func:`langloc.steer.study.steer_study`). Writes ``OUT/steer.json`` (the
manifest), ``summary.csv``, ``generations.jsonl``, ``interventions/`` and ``steering.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc.errors import LanglocError
from langloc.studies.base import Manifest, StudyConfig, check_numbers, load_model_of, run_corpus_spec

KIND = "langloc.steer"


@dataclass
class Config(StudyConfig):
    """neurons: neuron set files, each one method; targets: target languages; source: the
    language whose neurons the off modes zero (None: none); run: run folder whose statistics
    give the values; model: model (default the run's / the set's); prompts, tune_prompts:
    held-out and tuning prompts (builtin:<lang> or a file); search: search the setting on the
    tuning prompts; mode, strength: the setting without search; value: what target neurons
    are set to (auto, mean_active, pNN, a number, ...); strengths: strengths the search
    tries; positions: position modes (all, prompt, generated; default all,generated with
    search, else all); max_new_tokens, sample, temperature, top_p, no_repeat_ngram_size,
    repetition_penalty, batch_size: generation; seed: sampling seed, and the controls' and
    bootstrap's; max_ppl, min_distinct: the fluency rule; controls, control_draws: random
    controls; quantile_tokens: text for quantile values; candidates: languages the language
    identifier chooses from (default its own list); dtype, device: how the model is loaded;
    progress: show progress bars."""

    neurons: tuple[Path, ...]
    targets: tuple[str, ...]
    source: Optional[str] = "en"
    run: Optional[Path] = None
    model: Optional[str] = None
    prompts: str = "builtin:en"
    tune_prompts: Optional[str] = None
    search: bool = True
    mode: str = "on"
    value: str = "auto"
    strength: float = 1.0
    strengths: Optional[tuple[float, ...]] = None
    positions: Optional[tuple[str, ...]] = None
    max_new_tokens: int = 32
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    no_repeat_ngram_size: int = 3
    repetition_penalty: float = 1.0
    seed: int = 0
    batch_size: int = 16
    max_ppl: float = 200.0
    min_distinct: float = 0.5
    controls: bool = True
    control_draws: int = 3
    quantile_tokens: int = 16384
    candidates: Optional[tuple[str, ...]] = None
    dtype: str = "auto"
    device: Optional[str] = None
    progress: bool = True


def _settings(c: Config):
    """Checked position modes and the setting without search."""
    from langloc.intervene.intervention import POSITIONS
    from langloc.steer.steering import SteerSetting

    given = ",".join(c.positions) if c.positions else None
    positions = c.positions or (("all", "generated") if c.search else ("all",))
    if not positions or any(p not in POSITIONS for p in positions):
        raise LanglocError(f"--positions must be one or more of {', '.join(POSITIONS)}, got {given!r}")
    if not c.search and len(positions) > 1:
        raise LanglocError(f"--positions: without --search give one position mode, got {given!r}")
    if c.value != "auto":
        from langloc.intervene.values import parse_source

        parse_source(c.value)
    return positions, SteerSetting(c.mode, c.strength, c.value, positions[0])


def _load_sets(files) -> dict:
    from langloc.identify import NeuronSet

    sets = {}
    for f in files:
        ns = NeuronSet.load(f)
        name = ns.method if ns.method not in sets else f"{ns.method}:{Path(f).stem}"
        sets[name] = ns
    if not sets:
        raise LanglocError("give at least one neuron set (--neurons)")
    return sets


def _prompts(c: Config):
    from langloc.steer import prompts as P

    eval_p = P.load_prompts(c.prompts, "eval")
    if not c.search:
        return eval_p, None
    tune_spec = c.tune_prompts or (c.prompts if c.prompts.startswith("builtin:") else None)
    if tune_spec is None:
        raise LanglocError("the strength search needs tuning prompts (--tune-prompts FILE) separate from --prompts")
    tune_p = P.load_prompts(tune_spec, "tune")
    if set(tune_p) & set(eval_p):
        raise LanglocError("tuning and evaluation prompts overlap; the evaluation must be held out")
    return eval_p, tune_p


def _values(lm, c: Config, run_meta: dict | None):
    """Where the values target neurons are set to come from: the run's statistics, median
    segment responses and text of its statistics split (for quantiles)."""
    from langloc.data import load_corpus
    from langloc.data.packing import corpus_windows, iter_batches
    from langloc.stats import ActivationStats
    from langloc.steer.steering import ValueContext
    from langloc.workflows import median_responses

    if not run_meta:
        return ValueContext(stats=None, medians=None, batches=None)
    spec = run_corpus_spec(run_meta)
    corpus = load_corpus(spec, seed=run_meta.get("seed", 0)) if not spec.startswith("imported:") else None
    window = run_meta.get("window", 512)

    def batches(lang):  # text for quantile values: the run's statistics split
        return iter_batches(corpus_windows(lm, corpus, lang, "stats", window=window,
                                           max_tokens=c.quantile_tokens, lazy=True), 4)

    return ValueContext(stats=ActivationStats.load(c.run), medians=median_responses(c.run, list(c.targets)),
                        batches=batches if corpus is not None else None)


def run(lm, config: Config, out: str | Path | None) -> Manifest:
    from langloc.controls import check_draws
    from langloc.stats import read_run
    from langloc.steer.judge import DEFAULT_CANDIDATES, FluencyRule, LanguageIdentifier
    from langloc.steer.steering import DEFAULT_STRENGTHS, Generation, Steerer, search_grid
    from langloc.steer.study import check_targets, steer_study

    c = config
    check_numbers("strengths", c.strengths)
    check_draws(c.control_draws)
    positions, setting = _settings(c)
    gen = Generation(max_new_tokens=c.max_new_tokens, do_sample=c.sample, temperature=c.temperature, top_p=c.top_p,
                     seed=c.seed, batch_size=c.batch_size, repetition_penalty=c.repetition_penalty,
                     no_repeat_ngram_size=c.no_repeat_ngram_size)
    fluency = FluencyRule(max_ppl=c.max_ppl, min_distinct=c.min_distinct)
    sets = _load_sets(c.neurons)
    eval_p, tune_p = _prompts(c)
    check_targets(sets, list(c.targets))  # before the model loads
    run_meta = read_run(c.run) if c.run else None
    if lm is None:
        lm = load_model_of(run_meta or next(iter(sets.values())).meta, c.model, c.dtype, c.device,
                           str(c.run or c.neurons[0]))
    steerer = Steerer(lm, _values(lm, c, run_meta), gen, fluency,
                      LanguageIdentifier(list(c.candidates) if c.candidates else DEFAULT_CANDIDATES))
    common = dict(source=c.source or None, eval_prompts=eval_p, controls=c.controls, seed=c.seed, out=out,
                  progress=c.progress, control_draws=c.control_draws)
    if c.search:
        grid = search_grid(c.value, tuple(c.strengths or DEFAULT_STRENGTHS), with_source=bool(c.source),
                           positions=positions)
        result = steer_study(steerer, sets, list(c.targets), tune_prompts=tune_p, settings=grid, **common)
    else:
        result = steer_study(steerer, sets, list(c.targets), setting=setting, **common)
    return Manifest(result, result=result, path=Path(out) / "steer.json" if out else None)
