"""The sections of the HTML report: one small function per manifest kind.

``SECTIONS`` maps a kind (a key of :data:`langloc.manifest.KINDS`) to a function that turns one
output of that kind into the body of its section. A study adds its section with
``@section("langloc.my_kind", "Title")``. An output of a kind without one gets the generic
section: its settings, the tables of its CSV files and the plots it wrote.

Every figure carries the command that reproduces it (the manifest's ``command``).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from langloc import kinds
from langloc.manifest import FIELDS, KINDS
from langloc.report import html as h
from langloc.report.discover import Output, discover


@dataclass
class Section:
    id: str
    title: str
    kind: str
    body: str
    path: str = ""
    note: str | None = None

    def html(self) -> str:
        kind = f"<span class=kind>{h.esc(self.kind)}</span>" if self.kind.startswith("langloc.") else ""
        path = f"<p class=path>{h.esc(self.path)}</p>" if self.path else ""
        note = f"<p class=note>{h.esc(self.note)}</p>" if self.note else ""
        return (f'<section id="{h.esc(self.id)}" data-kind="{h.esc(self.kind)}">'
                f"<h2>{h.esc(self.title)}{kind}</h2>{path}{note}{self.body}</section>")


Render = Callable[[Output, list[Output]], str]
SECTIONS: dict[str, tuple[str, Render]] = {}


def section(kind: str, title: str):
    """Register the section of ``kind``: ``fn(output, all_outputs) -> body HTML``."""
    def register(fn: Render) -> Render:
        SECTIONS[kind] = (title, fn)
        return fn
    return register


# Outputs shown inside the section of another output in the same folder or above it.
PART_OF = {kinds.INTERVENTION: kinds.STEER, kinds.TRAIN: kinds.FORGETTING,
           kinds.ADAPTER: kinds.TRANSFER,
           kinds.IMPORTANCE: kinds.REGIONS_SUMMARY, kinds.REGIONS: kinds.REGIONS_SUMMARY}

# Section order: the order of a typical analysis; kinds not listed come last.
ORDER = [kinds.RUN, kinds.NEURON_SET, kinds.COMPARE, kinds.ABLATION, kinds.VALIDATION, kinds.STEER,
         kinds.IMPORTANCE, kinds.REGIONS_SUMMARY, kinds.REGION_ABLATION, kinds.PERTURB,
         kinds.FORGETTING, kinds.TRAIN, kinds.TRANSFER, kinds.SHARE, kinds.HARNESS]


# ---------------------------------------------------------------------------------------------
# Helpers


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def made_by(o: Output) -> str:
    return KINDS[o.kind].made_by if o.kind in KINDS else o.kind


def fig(o: Output, image: str, caption: str) -> str:
    return h.figure(image, caption, o.command, made_by(o))


def own_fields(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in FIELDS and k != "outputs"}


def scalars(d: dict) -> dict:
    """The entries of ``d`` that read well in one cell (numbers, strings, short lists)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, list) and len(v) <= 30 and all(isinstance(x, (str, int, float)) for x in v):
            out[k] = v
        elif isinstance(v, dict) and len(v) <= 12 and all(isinstance(x, (str, int, float, bool)) or x is None
                                                        for x in v.values()):
            out[k] = v
    return out


def settings(o: Output) -> str:
    """The manifest's config, seeds, split, time and machine class, folded away."""
    d = o.doc
    machine = d.get("machine") or {}
    items = {**scalars(d.get("config") or {}), "seeds": d.get("seeds") or None, "split": d.get("split"),
             "created": d.get("created"),
             "wall time (s)": d.get("wall_seconds"),
             "compute time of all steps, across resumes (s)": d.get("compute_seconds"),
             "machine": ", ".join(str(machine[k]) for k in ("cpu_class", "cpu", "gpu") if machine.get(k)) or None,
             "langloc": d.get("langloc_version")}
    body = h.facts(items)
    return h.details("settings", body) if body else ""


