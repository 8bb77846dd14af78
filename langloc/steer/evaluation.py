"""A steering study: for each method and target language, search the setting on tuning
prompts, evaluate it on held-out prompts under the strict judge (and the lenient one), run
its random control, then steer from other source languages (the source x target matrix).

Methods are neuron sets (LAPE, thresholding, expert units: rules ``set``/``add``/``scale``,
modes ``on``/``on+off``/``off``) and ``diffmean`` (a residual-stream vector, layers x alpha).
Controls: random neurons with the same count per layer, the same setting; for DiffMean a
random direction of the same norm at the same layers (:mod:`langloc.steer.diffmean`).

Intervals: every rate of one cell (a method on a target) is a share of prompts, with a 95%
Clopper-Pearson interval over prompts (a control with several draws: the mean over draws, with
the prompts as n). Averages over targets have the same interval over prompts, a prompt's
value being its success share over the targets (the same prompts serve every target), which
is conservative (:mod:`langloc.evaluate.intervals`).

The strict judge's perplexity bar is measured first: the unsteered model continues the
built-in native prompts of every target language; the median perplexity per language and
the factor ``k`` (95th percentile of perplexity / median, pooled) come from those
continuations (:func:`langloc.steer.judge.native_k`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from langloc.artefacts import cached_cells, compute_key, shared_step, step_seconds
from langloc.controls import check_draws, derive_seed, random_control
from langloc.errors import LanglocError
from langloc.evaluate.intervals import mean_of_intervals, rate_ci, rate_ratio_ci, share_ci
from langloc.intervene.intervention import Intervention, ResidualEdit
from langloc.steer.judge import StrictRule, clas_score, median, native_k, summarise
from langloc.steer.search import Bounds, edge_search, flat
from langloc.steer.steering import ResidualSetting, SteerSetting, Steerer, layer_group, steering_intervention

RATES = ("strict_rate", "fluent_target_rate", "target_rate", "fluent_rate", "relevance_rate")
COLUMNS = ("method", "target", "setting", "at_grid_edge", "grid_extension", "search_flat", "neurons", "n", *[c for r in RATES for c in (r, f"{r}_lo", f"{r}_hi")],
           "clas", "median_ppl", "mean_distinct", "control_draws",
           *[c for r in ("strict_rate", "fluent_target_rate", "target_rate", "relevance_rate") for c in
             (f"control_{r}", f"control_{r}_lo", f"control_{r}_hi")],
           "unsteered_strict_rate", "unsteered_target_rate",
           "native_strict_rate", "ratio_to_native", "ratio_to_native_lo", "ratio_to_native_hi", "ratio_to_native_note",
           "decoding")
METHOD_COLUMNS = ("method", "targets", "strict_rate", "strict_rate_lo", "strict_rate_hi", "fluent_target_rate",
                  "target_rate", "relevance_rate", "clas",
                  "control_strict_rate", "control_strict_rate_lo", "control_strict_rate_hi",
                  "control_strict_rate_max_cell", "control_relevance_rate", "rules_chosen", "cells_at_grid_edge",
                  "cells_search_flat", "ratio_to_native", "ratio_to_native_lo", "ratio_to_native_hi", "ratio_to_native_targets", "decoding")
MATRIX_RATES = ("strict_rate", "fluent_target_rate", "target_rate", "relevance_rate")
MATRIX_COLUMNS = ("method", "source", "target", "setting", "n",
                  *[c for r in MATRIX_RATES for c in (r, f"{r}_lo", f"{r}_hi")],
                  "unsteered_strict_rate")
NATIVE_COLUMNS = ("language", "n", "median_ppl", "strict_rate", "strict_rate_lo", "strict_rate_hi", "target_rate",
                  "target_rate_lo", "target_rate_hi", "relevance_rate", "relevance_rate_lo", "relevance_rate_hi")


RELEVANCE_RULE = ("relevant when the unsteered model's PMI between prompt and output, in nats per output token, "
                  "is > 0, against the mean likelihood after the `others` prompts that follow in the list")


def _unit(r: dict, rate: str, target: str) -> float:
    return float({"strict_rate": bool(r.get("strict")), "fluent_target_rate": bool(r["success"]),
                  "target_rate": r["lang"] == target, "fluent_rate": bool(r["fluent"]),
                  "relevance_rate": bool(r.get("relevant"))}[rate])


def rate_row(runs: list[list[dict]], target: str, prefix: str = "", rates=RATES) -> dict:
    """``<prefix><rate>`` and its Clopper-Pearson interval, averaged over ``runs`` (draws) of the
    same prompts (the relevance rate is None where relevance was not judged)."""
    out = {}
    n = len(runs[0])
    for rate in rates:
        if rate == "relevance_rate" and not all("relevant" in r for run in runs for r in run):
            out[f"{prefix}{rate}"] = out[f"{prefix}{rate}_lo"] = out[f"{prefix}{rate}_hi"] = None
            continue
        s = sum(_unit(r, rate, target) for run in runs for r in run) / len(runs)
        lo, hi = rate_ci(s, n)
        out[f"{prefix}{rate}"], out[f"{prefix}{rate}_lo"], out[f"{prefix}{rate}_hi"] = s / n, lo, hi
    return out


NATIVE_RATIO_RULE = ("strict success / the strict success of the unsteered model's own continuations of the built-in "
                     "native prompts in the target, under the same judge and decoding; per target a 95% Koopman score "
                     "interval (a ratio of two independent rates); averaged over the targets whose native rate is "
                     "above 0, with the mean of their limits (conservative whatever the targets' correlation)")
UNDEFINED_RATIO = "native strict rate 0: the ratio is undefined"


def native_ratio(row: dict, native: dict) -> dict:
    """A cell's strict success relative to the native ceiling: ``strict_rate`` / the native
    strict rate of its target (``native``: its row of native.csv), with Koopman's score interval
    (:func:`~langloc.evaluate.intervals.rate_ratio_ci`; the steered prompts and the native
    prompts are independent samples). Where the native strict rate is 0 the ratio is undefined:
    empty, with a note, never a number or an interval of no width."""
    q, nn = native.get("strict_rate"), native.get("n") or 0
    out = {"native_strict_rate": q, "ratio_to_native": None, "ratio_to_native_lo": None,
           "ratio_to_native_hi": None, "ratio_to_native_note": None}
    if not nn or not q:
        out["ratio_to_native_note"] = UNDEFINED_RATIO
        return out
    lo, hi = rate_ratio_ci(round(row["strict_rate"] * row["n"]), row["n"], round(q * nn), nn)
    out.update(ratio_to_native=row["strict_rate"] / q, ratio_to_native_lo=lo, ratio_to_native_hi=hi)
    return out


def mean_native_ratio(rows: list[dict]) -> dict:
    """A method's ratio to the native ceiling, averaged over the targets where it is defined
    (``ratio_to_native_targets`` says how many): the mean of the targets' ratios, and the mean of
    their lower and upper limits (:func:`~langloc.evaluate.intervals.mean_of_intervals`)."""
    ok = [r for r in rows if r.get("ratio_to_native") is not None]
    if not ok:
        return {"ratio_to_native": None, "ratio_to_native_lo": None, "ratio_to_native_hi": None,
                "ratio_to_native_targets": 0}
    m, lo, hi = mean_of_intervals([r["ratio_to_native"] for r in ok],
                                  [(r["ratio_to_native_lo"], r["ratio_to_native_hi"]) for r in ok])
    return {"ratio_to_native": m, "ratio_to_native_lo": lo, "ratio_to_native_hi": hi, "ratio_to_native_targets": len(ok)}


def control_relevance(rows: list[dict], gens: list[dict], source: str) -> None:
    """Add each cell's random-control relevance rate (mean over draws, Clopper-Pearson over
    prompts, as the method's own), from the control generations of ``source``; empty where
    relevance was not judged, absent without controls."""
    runs: dict = {}
    for g in gens:
        if g.get("source") == source and str(g.get("method", "")).startswith("random:") and "draw" in g:
            runs.setdefault((g["method"][len("random:"):], g["target"]), {}).setdefault(g["draw"], []).append(g)
    for row in rows:
        draws = runs.get((row["method"], row["target"]))
        if draws:
            row.update(rate_row([draws[d] for d in sorted(draws)], row["target"], "control_", ("relevance_rate",)))


def decoding_doc(gen, decoding: dict | None) -> dict:
    """What steer.json says of the decoding: its name (``greedy``, ``sampled``: the options given,
    or ``publisher``: the model's publisher's settings, with their source) and the settings."""
    if decoding is None:
        decoding = {"name": "sampled" if gen.do_sample else "greedy"}
    return {**decoding, "settings": asdict(gen)}


@dataclass
class GridSpec:
    """What the search tries. Neuron methods: each rule with its strengths, in each mode and
    position mode; DiffMean: each layer group with each alpha, in each position mode. Gentle
    settings come first: ties go to the earlier one. Then the search goes outward while the
    best sits at an edge of the grid, within the bounds (:mod:`langloc.steer.search`).

    The defaults scale with the model and are stated here only (the command line and the
    study's config take them from here): layer groups are fractions of the depth, resolved
    per model (:func:`~langloc.steer.steering.layer_group`), spread over the network rather
    than fitted to one model's layers; alpha is in units of the residual stream's typical norm
    at the steered layer (:class:`DiffMeanMethod`); neuron strengths are multiples of each
    neuron's own value (its mean activation, for ``set`` and ``add``) or factors (``scale``).
    The extension's bounds: alpha 1/64 to 8 typical norms, strengths 1/8 to 16, at most 32
    more settings per cell."""

    rules: dict = field(default_factory=lambda: {"set": (1.0, 2.0), "add": (1.0, 2.0), "scale": (2.0, 4.0)})
    modes: tuple = ("on",)
    positions: tuple = ("all",)
    residual_layers: tuple = ("0.25", "0.5", "0.75", "0.4-0.6")
    alphas: tuple = (0.25, 0.5, 1.0)
    residual_positions: tuple = ("all",)
    bounds: Bounds = field(default_factory=Bounds)

    def layer_groups(self, num_layers: int) -> list[tuple[int, ...]]:
        """The layer groups resolved for a model of ``num_layers`` layers (a group that resolves
        to the same layers as an earlier one is tried once)."""
        return list(dict.fromkeys(layer_group(g, num_layers) for g in self.residual_layers))

    def neuron_grid(self, value: str, with_source: bool) -> list[SteerSetting]:
        grid = []
        for pos in self.positions:
            for mode in self.modes:
                if mode == "off":
                    if with_source:
                        grid.append(SteerSetting("off", 1.0, value, pos))
                    continue
                if mode == "on+off" and not with_source:
                    continue
                for rule, strengths in self.rules.items():
                    grid += [SteerSetting(mode, s, value, pos, rule) for s in strengths]
        return grid

    def residual_grid(self, num_layers: int) -> list[ResidualSetting]:
        return [ResidualSetting(ls, a, pos) for pos in self.residual_positions
                for ls in self.layer_groups(num_layers) for a in self.alphas]


@dataclass
class NeuronMethod:
    """A neuron set steered by :class:`SteerSetting` s."""

    name: str
    ns: object

    @property
    def value(self) -> str:
        # the published value source: expert units' median response (Kojima et al.), else the
        # mean active value (Tang et al.)
        return "median_response" if self.ns.method == "expert_units" else "mean_active"

    def grid(self, spec: GridSpec, source: str | None) -> list:
        return spec.neuron_grid(self.value, bool(source and source in self.ns.languages))

    def _source_layers(self, source):
        return self.ns.layers(source) if source and source in self.ns.languages else None

    def intervention(self, steerer: Steerer, setting, target, source, meta=None) -> Intervention:
        return steering_intervention(steerer.lm, setting, target, self.ns.layers(target), source,
                                     self._source_layers(source), steerer.values, meta)

    def control(self, steerer: Steerer, setting, target, source, seed: int, draw: int) -> Intervention:
        cname = f"random:{self.name}:{target}"
        rt = random_control(self.ns.layers(target), self.ns.intermediate_size, seed, cname, draw)
        sl = self._source_layers(source)
        rs = random_control(sl, self.ns.intermediate_size, seed, f"{cname}:source", draw) if sl else None
        return steering_intervention(steerer.lm, setting, target, rt, source, rs, steerer.values,
                                     {"description": "random control"})

    def size(self, target) -> int:
        return sum(len(i) for i in self.ns.layers(target))

    def setting(self, d: dict) -> SteerSetting:
        return SteerSetting(**d)

    def fingerprint(self, target) -> list:  # what a kept cell was computed with
        return [i.tolist() for i in self.ns.layers(target)]


@dataclass
class DiffMeanMethod:
    """The residual-stream DiffMean vector from the run's statistics, added in units of the
    residual stream's typical norm: ``alpha * norms[l] * v[l] / |v[l]|`` at each steered layer
    (:mod:`langloc.steer.diffmean`; ``norms`` from :func:`~langloc.steer.diffmean.residual_norms`,
    measured on ``reference``)."""

    stats: object
    norms: list
    reference: str = ""
    name: str = "diffmean"

    def grid(self, spec: GridSpec, source: str | None) -> list:
        return spec.residual_grid(self.stats.num_layers)

    def _edit(self, lm, setting: ResidualSetting, vectors, source: dict) -> ResidualEdit:
        return ResidualEdit.at(lm.num_layers, {l: setting.alpha * self.norms[l] * (vectors[l] / vectors[l].norm()).float()
                                               for l in setting.layers}, source)

    def unit(self) -> dict:
        """The unit of alpha, for steer.json: the typical norm per layer and what it was measured on."""
        return {"alpha": "a multiple of the residual stream's typical norm at the steered layer (median |h_l| over "
                         "tokens), along the DiffMean direction", "norms": [round(n, 4) for n in self.norms],
                "measured_on": self.reference}

    def vectors(self, target, source):
        from langloc.steer.diffmean import diffmean_vectors

        if not source:
            raise LanglocError("DiffMean steering needs a source language")
        return diffmean_vectors(self.stats, target, source)

    def intervention(self, steerer: Steerer, setting: ResidualSetting, target, source, meta=None) -> Intervention:
        v = self.vectors(target, source)
        edit = self._edit(steerer.lm, setting, v, {"method": "diffmean", "target": target, "source": source,
                                                  "alpha": setting.alpha})
        return Intervention([edit], setting.positions, {"model": steerer.lm.meta, **(meta or {})})

    def control(self, steerer: Steerer, setting: ResidualSetting, target, source, seed: int, draw: int) -> Intervention:
        from langloc.steer.diffmean import random_directions

        v = self.vectors(target, source)
        r = random_directions(v, setting.layers, derive_seed(seed, f"random:diffmean:{target}:{source}", draw))
        edit = self._edit(steerer.lm, setting, r, {"method": "random direction", "target": target, "alpha": setting.alpha})
        return Intervention([edit], setting.positions, {"model": steerer.lm.meta, "description": "random control"})

    def size(self, target) -> int:
        return 0

    def setting(self, d: dict) -> ResidualSetting:
        return ResidualSetting(**d)

    def fingerprint(self, target) -> str:
        return "residual means of the run; alpha in typical norms"


def native_reference(steerer: Steerer, languages: list[str], prompts_of, k: float | None = None) -> tuple[dict, float, list]:
    """The unsteered model's continuations of native prompts in each language: median
    perplexity per language, and ``k`` (measured unless given). Returns (medians, k, records)."""
    from langloc import distributed

    medians, ratios, recs_all = {}, [], []
    # Under torchrun the languages are shared out over the processes (each a generation of its own).
    runs = distributed.map_cells(lambda lang: steerer.run(prompts_of(lang), lang, None)[0], languages)
    for lang, recs in zip(languages, runs):
        ppls = [r["ppl"] for r in recs if math.isfinite(r["ppl"])]
        medians[lang] = median(ppls)
        ratios += [p / medians[lang] for p in ppls]
        recs_all += [{"method": "native", "target": lang, **r} for r in recs]
    return medians, (native_k(ratios) if k is None else float(k)), recs_all


def _unsteered(steerer: Steerer, prompts: list[str], targets: list[str]) -> dict:
    """The unsteered model's continuations of ``prompts``, judged for each target."""
    from langloc.steer.judge import judge
    from langloc.steer.steering import generate

    outs = steerer.relevance.score(steerer.lm, generate(steerer.lm, prompts, steerer.gen))  # once, for every target
    return {t: judge([dict(r) for r in outs], steerer.lm, steerer.identify, t, steerer.rule, steerer.strict)
            for t in targets}


def _examples(recs: list[dict], n: int = 3) -> list[dict]:
    return [{"prompt": r["prompt"], "text": r["text"], "strict": r.get("strict"), "fails": r.get("strict_fails"),
             "ppl": r["ppl"]} for r in recs[:n]]


def steer_study(steerer: Steerer, methods: list, config, *, eval_prompts: list[str], tune_prompts: list[str] | None,
                prompts_of, spec: GridSpec | None = None, fixed: dict | None = None, decoding: dict | None = None,
                parts: str | Path | None = None) -> tuple[dict, list[dict]]:
    """Run the study and return ``(result, generations)``: the content of ``steer.json`` (without
    its manifest; ``rows`` of summary.csv, ``method_table`` of methods.csv, ``matrix``, ``native``)
    and the records of generations.jsonl. Writes nothing but its resumable cache under ``parts``
    (each finished step, with the settings that made it); :mod:`langloc.studies.steer` writes
    the files and the manifest, and the interventions (:func:`chosen_interventions`).

    ``config``: the study's settings, :class:`langloc.studies.steer.Config` (read by attribute:
    ``targets``, ``source``, ``k``, ``matrix_sources``, ``controls``, ``control_draws``, ``seed``,
    ``progress``; its ``to_dict()`` keys the cache). ``spec``: search each method's grid on
    ``tune_prompts``; else ``fixed[method.name]`` is the setting. ``prompts_of(lang)``: the
    built-in prompts of a language: the native references of each target (the perplexity bar)
    and the matrix's prompts of each other source, steered with the setting chosen from
    ``source``. ``decoding``: its name and source (:func:`decoding_doc`), for steer.json and the
    tables.
    """
    targets, source, k, seed = list(config.targets), config.source, config.k, config.seed
    matrix_sources, controls, progress = tuple(config.matrix_sources), config.controls, config.progress
    native_prompts = matrix_prompts = prompts_of
    if (spec is None) == (fixed is None):
        raise LanglocError("give either a search grid or fixed settings")
    if spec is not None and not tune_prompts:
        raise LanglocError("the search needs tuning prompts")
    from langloc import distributed

    draws = check_draws(config.control_draws)
    started = time.time()
    lm = steerer.lm
    rank, world = distributed.rank_and_world()
    progress = progress and rank == 0
    for m in methods:  # (the study checks that each set has neurons for every target, before the model loads)
        if isinstance(m, NeuronMethod):
            m.ns.check_model(lm)
    # Every finished step is kept in ``parts`` (OUT/.parts) with the settings that made it: rerunning
    # the same command after a kill continues after the last finished cell.
    steps = {}  # step -> seconds it took when computed, in this invocation or an earlier one
    # (targets, sets and sources are not part of it: each cell's key names its own, so a rerun
    # with one more target or method keeps the cells it shares with the first run)
    unkeyed = ("progress", "targets", "matrix_sources", "neurons", "diffmean", "methods", "controls", "control_draws")
    # "compute": the dtype and device class in use (the config's --dtype may say "auto"); the
    # batch size is in "generation"; "statistics": the run's windows the values come from.
    run_stats = steerer.values.stats
    step_key = {"config": {n: v for n, v in config.to_dict().items() if n not in unkeyed}, "model": lm.meta,
                "compute": compute_key(lm), "generation": asdict(steerer.gen),
                "statistics": {n: run_stats.meta.get(n) for n in ("corpus", "window", "tokens", "seed")}
                if run_stats is not None else None, "lenient": asdict(steerer.rule), "source": source,
                "relevance": asdict(steerer.relevance),
                "eval_prompts": eval_prompts, "tune_prompts": tune_prompts, "seed": seed}
    languages = list(dict.fromkeys(targets))
    n_controls = draws if controls else 0

    def native():
        m, kk, recs = native_reference(steerer, languages, native_prompts, k)
        return {"medians": m, "k": kk, "recs": recs}

    nat = shared_step(parts, "native", {**step_key, "targets": languages, "k": k}, native, seconds=steps)
    medians, k_used, native_recs = nat["medians"], nat["k"], nat["recs"]
    steerer.strict = StrictRule(native_median=medians, k=k_used)
    native_rows, gens = [], []
    for lang in languages:
        recs = [r for r in native_recs if r["target"] == lang]
        judged = [dict(r, **steerer.strict.verdict(r["text"], r["tokens"], r["ppl"], lang, steerer.identify,
                                                   r.get("relevant"))) for r in recs]
        native_rows.append({"language": lang, "n": len(recs), "median_ppl": medians[lang],
                            **rate_row([judged], lang, rates=("strict_rate", "target_rate", "relevance_rate"))})
        gens += judged
    strict_key = {**step_key, "strict": asdict(steerer.strict)}
    # The unsteered continuations (generated once, judged per target) and every (method, target)
    # cell are independent: under torchrun they are shared out over the processes.
    cells = [(f"unsteered-{source}", {**strict_key, "targets": targets},
              lambda: _unsteered(steerer, eval_prompts, targets))]
    pairs = [(m, target) for m in methods for target in targets]
    cells += [(f"cell-{m.name}-{source}-{target}",
               {**strict_key, "method": m.name, "target": target, "what": m.fingerprint(target), "draws": n_controls},
               lambda m=m, target=target: _cell(steerer, m, target, source, spec, fixed, tune_prompts, eval_prompts,
                                                n_controls, seed, progress))
              for m, target in pairs]
    bar = tqdm(total=distributed.rank_share(len(cells), rank, world), desc="steer", unit="cell", disable=not progress)

    def cell_done(j, cell):
        if j:
            m, target = pairs[j - 1]
            bar.set_postfix_str(f"{m.name} {target}: {100 * cell['summary']['strict_rate']:.0f}% strict")
        bar.update()

    base, *computed = cached_cells(parts, cells, steps, cell_done)
    bar.close()
    gens += [{"method": "unsteered", "source": source, "target": t, **r} for t, recs in base.items() for r in recs]
    rows, details, chosen_of, examples = [], [], {}, {}
    for (m, target), cell in zip(pairs, computed):
        trials, chosen, recs, summ, control_runs = (cell["trials"], m.setting(cell["chosen"]), cell["recs"],
                                                    cell["summary"], cell["controls"])
        chosen_of[(m.name, target)] = chosen
        gens += [{"method": m.name, "source": source, "target": target, "setting": chosen.label(), **r} for r in recs]
        for d, crecs in enumerate(control_runs):
            gens += [{"method": f"random:{m.name}", "source": source, "target": target,
                      "setting": chosen.label(), "draw": d, **r} for r in crecs]
        edge = cell.get("search") or {}  # None: a fixed setting, nothing searched
        row = {"method": m.name, "target": target, "setting": chosen.label(), "at_grid_edge": edge.get("at_grid_edge"),
               "grid_extension": edge.get("extension"),
               "search_flat": search_flat(trials) if cell.get("search") else None, "neurons": m.size(target),
               "n": len(recs), **rate_row([recs], target), "median_ppl": summ["median_ppl"],
               "mean_distinct": summ["mean_distinct"], "control_draws": draws if controls else None,
               **(rate_row(control_runs, target, "control_", ("strict_rate", "fluent_target_rate", "target_rate"))
                  if control_runs else {}),
               "unsteered_strict_rate": sum(_unit(r, "strict_rate", target) for r in base[target]) / len(base[target]),
               "unsteered_target_rate": sum(r["lang"] == target for r in base[target]) / len(base[target])}
        row["clas"] = clas_score(row["target_rate"], row["relevance_rate"])
        rows.append(row)
        examples[f"{m.name}:{source}->{target}"] = _examples(recs)
        if control_runs:
            examples[f"random:{m.name}:{source}->{target}"] = _examples(control_runs[0], 2)
        details.append({"method": m.name, "target": target, "chosen": asdict(chosen), "search": trials,
                        "edge": edge, "eval": summ})
    # the rows completed once every cell is in: the controls' relevance, the ratio to the native
    # ceiling (the natives are the same for every method) and the decoding
    dec = decoding_doc(steerer.gen, decoding)
    native_of = {r["language"]: r for r in native_rows}
    control_relevance(rows, gens, source)
    for row in rows:
        row.update(native_ratio(row, native_of[row["target"]]), decoding=dec["name"])
    per_prompt = {}  # (method, control?) -> per prompt, strict successes over targets
    for g in gens:
        if g["method"] in ("native", "unsteered") or g.get("source") != source:
            continue
        key = g["method"]
        per_prompt.setdefault(key, {}).setdefault(g["prompt"], []).append(float(bool(g.get("strict"))))
    method_rows = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m.name]
        vals = [sum(v) / len(v) for v in per_prompt[m.name].values()]
        lo, hi = share_ci(vals)
        mr = {"method": m.name, "targets": len(mine), "strict_rate": sum(r["strict_rate"] for r in mine) / len(mine),
              "strict_rate_lo": lo, "strict_rate_hi": hi,
              "fluent_target_rate": sum(r["fluent_target_rate"] for r in mine) / len(mine),
              "target_rate": sum(r["target_rate"] for r in mine) / len(mine),
              "relevance_rate": _mean([r["relevance_rate"] for r in mine]), "clas": _mean([r["clas"] for r in mine]),
              "rules_chosen": ", ".join(sorted({_rule(chosen_of[(m.name, r['target'])]) for r in mine})),
              "cells_at_grid_edge": sum(bool(r["at_grid_edge"]) for r in mine) if spec is not None else None,
              "cells_search_flat": sum(bool(r["search_flat"]) for r in mine) if spec is not None else None,
              **mean_native_ratio(mine), "decoding": dec["name"]}
        if controls:
            cvals = [sum(v) / len(v) for v in per_prompt[f"random:{m.name}"].values()]
            clo, chi = share_ci(cvals)
            mr.update(control_strict_rate=sum(r["control_strict_rate"] for r in mine) / len(mine),
                      control_strict_rate_lo=clo, control_strict_rate_hi=chi,
                      control_strict_rate_max_cell=max(r["control_strict_rate"] for r in mine),
                      control_relevance_rate=_mean([r.get("control_relevance_rate") for r in mine]))
        method_rows.append(mr)
    best = max(method_rows, key=lambda r: r["strict_rate"])["method"]
    matrix = [{"method": r["method"], "source": source, "target": r["target"], "setting": r["setting"], "n": r["n"],
               **{k: r[k] for k in MATRIX_COLUMNS[5:]}} for r in rows]
    matrix_methods = [m for m in methods if m.name in dict.fromkeys([best, "lape"])]
    # The matrix: each other source's unsteered continuations and each (method, source, target)
    # cell are independent too, and shared out the same way.
    srcs = [src for src in matrix_sources if src != source]
    src_prompts = {src: matrix_prompts(src) for src in srcs}
    src_keys = {src: {**strict_key, "source": src, "prompts": src_prompts[src]} for src in srcs}
    src_cells = []
    for src in srcs:
        others = [t for t in targets if t != src]
        src_cells.append((f"unsteered-{src}", {**src_keys[src], "targets": others},
                          lambda src=src, others=others: _unsteered(steerer, src_prompts[src], others)))
        src_cells += [(f"matrix-{m.name}-{src}-{t}",
                       {**src_keys[src], "method": m.name, "target": t, "what": m.fingerprint(t),
                        "setting": asdict(chosen_of[(m.name, t)])},
                       lambda m=m, t=t, src=src: steerer.run(src_prompts[src], t, m.intervention(
                           steerer, chosen_of[(m.name, t)], t, src))[0])
                      for t in others for m in matrix_methods]
    kept = dict(zip((name for name, _, _ in src_cells), cached_cells(parts, src_cells, steps)))
    for src in srcs:
        src_base = kept[f"unsteered-{src}"]
        for t in targets:
            if t == src:
                continue
            brecs = src_base[t]
            gens += [{"method": "unsteered", "source": src, "target": t, **r} for r in brecs]
            for m in matrix_methods:
                st = chosen_of[(m.name, t)]
                recs = kept[f"matrix-{m.name}-{src}-{t}"]
                gens += [{"method": m.name, "source": src, "target": t, "setting": st.label(), **r} for r in recs]
                matrix.append({"method": m.name, "source": src, "target": t, "setting": st.label(), "n": len(recs),
                               **rate_row([recs], t, rates=MATRIX_RATES),
                               "unsteered_strict_rate": sum(_unit(r, "strict_rate", t) for r in brecs) / len(brecs)})
                examples[f"{m.name}:{src}->{t}"] = _examples(recs, 2)
    result = {"model": lm.meta, "source": source, "targets": targets, "methods": [m.name for m in methods],
              "best_method": best, "generation": asdict(steerer.gen), "decoding": dec,
              "native_ratio": NATIVE_RATIO_RULE, "lenient": asdict(steerer.rule),
              "strict": asdict(steerer.strict), "relevance": {**asdict(steerer.relevance), "criterion": RELEVANCE_RULE},
              "k": k_used, "k_rule": "95th percentile of native ppl / median" if k is None else "given",
              "native": native_rows, "language_candidates": steerer.identify.candidates,
              "prompts": {"tune": len(tune_prompts or []), "eval": len(eval_prompts)},
              "grid": _grid_doc(spec, lm.num_layers, methods),
              "rows": rows, "method_table": method_rows, "matrix": matrix, "examples": examples, "details": details,
              "wall_seconds": round(time.time() - started, 1),  # this invocation only
              "compute_seconds": step_seconds(steps)}  # every step when it was computed, across resumes
    return result, gens


