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
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

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
                     "--batch-size", "16"]),
        ("perturb-massive", ["perturb", g, "-l", "en,zh,ru", "--eval-tokens", "256", "--dtype", "float32",
                             "--batch-size", "16", "--matrix", "1.mlp.down_proj", "--dims", "{massive},{ordinary}"]),
        ("spread", ["spread", model, "-o", str(out / "spread.csv"), "--tokens", "512"]),
    ]


def loud_dims(regions: Path) -> dict:
    """The residual stream's loudest dimension and a median one, from `langloc regions`' summary."""
    rows = list(csv_rows(regions / "dimensions.csv"))
    rows.sort(key=lambda r: -float(r["max_abs_activation"]))
    return {"massive": rows[0]["dimension"], "ordinary": rows[len(rows) // 2]["dimension"]}


def csv_rows(path: Path):
    import csv
    with open(path, newline="") as f:
        yield from csv.DictReader(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-o", "--out", required=True, type=Path)
    ap.add_argument("--dtype", default="bfloat16", help="collect/regions dtype (ablate and validate take the run's)")
    ap.add_argument("--only", default="", help="comma-separated step names to run (default: all)")
    a = ap.parse_args()
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
        proc = subprocess.run(cmd, env=os.environ)
        wall = time.time() - started
        err = timing.read_text() if timing.exists() else ""
        if proc.returncode:
            sys.exit(f"step {name} failed (exit {proc.returncode})")
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        done[name] = {"command": "langloc " + shlex.join(args), "wall_s": round(wall, 1),
                      "peak_rss_gb": round(int(peak.group(1)) / 2**20, 2) if peak else None,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = log_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(log_path)
        print(f"[{name}] {wall:.0f} s, peak RSS {done[name]['peak_rss_gb']} GB", flush=True)


if __name__ == "__main__":
    main()