def plots_listed(o: Output, skip: set[str] = frozenset()) -> list[Path]:
    """The PNGs an output wrote: those its manifest lists, else those in its folder and plots/."""
    listed = o.listed(".png")
    if not listed and "outputs" not in o.doc:
        listed = sorted(o.folder.glob("*.png")) + sorted((o.folder / "plots").glob("*.png"))
    return [p for p in listed if p.name not in skip]


def csvs_listed(o: Output) -> list[Path]:
    listed = o.listed(".csv")
    if not listed and "outputs" not in o.doc:
        listed = sorted(o.folder.glob("*.csv"))
    return listed


def pct_ci(row: dict, key: str) -> str:
    v, lo, hi = (h.number(row.get(k)) for k in (key, f"{key}_lo", f"{key}_hi"))
    if v is None or math.isnan(v):
        return "–"
    ci = f" [{100 * lo:.0f}–{100 * hi:.0f}]" if lo is not None and hi is not None and not math.isnan(lo) else ""
    return f"{100 * v:.0f}%{ci}"


def ratio_ci(row: dict) -> str:
    from langloc.evaluate.intervals import no_interval

    v, lo, hi = (h.number(row.get(k)) for k in ("ratio", "ratio_lo", "ratio_hi"))
    if v is None:
        return "–"
    if lo is not None and hi is not None and not math.isnan(lo):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    units = h.number(row.get("windows"))
    return f"{v:.3f} ({no_interval(int(units))})" if units else f"{v:.3f}"


# ---------------------------------------------------------------------------------------------
# The overview: models, corpora, outputs


def overview(outputs: list[Output], paths: list[str]) -> Section:
    models, corpora = {}, {}
    for o in outputs:
        m = o.doc.get("model")
        if isinstance(m, dict) and m.get("name"):
            key = (m.get("name"), m.get("weights_fingerprint"))
            models.setdefault(key, {"model": m.get("name"), "source": m.get("source"), "type": m.get("model_type"),
                                    "layers": m.get("num_layers"), "neurons per layer": m.get("intermediate_size"),
                                    "dtype": m.get("dtype"), "weights fingerprint": m.get("weights_fingerprint"),
                                    "tokenizer fingerprint": m.get("tokenizer_fingerprint")})
        c = o.doc.get("corpus")
        if isinstance(c, dict) and c.get("name"):
            corpora.setdefault((c.get("name"), c.get("seed")), {
                "corpus": c.get("name"), "seed": c.get("seed"),
                "held-out split": c.get("eval_split") or c.get("eval"),
                "languages available": len(c["translations"]) if isinstance(c.get("translations"), dict) else None})
    # An output that is part of another (a steering study's interventions) is one count on its
    # parent's row, not a row of its own: the inventory lists studies, not their pieces.
    parent = {id(o): _parent(o, outputs) for o in outputs}
    pieces = {}  # id(parent) -> Counter of its pieces' kinds
    for o in outputs:
        if parent[id(o)] is not None:
            pieces.setdefault(id(parent[id(o)]), Counter())[o.kind] += 1

    def contains(o) -> str | None:
        counts = pieces.get(id(o), {})
        return ", ".join(f"{n} {KINDS[k].what}{'s' if n > 1 else ''}" for k, n in counts.items()) or None

    rows = [{"output": KINDS[o.kind].what if o.kind in KINDS else o.kind, "kind": o.kind,
             "file": str(o.path), "created": o.doc.get("created"), "wall s": o.doc.get("wall_seconds"),
             "with": contains(o), "note": o.note} for o in outputs if parent[id(o)] is None]
    machines = sorted({str((o.doc.get("machine") or {}).get("cpu_class")) for o in outputs
                       if (o.doc.get("machine") or {}).get("cpu_class")})
    body = ("<h3>Model</h3>" + h.table(list(models.values()))
            + ("<h3>Corpus</h3>" + h.table(list(corpora.values())) if corpora else "")
            + f"<h3>Outputs found ({len(rows)})</h3>" + h.table(rows)
            + (f"<p class=muted>machine (CPU class): {h.esc(', '.join(machines))}</p>" if machines else ""))
    return Section("overview", "Model and corpus", "overview", body, path=", ".join(paths))


# ---------------------------------------------------------------------------------------------
# One section per kind


