"""A small real analysis for the report tests: a tiny model's run (collect, identify, ablate),
a steering study on its neurons, and an output of a kind this langloc has no section for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tiny import save_tiny_llama, write_folder_corpus


def invoke(*args) -> int:
    """Run the CLI through main() (LanglocError -> one line, status 2); returns the status."""
    from langloc.cli import main

    old = sys.argv
    sys.argv = ["langloc", *map(str, args)]
    try:
        main()
    except SystemExit as exc:
        return exc.code
    finally:
        sys.argv = old
    return 0


def make_analysis(root: Path) -> dict[str, Path]:
    model = save_tiny_llama(root / "tiny")
    corpus = write_folder_corpus(root / "corpus")
    run, steer = root / "run", root / "steer"
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en,fr,ru", "--tokens", "512", "--window", "64",
                  "-o", run, "--device", "cpu") == 0
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    assert invoke("ablate", run, "--eval-tokens", "128", "--device", "cpu", "--control-draws", "1") == 0
    prompts = root / "prompts.txt"
    prompts.write_text("In the beginning\nThe word was\nAnd the people\nOn the first day\nThe king said\n",
                       encoding="utf-8")  # more than the 4 each output's relevance is compared with
    assert invoke("steer", "-n", run / "neurons" / "lape.json", "-t", "fr", "--run", run, "-o", steer,
                  "--prompts", prompts, "--fixed", "on(autox1)", "--fixed", "diffmean(L1x4)", "--max-new-tokens", "4", "--control-draws", "1",
                  "--device", "cpu", "--relevance") == 0
    # A study kind from a newer langloc (or one added after this report's sections): a CSV with
    # its manifest beside it, as write_manifest makes them.
    other = root / "claims"
    other.mkdir()
    (other / "verdicts.csv").write_text("claim,verdict,ratio\nown language most,holds,1.8\n", encoding="utf-8")
    run_doc = json.loads((run / "run.json").read_text())
    doc = {k: run_doc[k] for k in ("format_version", "langloc_version", "model", "corpus", "machine")}
    (other / "verdicts.manifest.json").write_text(json.dumps(
        {"kind": "langloc.claims", **doc, "config": {"claims": 1}, "command": ["langloc", "claims", str(run)],
         "outputs": ["verdicts.csv"]}), encoding="utf-8")
    return {"root": root, "run": run, "steer": steer, "other": other}


def make_report(root: Path) -> tuple[dict[str, Path], Path]:
    """The analysis and its report page (``root/report.html``)."""
    paths = make_analysis(root)
    page = root / "report.html"
    assert invoke("report", paths["run"], paths["steer"], paths["other"], "-o", page) == 0
    return paths, page


# The sections a report of the whole analysis must have (ids of <section> elements).
EXPECTED = ["overview", "run", "neuron-set", "ablation", "steer", "claims"]
