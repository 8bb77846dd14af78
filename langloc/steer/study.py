"""A steering study: for each neuron set (method) and target language, pick or search the
setting on tuning prompts, evaluate it on held-out prompts, and run the random control.

Every rate in ``summary.csv`` has its 95% bootstrap interval over the held-out prompts
(``<rate>_lo``, ``<rate>_hi``). The random control is drawn ``control_draws`` times, each
draw from its own seed (:mod:`langloc.controls`; condition ``random:<method>:<target>``, and
``...:source`` for the source neurons of the off modes); its rates are means over the draws,
their intervals are over prompts (a prompt's value: its mean over the draws), and
``control_fluent_target_rate_min/_max`` is the range over the draws."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from langloc.artefacts import atomic_path, write_csv, write_json
from langloc.controls import check_draws, derive_seed, random_control
from langloc.errors import LanglocError
from langloc.evaluate.bootstrap import mean_ci
from langloc.manifest import make_manifest, stamp
from langloc.steer.judge import summarise
from langloc.steer.steering import SteerSetting, Steerer

RATES = ("fluent_target_rate", "target_rate", "fluent_rate")
COLUMNS = ("method", "target", "setting", "neurons", "n", "fluent_target_rate", "target_rate", "fluent_rate",
           "median_ppl", "mean_distinct", "control_fluent_target_rate", "control_target_rate",
           "control_fluent_rate", "unsteered_target_rate",
           *(f"{r}_{e}" for r in RATES for e in ("lo", "hi")),
           *(f"control_{r}_{e}" for r in RATES for e in ("lo", "hi")),
           "unsteered_target_rate_lo", "unsteered_target_rate_hi",
           "control_draws", "control_fluent_target_rate_min", "control_fluent_target_rate_max")


def _units(records: list[dict], target: str) -> dict[str, list[float]]:
    """Per prompt, 0/1 for each rate (what :func:`summarise` averages)."""
    return {"fluent_target_rate": [float(bool(r["success"])) for r in records],
            "target_rate": [float(r["lang"] == target) for r in records],
            "fluent_rate": [float(bool(r["fluent"])) for r in records]}


def rate_intervals(per_prompt: dict[str, list[float]], seed: int, prefix: str = "") -> dict:
    """``<prefix><rate>_lo/_hi``: 95% bootstrap intervals over prompts (the same resamples for
    every rate of a row)."""
    out = {}
    for rate, values in per_prompt.items():
        lo, hi = mean_ci(values, seed=seed) if values else (None, None)
        out[f"{prefix}{rate}_lo"], out[f"{prefix}{rate}_hi"] = lo, hi
    return out


def check_targets(sets: dict, targets: list[str]) -> None:
    for name, ns in sets.items():
        missing = [t for t in targets if t not in ns.languages]
        if missing:
            raise LanglocError(f"neuron set {name!r} has no neurons for {', '.join(missing)} ({', '.join(ns.languages)})")


def auto_value(ns) -> str:
    """The published value source for a set: expert units force the median response
    (Kojima et al.), LAPE and thresholding sets the mean active value (Tang et al.)."""
    return "median_response" if ns.method == "expert_units" else "mean_active"


def steer_study(steerer: Steerer, sets: dict, targets: list[str], *, source: str | None, eval_prompts: list[str],
                tune_prompts: list[str] | None = None, settings: list[SteerSetting] | None = None,
                setting: SteerSetting | None = None, controls: bool = True, seed: int = 0, out: str | Path | None = None,
                progress: bool = True, control_draws: int = 3) -> dict:
    """Run the study and (with ``out``) write ``steer.json``, ``summary.csv``,
    ``generations.jsonl``, ``interventions/<method>-<target>.json`` and ``steering.png``.

    With ``settings`` (a search grid) the best setting on ``tune_prompts`` is chosen per
    method and target; otherwise ``setting`` is used as it is.
    """
    if (settings is None) == (setting is None):
        raise LanglocError("give either a fixed steering setting or a search grid")
    if settings is not None and not tune_prompts:
        raise LanglocError("the strength search needs tuning prompts")
    draws = check_draws(control_draws)
    started = time.time()
    lm = steerer.lm
    check_targets(sets, targets)
    for ns in sets.values():
        ns.check_model(lm)
    base_recs, _ = steerer.run(eval_prompts, targets[0], None)
    gens = [{"method": "unsteered", "target": None, **r} for r in base_recs]
    unsteered = {t: summarise([{**r, "success": r["fluent"] and r["lang"] == t} for r in base_recs], t)
                 for t in targets}
    rows, details = [], []
    bar = tqdm(total=len(sets) * len(targets), desc="steer", unit="target", disable=not progress)
    for name, ns in sets.items():
        s_layers = ns.layers(source) if source and source in ns.languages else None
        value = auto_value(ns)
        for ti, target in enumerate(targets):
            t_layers = ns.layers(target)
            grid = [replace(s, value=value) if s.value == "auto" else s for s in settings] if settings else None
            if grid is not None and s_layers is None:
                grid = [s for s in grid if s.mode == "on"]
            trials = []
            if grid is not None:
                chosen, trials = steerer.search(tune_prompts, target, t_layers, source, s_layers, grid, progress)
            else:
                chosen = replace(setting, value=value) if setting.value == "auto" else setting
            iv = steerer.intervention(chosen, target, t_layers, source, s_layers,
                                      {"description": f"steer into {target} with {name} neurons ({chosen.label()})",
                                       "method": ns.method, "target": target, "source": source,
                                       "setting": asdict(chosen)})
            recs, summ = steerer.run(eval_prompts, target, iv)
            gens += [{"method": name, "target": target, "setting": chosen.label(), **r} for r in recs]
            control, control_runs = {}, []
            boot = derive_seed(seed, f"bootstrap:{target}")  # the same prompt resamples for every row of a target
            if controls:
                cname = f"random:{name}:{target}"
                for d in range(draws):
                    rt = random_control(t_layers, ns.intermediate_size, seed, cname, d)
                    rs = random_control(s_layers, ns.intermediate_size, seed, f"{cname}:source", d) if s_layers else None
                    civ = steerer.intervention(chosen, target, rt, source, rs, {"description": "random control"})
                    crecs, csumm = steerer.run(eval_prompts, target, civ)
                    control_runs.append((crecs, csumm))
                    gens += [{"method": f"random:{name}", "target": target, "setting": chosen.label(), "draw": d, **r}
                             for r in crecs]
                control = {k: sum(c[1][k] for c in control_runs) / draws for k in RATES}
            base_units = [float(r["lang"] == target) for r in base_recs]
            row = {"method": name, "target": target, "setting": chosen.label(), "neurons": iv.count(),
                   **{k: summ[k] for k in ("n", "fluent_target_rate", "target_rate", "fluent_rate", "median_ppl",
                                           "mean_distinct")},
                   "control_fluent_target_rate": control.get("fluent_target_rate"),
                   "control_target_rate": control.get("target_rate"),
                   "control_fluent_rate": control.get("fluent_rate"),
                   "unsteered_target_rate": unsteered[target]["target_rate"],
                   **rate_intervals(_units(recs, target), boot)}
            if control_runs:
                units = [_units(c[0], target) for c in control_runs]
                row.update(rate_intervals({k: [sum(u[k][i] for u in units) / draws for i in range(len(units[0][k]))]
                                           for k in RATES}, boot, "control_"))
                per_draw = [c[1]["fluent_target_rate"] for c in control_runs]
                row.update(control_draws=draws, control_fluent_target_rate_min=min(per_draw),
                           control_fluent_target_rate_max=max(per_draw))
            else:
                row.update({f"control_{k}_{e}": None for k in RATES for e in ("lo", "hi")})
                row.update(control_draws=None, control_fluent_target_rate_min=None,
                           control_fluent_target_rate_max=None)
            row.update(rate_intervals({"unsteered_target_rate": base_units}, boot))
            rows.append(row)
            details.append({"method": name, "target": target, "chosen": asdict(chosen), "search": trials,
                            "eval": summ, "control": control_runs[0][1] if control_runs else {},
                            "control_draws": [c[1] for c in control_runs]})
            if out is not None:
                iv.save(Path(out) / "interventions" / f"{name}-{target}.json")
            bar.set_postfix_str(f"{name} {target}: {100 * summ['fluent_target_rate']:.0f}% fluent in target")
            bar.update()
    bar.close()
    result = {"model": lm.meta, "source": source, "targets": targets, "methods": list(sets),
              "generation": asdict(steerer.gen), "fluency": asdict(steerer.rule),
              "language_candidates": steerer.identify.candidates,
              "prompts": {"tune": len(tune_prompts or []), "eval": len(eval_prompts)},
              "rows": rows, "details": details}
    config = {"source": source, "targets": targets, "controls": controls, "search": settings is not None,
              "setting": asdict(setting) if setting is not None else None,
              "grid": [asdict(s) for s in settings] if settings is not None else None,
              "generation": result["generation"], "fluency": result["fluency"],
              "language_candidates": result["language_candidates"], "prompts": result["prompts"],
              "neuron_sets": {name: {"method": ns.method, "params": ns.params} for name, ns in sets.items()}}
    result = stamp(result, make_manifest("langloc.steer", model=lm.meta, config=config,
                                         seeds={"controls": seed, "generation": steerer.gen.seed}, started=started))
    if out is not None:
        write_outputs(Path(out), result, gens)
    return result


def write_outputs(out: Path, result: dict, gens: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "steer.json", result)
    write_csv(out / "summary.csv", result["rows"], COLUMNS, float_digits=4)
    with atomic_path(out / "generations.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for g in gens:
                f.write(json.dumps(g, ensure_ascii=False) + "\n")
    from langloc.report.plots import plot_steering

    plot_steering(result["rows"], out / "steering.png")


def format_table(rows: list[dict]) -> list[list[str]]:
    """Rows for a console table: method, target, setting, success, control, fluency (success
    and control with their 95% intervals over prompts)."""
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731

    def ci(r, k):  # the rate and its 95% interval over prompts: 45% [30-60]
        lo, hi = r.get(f"{k}_lo"), r.get(f"{k}_hi")
        return pct(r[k]) if r[k] is None or lo is None else f"{pct(r[k])} [{100 * lo:.0f}-{100 * hi:.0f}]"

    return [[r["method"], r["target"], r["setting"], ci(r, "fluent_target_rate"), pct(r["target_rate"]),
             ci(r, "control_fluent_target_rate"), pct(r["fluent_rate"]), f"{r['median_ppl']:.0f}",
             f"{r['mean_distinct']:.2f}"] for r in rows]
