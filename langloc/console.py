"""The console tables every command prints (rich), from a step's or a study's results.

Each function returns the things to print, in order (tables and lines of text); the CLI
(:mod:`langloc.cli`, their only user) only prints them. They read the studies' formatting
helpers (:mod:`langloc.steer.evaluation`), so they sit with the CLI, above the studies, not in
:mod:`langloc.report`.
"""

from __future__ import annotations

from rich import box
from rich.table import Column, Table

from langloc.plotting import format_ratio as _ratio

NO_EFFECT = "~"  # printed after a ratio whose 95% interval includes 1


def collect(stats) -> list:
    t = Table("language", "tokens", "mean P(active)")
    p = stats.activation_probability()
    for k, lang in enumerate(stats.languages):
        t.add_row(lang, str(int(stats.n[k])), f"{p[k].mean():.3f}")
    return [t]


def corpus_notes(corpus, languages: list[str], split: str = "stats") -> list:
    """Per language: what the language-ID filter dropped (if one ran) and a warning for text
    skipped as not UTF-8 or mostly dropped by the filter."""
    lines = []
    for lang in languages:
        r = corpus.report(lang, split)
        if r is not None:
            tokens = (f", {r['dropped_tokens']} of {r['tokens']} tokens ({r['dropped_token_share']:.2%})"
                      if "tokens" in r else "")
            to = ", ".join(f"{k} {v['documents']}" for k, v in r["dropped_to"].items()) or "-"
            lines.append(f"language-ID filter, {lang} ({split}): dropped {r['dropped_documents']} of {r['documents']} "
                         f"documents ({r['dropped_document_share']:.2%}){tokens}; identified as: {to}")
        note = corpus.skip_note(lang, split)
        if note:
            lines.append(f"[yellow]warning:[/] {lang}: {note[2:]}")
    return lines


def identify(ns) -> list:
    t = Table("language", "neurons", "per layer")
    for lang, row in zip(ns.languages, ns.per_layer_counts().tolist()):
        t.add_row(lang, str(sum(row)), " ".join(map(str, row)))
    return [t]


def compare(rows: list[dict]) -> list:
    t = Table("a", "b", "language", "size a", "size b", "shared", "Jaccard", box=box.SIMPLE_HEAD,
              title="all layers together (per-layer rows in the CSV)")
    for r in rows:
        if r["layer"] == "all":
            t.add_row(r["a"], r["b"], r["language"], str(r["size_a"]), str(r["size_b"]), str(r["shared"]),
                      "-" if r["jaccard"] is None else f"{r['jaccard']:.3f}")
    return [t]


def steer(result: dict) -> list:
    from langloc.steer.steering import describe_decoding
    from langloc.steer.evaluation import format_ratio, format_table, grid_lines

    decoding = describe_decoding(result["generation"])
    if (result.get("decoding") or {}).get("name") == "publisher":
        decoding = f"publisher's decoding: {decoding}"
    t = Table("method", "target", "setting", "at edge", "strict", "lenient", "control (strict)", "/ native", "relevant",
              "CLaS", "median ppl", "distinct",
              box=box.SIMPLE_HEAD, title=f"steering {result['prompts']['eval']} held-out prompts (k = {result['k']:.2f}; "
                                         f"{decoding})",
              caption="at edge: YES where the chosen setting still sits at an edge of what was searched, flat where "
                      "every setting tried scored the same on the tuning prompts (the first taken); "
                      "in brackets: 95% Clopper-Pearson interval over prompts; / native: strict success relative to "
                      "the model's own native continuations (Koopman interval; -: native strict rate 0); CLaS: harmonic "
                      "mean of in-target and relevant shares (relevance off: -)")
    for row in format_table(result["rows"]):
        t.add_row(*row)
    m = Table("method", "targets", "strict", "/ native", "lenient", "control (strict)", "relevant", "CLaS", "rules chosen",
              box=box.SIMPLE_HEAD,
              title="methods, averaged over targets",
              caption="95% Clopper-Pearson interval over prompts; / native: the mean over the targets where it is "
                      "defined (how many in brackets), with the mean of their limits")
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    for r in result["method_table"]:
        ratio = format_ratio(r)
        if r.get("ratio_to_native_targets") not in (None, r["targets"]):
            ratio += f" ({r['ratio_to_native_targets']} of {r['targets']})"
        m.add_row(r["method"], str(r["targets"]), f"{pct(r['strict_rate'])} [{pct(r['strict_rate_lo'])}-{pct(r['strict_rate_hi'])}]",
                  ratio, pct(r["fluent_target_rate"]), pct(r.get("control_strict_rate")), pct(r.get("relevance_rate")),
                  "-" if r.get("clas") is None else f"{r['clas']:.2f}", r["rules_chosen"])
    undefined = list(dict.fromkeys(r["target"] for r in result["rows"] if r.get("ratio_to_native_note")))
    notes = [f"/ native is undefined for {', '.join(undefined)}: none of the model's own native continuations there "
             "passes the strict judge (native strict rate 0), so there is no ceiling to divide by"] if undefined else []
    return [t, m, *grid_lines(result), *notes]