def chosen_interventions(steerer: Steerer, methods: list, result: dict) -> dict[str, Intervention]:
    """The intervention of each (method, target) cell's chosen setting, steering from the
    study's source, by file name (``<method>-<source>-<target>.json``, for OUT/interventions)."""
    by_name, source = {m.name: m for m in methods}, result["source"]
    out = {}
    for d in result["details"]:
        m, target = by_name[d["method"]], d["target"]
        chosen = m.setting(d["chosen"])
        out[f"{m.name}-{source}-{target}.json"] = m.intervention(
            steerer, chosen, target, source, {"description": f"steer {source}->{target} with {m.name} ({chosen.label()})",
                                              "method": m.name, "target": target, "source": source,
                                              "setting": asdict(chosen)})
    return out


def trial_score(summ: dict) -> tuple:
    """What the search maximises over a setting's tuning outputs: strict success, then fluent
    outputs in the target language."""
    return summ["strict_rate"], summ["fluent_target_rate"]


def search_flat(trials: list[dict]) -> bool:
    """Whether every setting a cell's search tried scored the same on the tuning prompts (from its
    recorded trials, so cells kept before this was reported get it too)."""
    return flat([trial_score(t) for t in trials])


def _cell(steerer: Steerer, m, target: str, source: str, spec, fixed, tune_prompts, eval_prompts, draws: int,
          seed: int, progress: bool) -> dict:
    """One method on one target: search (or take) the setting, evaluate it on the held-out
    prompts, run its controls. Plain JSON, so that a finished cell is kept for a resumed run."""
    trials, search = [], None
    only = getattr(m, "only_setting", None)  # a method of one setting (prompting): nothing to search
    if spec is not None and only is None:
        grid = list(dict.fromkeys(m.grid(spec, source)))
        bar = tqdm(total=len(grid), desc=f"search {m.name} {target}", leave=False, disable=not progress)

        def score(st):  # the tuning prompts only: the held-out ones never feed back into the choice
            _, summ = steerer.run(tune_prompts, target, m.intervention(steerer, st, target, source), lazy=True)
            trials.append({"setting": asdict(st), "label": st.label(), "extended": len(trials) >= len(grid), **summ})
            bar.update()
            return trial_score(summ)

        found = edge_search(grid, score, replace(spec.bounds, num_layers=steerer.lm.num_layers))
        bar.close()
        chosen = found.best
        search = {"at_grid_edge": found.at_grid_edge, "extension": found.extension(), "stops": found.stops}
    else:
        chosen = only if only is not None else fixed[m.name]
    recs, summ = steerer.run(eval_prompts, target, m.intervention(steerer, chosen, target, source))
    controls = [steerer.run(eval_prompts, target, m.control(steerer, chosen, target, source, seed, d))[0]
                for d in range(draws)]
    return {"trials": trials, "chosen": asdict(chosen), "search": search, "recs": recs, "summary": summ,
            "controls": controls}


