"""ablate: zero each language's neurons and measure every language's held-out perplexity.

Writes ``OUT/ablation.csv`` (deactivated, evaluated, base_ppl, ppl, ratio, its 95%
interval over windows, the range over control draws), ``OUT/plots/ablation.png`` and
``OUT/ablation.manifest.json``; ``OUT`` is usually the run folder. Under torchrun every
process evaluates its share of the conditions (:func:`langloc.evaluate.ablation.perplexity_table`)
and the first writes the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.evaluate.intervals import default_window
from langloc.studies.base import Manifest, StudyConfig, load_model_of, run_corpus

KIND = kinds.ABLATION


@dataclass
class Config(StudyConfig):
    """run: run folder made by collect (and identify); neurons: neuron set (default
    RUN/neurons/lape.json); model: model (default: the run's); languages: subset of the set's
    languages (default all); eval_tokens: held-out tokens per language; corpus: corpus whose
    eval split is used (default the run's); window: tokens per evaluation window (default the
    run's if eval_tokens fill 16 of them, else eval_tokens / 16: the interval's units); batch_size: windows per forward pass; controls: also zero random neurons
    of the same count per layer; control_draws: independent draws of each control; seed: the
    run seed the controls' draws derive from; dtype, device: how the model
    is loaded; progress: show progress bars."""

    run: Path
    neurons: Optional[Path] = None
    model: Optional[str] = None
    languages: Optional[tuple[str, ...]] = None
    eval_tokens: int = 2048
    corpus: Optional[str] = None
    window: Optional[int] = None
    batch_size: int = 2
    controls: bool = True
    control_draws: int = 3
    seed: int = 0
    dtype: str = "auto"
    device: Optional[str] = None
    progress: bool = True


def run(lm, config: Config, out: str | Path) -> Manifest:
    from langloc import distributed
    from langloc.controls import check_draws
    from langloc.data.lid_filter import LID_REPORT
    from langloc.evaluate.ablation import ablate, write_ablation_csv
    from langloc.identify import NeuronSet
    from langloc.manifest import make_manifest, write_manifest
    from langloc.plotting import plot_ablation
    from langloc.stats import read_run
    from langloc.workflows import default_neurons

    c, out = config, Path(out)
    check_draws(c.control_draws)
    started = time.time()
    meta = read_run(c.run)
    neurons = c.neurons or default_neurons(c.run)
    ns = NeuronSet.load(neurons)
    lm = lm or load_model_of(meta, c.model, c.dtype, c.device or distributed.local_device(), str(c.run))
    # Evaluate on the held-out split of the corpus the statistics came from, unless told otherwise.
    eval_corpus = run_corpus(meta, c.corpus, seed=meta.get("seed", 0))
    languages = list(c.languages) if c.languages else None
    window = c.window or default_window(c.eval_tokens, meta.get("window", 512))
    rows = ablate(lm, ns, eval_corpus, languages=languages, eval_tokens=c.eval_tokens, window=window,
                  batch_size=c.batch_size, seed=c.seed, controls=c.controls, control_draws=c.control_draws,
                  progress=c.progress)
    if not distributed.is_main():
        return Manifest(result=rows)
    csv_path = write_ablation_csv(rows, out / "ablation.csv")
    plot_ablation(rows, out / "plots" / "ablation.png")
    manifest = make_manifest(
        KIND, model=lm.meta, corpus=eval_corpus.describe(), split="eval", started=started,
        config={"neurons": str(neurons), "method": ns.method, "languages": languages,
                "eval_tokens": c.eval_tokens, "window": window, "batch_size": c.batch_size,
                "controls": c.controls, "control_draws": c.control_draws}, seeds={"controls": c.seed})
    evaluated = dict.fromkeys(r.evaluated for r in rows)
    dropped = {lang: eval_corpus.report(lang, "eval") for lang in evaluated}  # None: no language-ID filter
    write_manifest(csv_path, manifest, [csv_path, out / "plots" / "ablation.png"],
                   **({LID_REPORT: dropped} if None not in dropped.values() else {}))
    return Manifest(manifest, result=rows, path=csv_path)