def _own(name: str, evald: list[str]) -> str | None:
    """The evaluated language a zeroed set belongs to (``fr``, ``random:fr``, ``mono:fr``)."""
    lang = name.split(":", 1)[-1]
    return lang if lang in evald else None


def ablation(rows) -> list:
    """The ratio of every (zeroed, evaluated) pair, then each set's own language's interval."""
    from langloc.evaluate.intervals import includes, no_interval

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
    if not any(interval(r)[0] == interval(r)[0] for r in rows):
        return [t]
    # The intervals of each set's own language (or, without one, its largest ratio); every
    # cell's interval is in the CSV.
    s = Table(Column("zeroed", no_wrap=True), "on", Column("ratio", justify="right"),
              Column("95% interval", justify="right"), Column("range over draws", justify="right"),
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
              title="95% intervals (held-out windows)", caption="every cell's interval is in the CSV")
    for name in names:
        cells = {r.evaluated: r for r in rows if r.deactivated == name}
        own = _own(name, evald)
        r = cells[own] if own else max(cells.values(), key=lambda x: x.ratio)
        lo, hi = interval(r)
        draws = getattr(r, "draws", None)
        spread = f"{_ratio(r.ratio_min)}-{_ratio(r.ratio_max)} ({draws} draws)" if draws and draws > 1 else ""
        units = getattr(r, "windows", None)
        missing = no_interval(units) if units else "-"
        s.add_row(name, r.evaluated, _ratio(r.ratio), f"[{_ratio(lo)}, {_ratio(hi)}]" if lo == lo else missing, spread)
    return [t, s]


def regions(s: dict, rate: float) -> list:
    t = Table("region", "entries", title=f"regions of {s['model']['name']} ({rate:.1%} of each matrix)")
    for name, n in s["sizes"].items():
        t.add_row(name, f"{n:,}")
    dense = ", ".join(f"{d['dimension']} ({d['concentration']}x)" for d in s["densest_dimensions"])
    loud = ", ".join(f"{d['dimension']} ({d['max_abs_activation']:g})" for d in s["massive_activation_dimensions"])
    return [t, f"Top region densest on dimensions {dense}; largest residual activations on {loud} "
               f"(median {s['median_abs_activation']:g}); shared: {s['overlap'] or 'none'}"]


def perturb(table: list[dict]) -> list:
    languages = list(dict.fromkeys(r["language"] for r in table))
    t = Table("dimension", "kind", "entry", "operation", *languages,
              title=f"perplexity ratio after perturbing {table[0]['parameter']}")
    for dim in dict.fromkeys(r["dimension"] for r in table):
        cells = [r for r in table if r["dimension"] == dim]
        t.add_row(str(dim), cells[0]["kind"], str(cells[0]["index"]), cells[0]["operation"],
                  *[_ratio(r["ratio"]) for r in cells])
    return [t]


def spread(rows: list[dict]) -> list:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        t = Table("case", "block out", "after norm", "residual", "final", "ppl ratio",
                  title=f"{model}: relative change after one perturbed weight")
        for r in (r for r in rows if r["model"] == model):
            t.add_row(r["case"], *[("-" if r[k] is None else f"{r[k]:.3g}")
                                   for k in ("block_output", "after_output_norm", "residual", "final_hidden")],
                      _ratio(r["ppl_ratio"]))
        out.append(t)
    return out


def forgetting(rows: list[dict], language: str) -> list:
    last = max(r["step"] for r in rows)
    langs = list(dict.fromkeys(r["language"] for r in rows))
    t = Table("frozen", *langs, title=f"perplexity ratio to step 0 after {last} steps on {language}")
    for mode in dict.fromkeys(r["mode"] for r in rows):
        cells = {r["language"]: r["ratio"] for r in rows if r["mode"] == mode and r["step"] == last}
        t.add_row(mode, *[f"{cells[x]:.3f}" for x in langs])
    return [t]