def _grid_doc(spec: GridSpec | None, num_layers: int, methods: list) -> dict | None:
    """What the search tried first and how far it could go, as resolved for this model."""
    dm = next((m for m in methods if isinstance(m, DiffMeanMethod)), None)
    doc = {"diffmean_unit": dm.unit()} if dm is not None else {}
    if spec is None:
        return doc or None
    return {**doc, "layer_groups": {g: list(layer_group(g, num_layers)) for g in spec.residual_layers},
            "layer_rule": "a fraction f of the depth is layer round(f x (L - 1)), halves up; an integer is a layer",
            "num_layers": num_layers, "alphas": list(spec.alphas), "rules": {k: list(v) for k, v in spec.rules.items()},
            "bounds": asdict(replace(spec.bounds, num_layers=num_layers))}


def _mean(xs: list) -> float | None:
    """The mean over targets; None where any is None (relevance not judged)."""
    return None if not xs or any(x is None for x in xs) else sum(xs) / len(xs)


def _rule(setting) -> str:
    if not isinstance(setting, SteerSetting):  # residual settings; the prompting baseline's "instruction"
        return getattr(setting, "rule_label", "residual_add")
    return setting.mode if setting.mode == "off" else f"{setting.rule} ({setting.mode})"


def format_ratio(r: dict) -> str:
    """The ratio to the native ceiling and its 95% interval, ``0.52 [0.31-0.80]``; ``-`` where
    it is undefined (native strict rate 0) or was not measured."""
    v, lo, hi = r.get("ratio_to_native"), r.get("ratio_to_native_lo"), r.get("ratio_to_native_hi")
    if v is None or v == "":
        return "-"
    return f"{float(v):.2f}" if lo is None or lo == "" else f"{float(v):.2f} [{float(lo):.2f}-{float(hi):.2f}]"


