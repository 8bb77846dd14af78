"""Run langloc's core pipeline on one model with fixed budgets, step by step, resumably, and
record each step's wall time and peak memory (run: python scripts/side_by_side.py -m MODEL -o DIR).

The same budgets for every model, so that docs/results.md can put the models side by side
(issue 27): collect on seven languages of six scripts, identify (LAPE defaults), ablate with
random controls, validate, importance on the regions paper's six languages, regions,
region-ablate, perturb (the default case, and the residual stream's loudest dimension against an
ordinary one) and spread. A step whose marker exists in DIR/steps.json is skipped, so an
interrupted run goes on where it stopped. Each step is one `langloc` command, printed before it
runs, so the commands in the docs are the ones measured.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from langloc.artefacts import write_json

LANGS = "en,zh,fr,ru,ja,ar,hi"           # Latin, Han, Cyrillic, Japanese, Arabic, Devanagari
REGION_LANGS = "ar,es,ru,zh,ko,vi"       # the six languages Zhang et al. score
EVAL_LANGS = "en,zh,es,ru,ar,ko,vi,hi"   # the six scored and two not scored


def steps(model: str, out: Path, dtype: str) -> list[tuple[str, list[str]]]:
    # Budgets for a 1.5B model on 2 CPU cores (about 70 minutes in all); the gemma-3-270m run of
    # 2026-12-05 took larger ones for ablate (384 tokens), importance (1,024), regions' probe (1,024),
    # region-ablate (10 languages), perturb (512 tokens, 4 languages) and spread (1,024): its
    # steps.json holds the commands it ran.
    r, g = str(out), str(out / "regions")
    return [
        ("collect", ["collect", "-m", model, "-l", LANGS, "--tokens", "8192", "--dtype", dtype, "-o", r, "--resume"]),
        ("identify", ["identify", r]),
        ("ablate", ["ablate", r, "--eval-tokens", "256", "--window", "32", "--control-draws", "2",
                    "--batch-size", "16"]),
        ("validate", ["validate", r, "--shards", "3", "--eval-tokens", "256", "--window", "32",
                      "--control-draws", "2"]),
        ("importance", ["importance", "-m", model, "-l", REGION_LANGS, "--tokens", "512", "-o", g, "--resume"]),
        ("regions", ["regions", g, "--rate", "0.01", "--dtype", dtype, "--probe-tokens", "256"]),
        ("region-ablate", ["region-ablate", g, "-l", EVAL_LANGS, "--eval-tokens", "256", "--dtype", dtype,
                           "--batch-size", "16"]),
        ("perturb", ["perturb", g, "-l", "en,zh,ru", "--eval-tokens", "256", "--dtype", "float32",
                     "--batch-size", "16", "-o", f"{g}/perturb.csv"]),
        ("perturb-massive", ["perturb", g, "-l", "en,zh,ru", "--eval-tokens", "256", "--dtype", "float32",
                             "--batch-size", "16", "--matrix", "1.mlp.down_proj", "--dims", "{massive},{ordinary}",
                             "-o", f"{g}/perturb-massive.csv"]),
        ("spread", ["spread", model, "-o", str(out / "spread.csv"), "--tokens", "512"]),
    ]


def loud_dims(regions: Path) -> dict:
    """The residual stream's loudest dimension and a median one, from `langloc regions`'
    dimensions.csv (its summary, regions.json, lists only the loudest few)."""
    rows = list(csv_rows(regions / "dimensions.csv"))
    rows.sort(key=lambda r: -float(r["max_abs_activation"]))
    return {"massive": rows[0]["dimension"], "ordinary": rows[len(rows) // 2]["dimension"]}


def csv_rows(path: Path):
    import csv
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def _f(x: str | float, digits: int = 2) -> str:
    x = float(x)
    return f"{x:.1e}" if x >= 1e3 else f"{x:.{digits}f}"


def _ci(r: dict, key: str = "ratio", lo: str = "ratio_lo", hi: str = "ratio_hi") -> str:
    if r.get(lo) in (None, "", "nan") or r.get(hi) in (None, "", "nan"):
        return f"×{_f(r[key])}"
    return f"×{_f(r[key])} [{_f(r[lo])}, {_f(r[hi])}]"


def table(folders: list[Path]) -> str:
    """The side-by-side tables of docs/results.md, from the folders this script filled."""
    import statistics as st

    lines, per_lang, names = [], {}, []
    summary: dict[str, list[str]] = {}

    def put(row: str, value: str) -> None:
        summary.setdefault(row, []).append(value)

    for folder in folders:
        run = json.loads((folder / "run.json").read_text())
        name = run["model"]["name"]
        names.append(name)
        abl = list(csv_rows(folder / "ablation.csv"))
        langs = list(dict.fromkeys(r["evaluated"] for r in abl))
        sets = [lang for lang in dict.fromkeys(r["deactivated"] for r in abl) if not lang.startswith("random:")]
        most = []
        for s in sets:
            rows = {r["evaluated"]: r for r in abl if r["deactivated"] == s}
            if max(rows, key=lambda k: float(rows[k]["ratio"])) == s:
                most.append(s)
            ctl = next((r for r in abl if r["deactivated"] == f"random:{s}" and r["evaluated"] == s), None)
            other = max((k for k in rows if k != s), key=lambda k: float(rows[k]["ratio"]))
            per_lang.setdefault(s, {})[name] = (_ci(rows[s]), f"{other} {_ci(rows[other])}",
                                               _ci(ctl) if ctl else "—")
        val = list(csv_rows(folder / "validate" / "validation.csv"))
        sizes = [int(r["set_size"]) for r in val]
        put("LAPE set, neurons per language (min–max)",
            f"{min(sizes)}–{max(sizes)}")
        put("own language hurt most (ablate)", f"{len(most)}/{len(sets)}: {', '.join(most)}")
        put("selective (validate)", ", ".join(r["language"] for r in val if r["selective"] == "True") or "none")
        put("stable (validate: ≥ 80% in the stable core)",
            ", ".join(r["language"] for r in val if r["stable"] == "True") or "none")
        rnd = [float(r["ratio"]) for r in abl if r["deactivated"].startswith("random:")
               and r["deactivated"][7:] == r["evaluated"]]
        put("random control on its own language (ablate, geometric mean of 2 draws; range over languages)",
            f"×{min(rnd):.2f}–×{max(rnd):.2f}")
        m = [float(r["matched_ratio"]) for r in val]
        put("activation-matched control on its own language (validate; range)", f"×{min(m):.2f}–×{max(m):.2f}")
        reg = folder / "regions"
        if (reg / "region_ablation.csv").exists():
            ra = list(csv_rows(reg / "region_ablation.csv"))
            for region in ("top", "bottom", "random"):
                v = [float(r["ratio"]) for r in ra if r["deactivated"] == region]
                put(f"{region.capitalize()} 1% zeroed: median ratio (range) over the languages evaluated",
                    f"×{_f(st.median(v))} ({_f(min(v))}–{_f(max(v))}; {len(v)} languages)")
            monos = sorted({r["deactivated"] for r in ra if r["deactivated"].startswith("mono:")})
            own_most = []
            for mono in monos:
                rows = {r["evaluated"]: float(r["ratio"]) for r in ra if r["deactivated"] == mono}
                if max(rows, key=rows.get) == mono[5:]:
                    own_most.append(mono[5:])
            put("monolingual regions hurting their own language most", f"{len(own_most)}/{len(monos)}")
            summ = json.loads((reg / "regions.json").read_text())
            loud = summ["massive_activation_dimensions"][:3]
            put("loudest residual dimensions (max \\|activation\\|, layer); median dimension",
                ", ".join(f"{d['dimension']} ({d['max_abs_activation']:.3g}, L{d['layer']})" for d in loud)
                + f"; {summ['median_abs_activation']:.3g}")
            dense = summ["densest_dimensions"][:3]
            put("densest Top-region dimensions (× uniform share)",
                ", ".join(f"{d['dimension']} (×{d['concentration']:.0f})" for d in dense))
        steps = json.loads((folder / "steps.json").read_text())
        for step, info in steps.items():
            put(f"wall time: {step}", f"{info['wall_s']:.0f} s ({info['peak_rss_gb']} GB)")
    lines.append("| | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    for row, values in summary.items():
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    lines += ["", "| set zeroed | " + " | ".join(f"{n}: own [95%] | largest other | random control" for n in names)
              + " |", "|---" * (1 + 3 * len(names)) + "|"]
    for lang, by in per_lang.items():
        cells = [c for n in names for c in by.get(n, ("—", "—", "—"))]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model")
    ap.add_argument("-o", "--out", type=Path)
    ap.add_argument("--table", nargs="+", type=Path, help="print the side-by-side tables of these folders")
    ap.add_argument("--dtype", default="bfloat16", help="collect/regions dtype (ablate and validate take the run's)")
    ap.add_argument("--only", default="", help="comma-separated step names to run (default: all)")
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
        return
    if not (a.model and a.out):
        ap.error("give --model and --out (or --table)")
    a.out.mkdir(parents=True, exist_ok=True)
    log_path = a.out / "steps.json"
    done = json.loads(log_path.read_text()) if log_path.exists() else {}
    only = set(filter(None, a.only.split(",")))
    for name, args in steps(a.model, a.out, a.dtype):
        if name in done or (only and name not in only):
            continue
        if any("{massive}" in x for x in args):
            args = [x.format(**loud_dims(a.out / "regions")) for x in args]
        timing = a.out / f".time-{name}.txt"
        cmd = ["/usr/bin/time", "-v", "-o", str(timing), "langloc", *args]
        print(f"\n$ langloc {shlex.join(args)}", flush=True)
        started = time.time()
        proc = subprocess.run(cmd)
        wall = time.time() - started
        err = timing.read_text() if timing.exists() else ""
        if proc.returncode:
            sys.exit(f"step {name} failed (exit {proc.returncode})")
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        done[name] = {"command": "langloc " + shlex.join(args), "wall_s": round(wall, 1),
                      "peak_rss_gb": round(int(peak.group(1)) / 2**20, 2) if peak else None,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(log_path, done)  # temporary name, then rename
        print(f"[{name}] {wall:.0f} s, peak RSS {done[name]['peak_rss_gb']} GB", flush=True)


if __name__ == "__main__":
    main()