@section(kinds.RUN, "Statistics")
def run_section(o: Output, _all) -> str:
    d = o.doc
    langs = d.get("languages") or []
    stats = [lang for lang in langs if (o.folder / "stats" / f"{lang}.safetensors").is_file()]
    items = {"languages": langs, "tokens per language": d.get("tokens"), "window": d.get("window"),
             "seed": d.get("seed"), "statistics files": f"{len(stats)} of {len(langs)} in stats/",
             "segment responses": "yes" if (o.folder / "responses").is_dir() else None}
    return h.facts(items) + h.command_line(o.command, made_by(o)) + settings(o)


def _neuron_set(doc: dict):
    import torch

    from langloc.identify.neuron_set import NeuronSet

    neurons = {lang: [torch.tensor(i, dtype=torch.long) for i in layers] for lang, layers in doc["neurons"].items()}
    return NeuronSet(neurons, doc["num_layers"], doc["intermediate_size"], doc.get("method", "?"), doc.get("params", {}))


@section(kinds.NEURON_SET, "Neuron set")
def neuron_set_section(o: Output, _all) -> str:
    from langloc.plotting import plot_neurons_per_layer, plot_overlap

    ns = _neuron_set(o.doc)
    counts = ns.per_layer_counts().tolist()
    name = (o.doc.get("model") or {}).get("name", "")
    rows = [{"language": lang, "neurons": sum(c), **{f"L{i}": n for i, n in enumerate(c)}}
            for lang, c in zip(ns.languages, counts)]
    params = h.facts({"method": ns.method, **scalars(ns.params)})
    return (params + f"<p>{ns.unique_count()} distinct neurons over {len(ns.languages)} languages "
            f"({ns.num_layers} layers × {ns.intermediate_size} neurons).</p>"
            + fig(o, h.svg(plot_neurons_per_layer, ns, model_name=name), "Language-specific neurons per layer.")
            + fig(o, h.svg(plot_overlap, ns), "Shared neurons between languages' sets (diagonal: set size).")
            + h.details("neurons per language and layer", h.table(rows)) + settings(o))


def _ablation_rows(path: Path):
    from langloc.evaluate.ablation import AblationRow

    def num(v):
        return float(v) if v not in ("", None) else math.nan

    rows = []
    for r in read_csv(path):
        rows.append(AblationRow(r["deactivated"], r["evaluated"], float(r["base_ppl"]), float(r["ppl"]),
                                num(r.get("ratio_lo")), num(r.get("ratio_hi")),
                                float(r["ratio_min"]) if r.get("ratio_min") else None,
                                float(r["ratio_max"]) if r.get("ratio_max") else None,
                                int(r["draws"]) if r.get("draws") else None,
                                int(r["windows"]) if r.get("windows") else None))
    return rows


def _ablation_body(o: Output, csv_path: Path, ylabel: str, title: str, caption: str) -> str:
    from langloc.plotting import plot_ablation

    rows = _ablation_rows(csv_path)
    if not rows:
        return "<p class=muted>(empty table)</p>"
    ratio = {(r.deactivated, r.evaluated): r for r in rows}
    evald = list(dict.fromkeys(r.evaluated for r in rows))
    # Per language: its own set on its own text against the same-size random control there.
    own = []
    for lang in evald:
        mine, ctrl = ratio.get((lang, lang)), ratio.get((f"random:{lang}", lang))
        if mine is None:
            continue
        others = [ratio[(lang, e)] for e in evald if e != lang and (lang, e) in ratio]
        worst = max(others, key=lambda r: r.ratio, default=None)
        own.append({"language": lang, "own set on own text": ratio_ci(vars(mine) | {"ratio": mine.ratio}),
                    "random control on own text": ratio_ci(vars(ctrl) | {"ratio": ctrl.ratio}) if ctrl else None,
                    "largest on another language": f"{worst.ratio:.3f} ({worst.evaluated})" if worst else None,
                    "hurts own language most": all(mine.ratio > r.ratio for r in others) if others else None})
    full = [{"zeroed": r.deactivated, "evaluated": r.evaluated, "base ppl": r.base_ppl, "ppl": r.ppl,
             "ratio": r.ratio, "95% lo": r.ratio_lo, "95% hi": r.ratio_hi,
             "control min": r.ratio_min, "control max": r.ratio_max, "draws": r.draws, "windows": r.windows} for r in rows]
    body = fig(o, h.svg(plot_ablation, rows, ylabel=ylabel, title=title), caption)
    if own:
        body += ("<h3>Each language's own set against its random control</h3>"
                 "<p class=muted>perplexity ratio (zeroed / base) with its 95% interval over held-out windows</p>"
                 + h.table(own))
    return body + h.details(f"all {len(full)} rows of {csv_path.name}", h.table(full)) + settings(o)


