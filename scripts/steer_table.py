"""Print a steering run's method table as docs/results.md shows it (run: python scripts/steer_table.py
OUT [OUT ...]), read from the files `langloc steer` wrote: summary.csv (each method on each target),
native.csv (the native ceiling) and methods.csv (each method over the targets).

Two tables per folder: strict success per target with its 95% Clopper-Pearson interval over the
held-out prompts, the native row and the chosen setting; then per method the pooled strict
success, the ratio to the native ceiling with its interval (the mean over the targets where it is
defined), language control, relevance, the CLaS-style score, the random control and the cells
whose chosen setting sits at a grid edge. A third table says why outputs fail the strict judge:
for the native continuations and for the best method's held-out outputs (steer.json's best_method,
the highest pooled strict success), how many fail each criterion per target (an output can fail several), counted from the
judge's own labels in generations.jsonl. "(flat)" marks a chosen setting whose search scored every
setting the same on the tuning prompts (summary.csv's search_flat, or for runs made before that
column, the same test on the trials steer.json records). Nothing else is computed here that the run did not write.
With --plot PATH it also draws every finished folder's ratios to the native ceiling in one figure.

With a steering run still going (cells kept in OUT/.parts, no summary.csv yet) it says so and
prints nothing for that folder: partial figures come from the tool's own files or not at all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from langloc.report.sections import read_csv

NAMES = {"lape": "LAPE neurons", "diffmean": "DiffMean", "probe": "probe", "lda": "LDA", "pca": "PCA",
         "prompting": "prompting"}


def _pct(r: dict, key: str) -> str:
    return f"{100 * float(r[key]):.0f}% [{100 * float(r[key + '_lo']):.0f}–{100 * float(r[key + '_hi']):.0f}]"


def _num(v: str, fmt: str = "{:.2f}") -> str:
    return "—" if v in ("", None) else fmt.format(float(v))


def tables(out: Path) -> str:
    if not (out / "summary.csv").exists():
        cells = len(list((out / ".parts").glob("cell-*.json"))) if (out / ".parts").exists() else 0
        return f"{out}: not finished ({cells} cells kept in .parts); rerun its steer command to complete it"
    summary, native = read_csv(out / "summary.csv"), {r["language"]: r for r in read_csv(out / "native.csv")}
    methods = read_csv(out / "methods.csv")
    manifest = json.loads((out / "steer.json").read_text(encoding="utf-8"))
    targets = list(dict.fromkeys(r["target"] for r in summary))
    by = {(r["method"], r["target"]): r for r in summary}
    order = list(dict.fromkeys(r["method"] for r in summary))
    n_native = {t: int(native[t]["n"]) for t in targets if t in native}
    lines = [f"`{out}` ({manifest.get('model', {}).get('name', '?')}, decoding: {methods[0]['decoding']})", "",
             "| | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|",
             "| native (unsteered, same judge) | " + " | ".join(
                 f"{round(float(native[t]['strict_rate']) * n_native[t])}/{n_native[t]}" if t in native else "—"
                 for t in targets) + " |"]
    for m in order:
        lines.append(f"| {NAMES.get(m, m)} | " + " | ".join(_pct(by[m, t], "strict_rate") if (m, t) in by else "—"
                                                          for t in targets) + " |")
    flat = flat_cells(by, manifest)
    for m in order:
        lines.append(f"| {NAMES.get(m, m)}: chosen | " + " | ".join(
            (by[m, t]["setting"] + (" (edge)" if by[m, t]["at_grid_edge"] == "True" else " (flat)" if (m, t) in flat
                                    else "")) if (m, t) in by else "—"
            for t in targets) + " |")
    lines += ["", "| method | targets | strict (pooled) [95%] | ratio to native [95%] (targets) | target language | "
                  "relevance | CLaS-style | random control strict (max cell) | cells at a grid edge | flat searches |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in methods:
        n = int(r["targets"]) * int(by[r["method"], targets[0]]["n"])
        ratio = (f"{float(r['ratio_to_native']):.2f} [{float(r['ratio_to_native_lo']):.2f}–"
                 f"{float(r['ratio_to_native_hi']):.2f}] ({r['ratio_to_native_targets']})"
                 if r["ratio_to_native"] else "—")
        ctl = f"{round(float(r['control_strict_rate']) * n)}/{n} ({_num(r['control_strict_rate_max_cell'], '{:.0%}')})"
        lines.append(f"| {NAMES.get(r['method'], r['method'])} | {r['targets']} | {_pct(r, 'strict_rate')} | {ratio} | "
                     f"{_num(r['target_rate'], '{:.0%}')} | {_num(r['relevance_rate'], '{:.0%}')} | {_num(r['clas'])} | "
                     f"{ctl} | {r['cells_at_grid_edge']} | {sum(m == r['method'] for m, _ in flat)} |")
    return "\n".join(lines + ["", failures(out, targets, manifest["best_method"], manifest["source"])])


def flat_cells(by: dict, manifest: dict) -> set:
    """The (method, target) cells whose search was flat: summary.csv's search_flat where the run
    wrote it, else from the trials steer.json records (runs made before the column existed)."""
    from langloc.steer.evaluation import search_flat

    if any("search_flat" in r for r in by.values()):
        return {k for k, r in by.items() if r.get("search_flat") == "True"}
    return {(d["method"], d["target"]) for d in manifest["details"] if d.get("edge") and search_flat(d["search"])}


CRITERIA = {"language": "language", "script": "script", "perplexity": "perplexity", "relevance": "relevance",
            "repetitive_or_short": "loop or short"}


def failures(out: Path, targets: list[str], method: str, source: str) -> str:
    """Per target, how many of the native continuations and of ``method``'s held-out outputs from
    the ``source`` prompts (not the matrix's other sources) fail each criterion of the strict judge
    (its ``strict_fails`` labels)."""
    counts: dict = {}
    for line in (out / "generations.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["method"] == "native" or (r["method"] == method and r.get("source") == source):
            c = counts.setdefault((r["method"], r["target"]), {"n": 0})
            c["n"] += 1
            for f in r.get("strict_fails") or []:
                c[f] = c.get(f, 0) + 1
    lines = [f"| fails the criterion | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for m in ("native", method):
        for key, name in CRITERIA.items():
            lines.append(f"| {NAMES.get(m, m)}: {name} | " + " | ".join(
                f"{counts[m, t].get(key, 0)}/{counts[m, t]['n']}" if (m, t) in counts else "—" for t in targets) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="+", type=Path, help="folders written by langloc steer")
    ap.add_argument("--plot", type=Path, help="also draw the finished folders' ratios to the native ceiling "
                                              "side by side into this PNG (plot_native_ratio)")
    args = ap.parse_args()
    for out in args.out:
        print(tables(out), end="\n\n")
    if args.plot:
        from langloc.plotting import plot_native_ratio, run_label

        done = [out for out in args.out if (out / "summary.csv").exists()]
        plot_native_ratio({run_label(json.loads((out / "steer.json").read_text(encoding="utf-8"))):
                           read_csv(out / "methods.csv") for out in done}, args.plot)
        print(f"wrote {args.plot} ({len(done)} finished runs)")


if __name__ == "__main__":
    main()