def transfer(rows: list[dict], language: str) -> list:
    evals = list(dict.fromkeys(r["lang"] for r in rows))
    t = Table("condition", *evals, title=f"choice accuracy after training on {language} items",
              caption="in brackets: 95% interval over items")
    for cond in dict.fromkeys(r["condition"] for r in rows):
        cells = {r["lang"]: r for r in rows if r["condition"] == cond}
        t.add_row(cond, *[f"{cells[x]['accuracy']:.2f} [{cells[x]['accuracy_lo']:.2f}, {cells[x]['accuracy_hi']:.2f}]"
                          for x in evals])
    return [t]


def share(meta) -> list:
    """The category shares per task, then (with causal tests) each task's accuracies."""
    from langloc.share.categories import CATEGORIES

    t = Table("task", "items", *[c.replace("_", "-") for c in CATEGORIES], "stability",
              title=f"category shares (mean over layers and items), {meta.result['model']}, threshold {meta['threshold']:g}, "
                    f"{meta['position']} token")
    for n, s in meta["summary"].items():
        t.add_row(n, str(s["items"]), *[f"{100 * s['share_overall'][c]:.1f}%" for c in CATEGORIES],
                  f"{s['mean_stability']:.2f}")
    shown = [t]
    rows, langs = meta.result.get("causal") or [], meta["languages"]
    for n, task in meta.result["tasks"].items() if rows else ():
        ct = Table("condition", "neurons", *langs, "mean", title=f"{n}: accuracy ({task.accuracy_means})",
                   caption="below each accuracy: its 95% interval over items")
        for cond in dict.fromkeys(r["condition"] for r in rows if r["task"] == n):
            got = {r["language"]: r for r in rows if r["task"] == n and r["condition"] == cond}
            cells = {x: float(r["accuracy"]) for x, r in got.items()}
            count = next(r["n_neurons"] for r in rows if r["task"] == n and r["condition"] == cond)

            def cell(x):
                lo, hi = got[x].get("accuracy_lo"), got[x].get("accuracy_hi")
                return f"{cells[x]:.3f}" + (f"\n[{float(lo):.2f}, {float(hi):.2f}]" if lo else "")

            ct.add_row(cond, str(count), *[cell(x) for x in langs], f"{sum(cells.values()) / len(cells):.3f}")
        shown.append(ct)
    return shown


def harness(rows: list[dict], conditions: list[str], model: str) -> list:
    t = Table(Column("task", overflow="fold"), "metric", *[Column(c, overflow="fold") for c in conditions],
              title=f"lm-evaluation-harness on {model}")
    for task, metric in dict.fromkeys((r["task"], r["metric"]) for r in rows):
        cells = {r["condition"]: r["value"] for r in rows if r["task"] == task and r["metric"] == metric}
        t.add_row(task, metric, *[f"{cells[c]:.3f}" if c in cells else "-" for c in conditions])
    return [t]


def validation(rows: list[dict]) -> list:
    """validate: one row per language, then the verdict lines."""
    t = Table("lang", "set", "excl/shared", "shard J", "core", Column("own [95%]", justify="right"),
              Column("largest other [95%]", justify="right"), "sel.", Column("matched", justify="right"),
              Column("random", justify="right"), Column("2nd domain", justify="right"), "spill from",
              box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
              title="validate (perplexity ratios: zeroed / base)")

    def ci(r, key):
        v, lo, hi = r[f"{key}_ratio"], r.get(f"{key}_lo"), r.get(f"{key}_hi")
        return "-" if v != v else f"{_ratio(v)} [{_ratio(lo)}, {_ratio(hi)}]" if lo is not None and lo == lo else _ratio(v)

    for r in rows:
        dom = r.get("domain_own_ratio", float("nan"))
        t.add_row(r["language"], str(r["set_size"]), f"{r['exclusive_size']}/{r['shared_size']}",
                  "-" if r["shard_jaccard"] != r["shard_jaccard"] else f"{r['shard_jaccard']:.2f}",
                  "-" if r["stable_core"] != r["stable_core"] else f"{r['stable_core']:.0%}",
                  ci(r, "own"), f"{ci(r, 'other')} {r['other_language']}", "yes" if r["selective"] else "no",
                  ci(r, "matched"), ci(r, "random"), "-" if dom != dom else _ratio(dom),
                  f"{r['spill_from']} ({r['spill_language']})" if r["spill_language"] else "-")
    return [t, *[r["verdict"] for r in rows]]