@section(kinds.ABLATION, "Ablation")
def ablation_section(o: Output, _all) -> str:
    csv_path = o.folder / "ablation.csv"
    return _ablation_body(o, csv_path, "neurons zeroed",
                          "Deactivating language-specific neurons (random:* = same-size random control)",
                          "Perplexity ratio after zeroing each language's neurons (rows) on each language's "
                          "held-out text (columns); random:* rows are same-size random controls.")


@section(kinds.REGION_ABLATION, "Region ablation")
def region_ablation_section(o: Output, _all) -> str:
    return _ablation_body(o, o.folder / "region_ablation.csv", "region zeroed", "Zeroing parameter regions",
                          "Perplexity ratio after zeroing each region (rows) on each language's held-out text.")


def _read_jsonl(path: Path, limit: int = 100_000) -> list[dict]:
    out = []
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= limit:
                    break
                if line.strip():
                    out.append(json.loads(line))
    return out


def _generation(r: dict | None) -> str:
    if r is None:
        return "<td>–</td>"
    if "strict" in r:  # the strict judge: language over most chunks, script, perplexity vs native
        ok = r.get("strict")
        why = "passes the strict judge" if ok else "fails: " + ", ".join(r.get("strict_fails") or [])
    else:  # outputs of the lenient judge only
        ok = r.get("success")
        why = "fluent" if r.get("fluent") else "not fluent"
    mark = "<span class=ok>✓</span>" if ok else "<span class=bad>✗</span>"
    return (f"<td>{mark} <b>{h.esc(r.get('lang', '?'))}</b> <span class=muted>({h.esc(why)})</span><br>"
            f"{h.esc(r.get('text', ''))}</td>")


def _edge(r: dict) -> str:
    """Whether a chosen setting still sits at an edge of the search, and how far it went."""
    edge = r.get("at_grid_edge")
    if edge in (None, ""):  # a fixed setting, or a study made before the search could extend
        return "–"
    ext = r.get("grid_extension") or "first grid only"
    if str(edge).lower() != "true" and str(r.get("search_flat")).lower() == "true":
        return f"flat: every setting tried scored the same, the first taken ({ext})"
    return f"{'YES' if str(edge).lower() == 'true' else 'no'} ({ext})"


def _grid(grid: dict | None) -> str | None:
    if not grid or not grid.get("layer_groups"):
        return None
    from langloc.steer.steering import ResidualSetting

    groups = ", ".join(f"{g} → {ResidualSetting(tuple(ls)).where()}" for g, ls in grid["layer_groups"].items())
    return (f"layers {groups} of {grid['num_layers']}; alpha {', '.join(f'{a:g}' for a in grid['alphas'])} "
            "typical residual norms; extended past an edge within its bounds")


def _relevance(d: dict) -> str | None:
    rel = d.get("relevance")
    if not isinstance(rel, dict):
        return None
    if not rel.get("on"):
        return "off (not judged: the strict rate has no relevance criterion, no CLaS-style score)"
    return (f"PMI > 0 under the unsteered model, against {rel.get('others')} other prompts; "
            "CLaS-style score = harmonic mean of the in-target and relevant shares")


def _decoding(d: dict) -> str | None:
    """The decoding in words, and for the publisher's decoding where its settings come from."""
    from langloc.steer.steering import describe_decoding

    if not isinstance(d.get("generation"), dict):
        return None
    words = describe_decoding(d["generation"])
    dec = d.get("decoding") or {}
    return f"the publisher's ({words}; {dec.get('source')})" if dec.get("name") == "publisher" else words