def format_table(rows: list[dict]) -> list[list[str]]:
    """Rows for a console table: method, target, setting, whether it still sits at a grid edge,
    strict success and lenient success with their 95% intervals, the control's strict
    success, strict success relative to the native ceiling (- where the native rate is 0), the
    relevance rate (- where not judged), the CLaS-style score, median perplexity."""
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731

    def ci(r, k):  # the rate and its 95% interval over prompts: 45% [30-60]
        lo, hi = r.get(f"{k}_lo"), r.get(f"{k}_hi")
        return pct(r.get(k)) if r.get(k) is None or lo is None else f"{pct(r[k])} [{100 * lo:.0f}-{100 * hi:.0f}]"

    edge = lambda r: ("-" if r.get("at_grid_edge") is None else "YES" if r["at_grid_edge"]  # noqa: E731
                      else "flat" if r.get("search_flat") else "no")
    clas = lambda r: "-" if r.get("clas") is None else f"{r['clas']:.2f}"  # noqa: E731
    return [[r["method"], r["target"], r["setting"], edge(r), ci(r, "strict_rate"), ci(r, "fluent_target_rate"),
             ci(r, "control_strict_rate"), format_ratio(r), ci(r, "relevance_rate"), clas(r), f"{r['median_ppl']:.0f}",
             f"{r['mean_distinct']:.2f}"] for r in rows]


def grid_lines(result: dict) -> list[str]:
    """The search grid as resolved for the model, and a warning for each chosen setting that
    still sits at an edge of what was tried."""
    grid = result.get("grid") or {}
    lines = []
    if grid.get("layer_groups"):
        groups = ", ".join(f"{g} -> {ResidualSetting(tuple(ls)).where()}" for g, ls in grid["layer_groups"].items())
        lines.append(f"DiffMean layer groups on {grid['num_layers']} layers: {groups}; "
                     f"alpha {', '.join(f'{a:g}' for a in grid['alphas'])} typical residual norms")
    stops = {(d["method"], d["target"]): d.get("edge", {}).get("stops") for d in result.get("details", [])}
    for r in result["rows"]:
        if r.get("at_grid_edge"):
            lines.append(f"[yellow]warning:[/] {r['method']} -> {r['target']}: {r['setting']} still sits at an edge of "
                         f"the search ({'; '.join(stops.get((r['method'], r['target'])) or [])})")
        elif r.get("search_flat"):
            lines.append(f"[yellow]note:[/] {r['method']} -> {r['target']}: every setting tried scored the same on the "
                         f"tuning prompts, so {r['setting']} is the tie-break (the first, gentlest), not an optimum")
    return lines