def _native_ratio(r: dict, targets=None) -> str:
    """Strict success relative to the native ceiling with its 95% interval; for a method's
    average, over how many targets where not all; a dash and why where it is undefined."""
    v, lo, hi = (h.number(r.get(k)) for k in ("ratio_to_native", "ratio_to_native_lo", "ratio_to_native_hi"))
    if v is None or math.isnan(v):
        return "– (native strict rate 0)" if r.get("ratio_to_native_note") else "–"
    text = f"{v:.2f}" + (f" [{lo:.2f}–{hi:.2f}]" if lo is not None and hi is not None and not math.isnan(lo) else "")
    n = h.number(r.get("ratio_to_native_targets"))
    if targets is not None and n is not None and h.number(targets) is not None and n != h.number(targets):
        text += f" ({n:.0f} of {h.number(targets):.0f} targets)"
    return text


@section(kinds.STEER, "Steering")
def steer_section(o: Output, _all, examples: int = 3) -> str:
    from langloc.plotting import plot_steering

    d = o.doc
    rows = d.get("rows") or []
    cfg = d.get("config") or {}
    strict = bool(rows) and "strict_rate" in rows[0]
    items = {"source language": d.get("source"), "targets": d.get("targets"), "methods": d.get("methods"),
             "best method": d.get("best_method"), "strict judge's k": d.get("k"), "k's rule": d.get("k_rule"),
             "prompts (tuning, held-out)": d.get("prompts"), "relevance criterion": _relevance(d),
             "decoding": _decoding(d),
             "relative to the native ceiling": d.get("native_ratio"),
             "search grid (resolved for this model)": _grid(d.get("grid")),
             "setting": (f"fixed: {', '.join(cfg['fixed'])}" if cfg.get("fixed")
                         else "searched on the tuning prompts" if cfg.get("search", True) else "fixed")}
    body = h.facts({k: v for k, v in items.items() if v is not None})
    if rows:
        what = ("passes the strict judge (target language in most chunks, target script, perplexity at most k × "
                "the median of the model's own native continuations, relevant to its prompt where relevance is "
                "judged, no loop)" if strict
                else "is fluent and in the target language")
        body += fig(o, h.svg(plot_steering, rows), f"Share of held-out prompts whose continuation {what}, "
                    "steered (solid) and with the method's random control (hatched).")
        methods = d.get("method_table") or read_csv(o.folder / "methods.csv")
        if methods:
            body += "<h3>Methods (averaged over targets)</h3>" + h.table([{
                "method": m.get("method"), "targets": m.get("targets"), "strict success": pct_ci(m, "strict_rate"),
                "lenient (fluent, in target)": pct_ci(m, "fluent_target_rate"),
                "relative to native": _native_ratio(m, m.get("targets")),
                "control": pct_ci(m, "control_strict_rate"), "worst control cell": m.get("control_strict_rate_max_cell"),
                "relevant": pct_ci(m, "relevance_rate"), "control relevant": pct_ci(m, "control_relevance_rate"),
                "CLaS-style score": h.fmt(h.number(m.get("clas"))),
                "rule chosen": m.get("rules_chosen")} for m in methods])
            if any(h.number(m.get("ratio_to_native")) is not None for m in methods):
                from langloc.plotting import plot_native_ratio, run_label

                body += fig(o, h.svg(plot_native_ratio, {run_label(d): methods}),
                            "Each method's strict success relative to the native ceiling, averaged over the targets "
                            "where the native rate is above 0, with its 95% interval; 1 is the native ceiling.")
        key = "strict_rate" if strict else "fluent_target_rate"
        body += ("<h3>Per target</h3><p class=muted>rates over held-out prompts with 95% intervals</p>" + h.table([{
            "method": r["method"], "target": r["target"], "setting": r.get("setting"),
            "at grid edge": _edge(r), "neurons": r.get("neurons"), "success": pct_ci(r, key), "lenient": pct_ci(r, "fluent_target_rate") if strict else "–",
            "random control": pct_ci(r, f"control_{key}"),
            "native (unsteered, native prompts)": pct_ci(r, "native_strict_rate"),
            "relative to native": _native_ratio(r), "in target (any fluency)": pct_ci(r, "target_rate"),
            "relevant": pct_ci(r, "relevance_rate"), "CLaS-style score": h.fmt(h.number(r.get("clas"))),
            "unsteered": pct_ci(r, f"unsteered_{key}") if f"unsteered_{key}_lo" in r
            else h.fmt(h.number(r.get(f"unsteered_{key}"))),
            "median ppl": r.get("median_ppl")} for r in rows]))
        matrix = read_csv(o.folder / "matrix.csv")
        if matrix:
            body += "<h3>Source × target</h3>" + h.table([{
                "method": m.get("method"), "source": m.get("source"), "target": m.get("target"),
                "strict success": pct_ci(m, "strict_rate"), "lenient": pct_ci(m, "fluent_target_rate"),
                "relevant": pct_ci(m, "relevance_rate"), "unsteered": m.get("unsteered_strict_rate")} for m in matrix])
    gens = [g for g in _read_jsonl(o.folder / "generations.jsonl") if g.get("source", d.get("source")) == d.get("source")]
    if gens:
        unsteered = {(g["prompt"], g.get("target")): g for g in gens if g.get("method") == "unsteered"}
        parts = []
        for r in rows:
            mine = [g for g in gens if g.get("method") == r["method"] and g.get("target") == r["target"]][:examples]
            ctrl = {g["prompt"]: g for g in gens if g.get("method") == f"random:{r['method']}"
                    and g.get("target") == r["target"] and g.get("draw", 0) == 0}
            trs = "".join(f"<tr><td>{h.esc(g['prompt'])}</td>{_generation(g)}{_generation(ctrl.get(g['prompt']))}"
                          f"{_generation(unsteered.get((g['prompt'], g.get('target'))) or unsteered.get((g['prompt'], None)))}</tr>"
                          for g in mine)
            parts.append(f"<h3>{h.esc(r['method'])} → {h.esc(r['target'])} <span class=muted>({h.esc(r.get('setting', ''))})</span></h3>"
                         "<div class=scroll><table class=gen><thead><tr><th>prompt</th><th>steered</th>"
                         "<th>random control</th><th>unsteered</th></tr></thead>"
                         f"<tbody>{trs}</tbody></table></div>")
        body += (f"<h3>Example outputs (first {examples} held-out prompts per cell)</h3>"
                 "<p class=muted>✓: passes the judge; the language shown is py3langid's label of the whole "
                 "output</p>" + "".join(parts))
    return body + settings(o)


@section(kinds.REGIONS_SUMMARY, "Parameter regions")
def regions_section(o: Output, outputs: list[Output]) -> str:
    d = o.doc
    info = next((x for x in outputs if x.kind == kinds.IMPORTANCE and x.folder == o.folder), None)
    items = {"languages": d.get("languages"), "rate": d.get("rate"),
             "importance tokens per language": ((info.doc.get("config") or {}).get("tokens") if info else None),
             "dimensions both dense and massive": d.get("overlap") if d.get("overlap") else "none",
             "median max |activation|": d.get("median_abs_activation")}
    sizes = d.get("sizes") or {}
    size_rows = [{"region": k, "entries": v} for k, v in sizes.items()] if isinstance(sizes, dict) else []
    body = h.facts(items)
    for p in [o.folder / "plots" / "regions.png"]:  # the folder's other plots belong to other studies
        if p.is_file():
            body += fig(o, h.png(p, "where the Top region sits"), "Where the Top region sits: its entries per hidden "
                        "dimension against the residual stream's largest activations, and per layer and matrix the "
                        "share on its densest dimensions.")
    body += ("<h3>Densest hidden dimensions of the Top region</h3>" + h.table(d.get("densest_dimensions") or [])
             + "<h3>Dimensions with the largest residual activations</h3>" + h.table(d.get("massive_activation_dimensions") or []))
    dims = o.folder / "dimensions.csv"
    if dims.is_file():
        body += h.details("dimensions.csv (first 30 by Top-region entries)", h.table(read_csv(dims), limit=30))
    if size_rows:
        body += h.details("region sizes", h.table(size_rows))
    if info:
        body += h.details("importance scores: " + (info.command or ""), h.facts(scalars(info.doc.get("config") or {})))
    return body + settings(o)


def _ci(row: dict, key: str) -> str:
    """``×v [lo, hi]`` from a validation row's ``key``, ``key``-less ``_lo``/``_hi`` columns."""
    base = key.removesuffix("_ratio")
    v, lo, hi = (h.number(row.get(k)) for k in (key, f"{base}_lo", f"{base}_hi"))
    if v is None or math.isnan(v):
        return "–"
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and not math.isnan(lo) else ""
    return f"×{v:.2f}{ci}"


def _draws(row: dict, key: str) -> str:
    v, a, b = (h.number(row.get(f"{key}_{k}")) for k in ("ratio", "min", "max"))
    if v is None or math.isnan(v):
        return "–"
    return f"×{v:.2f} ({a:.2f}–{b:.2f}, {row.get(f'{key}_draws', '?')} draws)"


@section(kinds.VALIDATION, "Validation: are the neurons real?")
def validation_section(o: Output, _all) -> str:
    """One verdict per language in words, then the figures behind it (docs/validate.md)."""
    rows = read_csv(o.folder / "validation.csv")
    body = "<ul>" + "".join(f"<li>{h.esc(r.get('verdict', ''))}</li>" for r in rows) + "</ul>"
    yes = lambda v: "yes" if str(v) == "True" else "no"  # noqa: E731
    table_rows = [{
        "lang": r["language"],
        "set (excl./shared)": f"{r['set_size']} ({r['exclusive_size']}/{r['shared_size']})",
        "shard Jaccard": h.number(r.get("shard_jaccard")),
        "stable core": h.number(r.get("stable_core")),
        "own": _ci(r, "own_ratio"),
        "largest other": f"{_ci(r, 'other_ratio')} {r.get('other_language', '')}",
        "selective": yes(r.get("selective")),
        "matched control": _draws(r, "matched"),
        "random control": _draws(r, "random"),
        "2nd domain own": _ci(r, "domain_own_ratio"),
        "2nd domain other": f"{_ci(r, 'domain_other_ratio')} {r.get('domain_other_language', '')}",
        "holds there": yes(r.get("domain_selective")) if r.get("domain_own_ratio") else "–",
        "spill-over from": f"{r.get('spill_from', '')} (onto {r.get('spill_language', '')})",
    } for r in rows]
    body += h.table(table_rows, caption="Ratios are perplexity ratios (zeroed / base) with 95% "
                                        "intervals over held-out windows; controls: mean over draws (range).")
    for p in plots_listed(o, skip={"budget_curve.png"}):
        body += fig(o, h.png(p, p.stem), p.name)
    body += _budget_curve(o)
    for p in csvs_listed(o):
        if p.name not in ("validation.csv", "budget_curve.csv"):
            sub = read_csv(p)
            body += h.details(f"{p.name} ({len(sub)} rows)", h.table(sub, limit=200))
    return body + settings(o)


def _budget_curve(o: Output) -> str:
    """validate --budget-curve: the sentence per language, the plot and the curve's table."""
    path = o.folder / "budget_curve.csv"
    if path not in csvs_listed(o):
        return ""
    rows = read_csv(path)
    body = ("<h3>The budget curve: how many statistics tokens does the set need?</h3><p>The set found again on "
            "the first k of the K shards of the statistics (prefix sums of the shards' counters), with the validated "
            "set's own settings, compared with the full set (docs/validate.md).</p><ul>"
            + "".join(f"<li>{h.esc(s)}</li>" for s in o.doc.get("budget_curve") or []) + "</ul>")
    for p in plots_listed(o):
        if p.name == "budget_curve.png":
            body += fig(o, h.png(p, p.stem), "Per language against the prefix's statistics tokens: Jaccard with "
                        "the full set, share of the stable core held, own-language ratio with its 95% interval.")
    table = [{"lang": r["language"], "k/K": f"{r['k']}/{r['shards']}", "tokens": r["tokens"],
              "set (full)": f"{r['set_size']} ({r['full_size']})", "Jaccard": h.number(r.get("jaccard")),
              "share of full set": h.number(r.get("full_share")), "share of stable core": h.number(r.get("core_share")),
              "own": _ci(r, "own_ratio")} for r in rows]
    return body + h.details(f"budget_curve.csv ({len(rows)} rows)", h.table(table, limit=400))


def generic(o: Output, _all) -> str:
    """Any output without a section of its own: its settings, its tables and its plots."""
    body = h.facts(scalars(own_fields(o.doc)))
    # A study's summary first; long tables folded away.
    for p in sorted(csvs_listed(o), key=lambda p: p.name != "summary.csv"):
        rows = read_csv(p)
        tbl = h.table(rows, limit=200)
        body += (f"<h3>{h.esc(p.name)}</h3>{tbl}" if len(rows) <= 30
                 else f"<h3>{h.esc(p.name)}</h3>" + h.details(f"{len(rows)} rows", tbl))
    plots = plots_listed(o)
    for p in plots:
        body += fig(o, h.png(p, p.stem), p.name)
    if not plots:  # the figures say it otherwise
        body += h.command_line(o.command, made_by(o))
    return body + settings(o)


# ---------------------------------------------------------------------------------------------
# The whole report


def _slug(kind: str) -> str:
    return kind.removeprefix("langloc.").replace("_", "-").replace(".", "-")


def _parent(o: Output, outputs: list[Output]) -> Output | None:
    """The output ``o`` is part of (:data:`PART_OF`): the nearest one of that kind in its folder
    or above it; None if it stands on its own."""
    kind = PART_OF.get(o.kind)
    mine = [x for x in outputs if x.kind == kind and o.folder.is_relative_to(x.folder)] if kind else []
    return min(mine, key=lambda x: len(o.folder.relative_to(x.folder).parts)) if mine else None


def sections_for(outputs: list[Output]) -> list[Section]:
    order = {k: i for i, k in enumerate(ORDER)}
    shown = [o for o in outputs if _parent(o, outputs) is None]
    shown.sort(key=lambda o: (order.get(o.kind, len(order)), str(o.path)))
    out, used = [], {}
    for o in shown:
        title, fn = SECTIONS.get(o.kind, (KINDS[o.kind].what.capitalize() if o.kind in KINDS else o.kind, generic))
        if o.kind == kinds.NEURON_SET:
            title = f"{title}: {o.doc.get('method', o.path.stem)}"
        slug = _slug(o.kind)
        used[slug] = used.get(slug, 0) + 1
        sid = slug if used[slug] == 1 else f"{slug}-{used[slug]}"
        out.append(Section(sid, title, o.kind, fn(o, outputs), path=str(o.path), note=o.note))
    return out


def build(paths: list[str | Path], title: str | None = None) -> str:
    """The report's HTML for every output under ``paths``."""
    from langloc.errors import LanglocError

    paths = [str(p) for p in paths]
    h.reset_ids()  # the same folders give the same page
    outputs = discover(paths)
    if not outputs:
        raise LanglocError(f"no langloc outputs under {', '.join(paths)} (no JSON file with a langloc manifest); "
                           "give a run folder or a study's output folder")
    sections = [overview(outputs, paths), *sections_for(outputs)]
    models = sorted({(o.doc.get("model") or {}).get("name") for o in outputs if isinstance(o.doc.get("model"), dict)} - {None})
    title = title or f"langloc report: {', '.join(Path(p).name or p for p in paths)}"
    sub = [f"model: {', '.join(models)}" if models else "",
           f"{len(outputs)} outputs; " + ", ".join(s.title for s in sections[1:])]
    return h.page(title, [s for s in sub if s], sections)


def write_report(paths: list[str | Path], out: str | Path, title: str | None = None) -> Path:
    """Find every output under ``paths`` and write the report to ``out`` (atomically)."""
    from langloc.artefacts import atomic_path

    html_text = build(paths, title=title)
    out = Path(out)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(html_text, encoding="utf-8")
    return out
