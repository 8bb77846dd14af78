"""train (forgetting): further pre-train on one language with the core region frozen, a random
region frozen, or nothing, and measure forgetting on other languages.

:func:`langloc.train.trainer.forgetting` runs each mode into ``OUT/<mode>`` (its own train.json,
resumable) and returns the rows; this module writes ``OUT/forgetting.csv`` (mode, step, language,
ppl, ratio to step 0), ``OUT/summary.csv``, ``OUT/plots/forgetting.png`` and
``OUT/forgetting.manifest.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.studies.base import Manifest, StudyConfig, check_choices
from langloc.train.trainer import TrainSettings  # the trainer's defaults, stated there once

KIND = kinds.FORGETTING


@dataclass
class Config(StudyConfig):
    """folder: region folder with regions.safetensors; language: the language trained on (its
    stats split); eval_languages: languages whose held-out perplexity shows forgetting; region:
    the region frozen in mode core (top, or e.g. mono:fr); when it is top, mode random freezes
    the file's random region (else a fresh random region of the same size); modes: core,
    random, none; steps, batch_size, window (default the folder's), lr, weight_decay, warmup,
    max_grad_norm (0: none), precision (bf16, fp16, fp32): training; train_embeddings: also
    train the token embeddings; eval_tokens, eval_every: perplexity; checkpoint_every, resume:
    checkpoints (resume, the default: continue an interrupted mode from its checkpoint); seed:
    data order; corpus, model, device: default the folder's; progress: bars."""

    folder: Path
    language: str
    eval_languages: tuple[str, ...]
    region: str = "top"
    modes: tuple[str, ...] = ("core", "random", "none")
    steps: int = TrainSettings.steps
    batch_size: int = TrainSettings.batch_size
    window: Optional[int] = None
    lr: float = TrainSettings.lr
    weight_decay: float = TrainSettings.weight_decay
    warmup: int = TrainSettings.warmup
    max_grad_norm: float = TrainSettings.max_grad_norm
    precision: str = TrainSettings.precision
    train_embeddings: bool = True
    eval_tokens: int = TrainSettings.eval_tokens
    eval_every: int = TrainSettings.eval_every
    checkpoint_every: int = TrainSettings.checkpoint_every
    seed: int = TrainSettings.seed
    resume: bool = True
    corpus: Optional[str] = None
    model: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True


def run(lm, config: Config, out: str | Path) -> Manifest:
    from langloc.manifest import manifest_file, read_manifest
    from langloc.regions.regions import Regions, default_regions_file
    from langloc.regions.folder import folder_corpus, folder_info, folder_model
    from langloc.train.trainer import FREEZE_MODES, TrainSettings, forgetting

    c = config
    check_choices("mode", c.modes, FREEZE_MODES)
    info = folder_info(c.folder)
    regs = Regions.load(default_regions_file(c.folder))
    # The control frozen in mode random: the region file's own random region, drawn with the
    # same rate as Top; for another region, forgetting draws one of the same size.
    core, control = regs[c.region], regs["random"] if c.region == "top" else None
    corpus = folder_corpus(info, c.corpus)
    corpus.require_text([c.language], "stats")
    corpus.require_text(list(c.eval_languages), "eval")
    lm = lm or folder_model(c.folder, c.model, "float32", c.device)
    if not c.train_embeddings:
        for p in lm.model.get_input_embeddings().parameters():
            p.requires_grad_(False)
    settings = TrainSettings(steps=c.steps, batch_size=c.batch_size, window=c.window or info.get("window", 512), lr=c.lr,
                             weight_decay=c.weight_decay, warmup=c.warmup, seed=c.seed,
                             eval_languages=[x for x in c.eval_languages if x != c.language],
                             eval_tokens=c.eval_tokens, eval_every=c.eval_every,
                             checkpoint_every=c.checkpoint_every, max_grad_norm=c.max_grad_norm or None,
                             precision=c.precision)
    started = time.time()
    res = forgetting(lm, corpus, c.language, core, settings, out=out, modes=list(c.modes), resume=c.resume,
                     control=control, region_meta=regs.meta, progress=c.progress)
    path = write_outputs(Path(out), lm, corpus, c, settings, res, started)
    return Manifest(read_manifest(manifest_file(path), KIND), result=res.rows, path=path)


def write_outputs(out: Path, lm, corpus, c: Config, settings, res, started: float) -> Path:
    """forgetting.csv, summary.csv, plots/forgetting.png and forgetting.manifest.json (listing
    them and each mode's train.json); returns the path of forgetting.csv."""
    from langloc.artefacts import write_csv
    from langloc.manifest import make_manifest, write_manifest
    from langloc.train.plots import plot_forgetting
    from langloc.train.trainer import RESULT

    modes = list(c.modes)
    write_csv(out / "forgetting.csv", res.rows, ["mode", "step", "language", "ppl", "ratio"])
    write_csv(out / "summary.csv", res.summary, list(dict.fromkeys(k for row in res.summary for k in row)))
    plot_forgetting(res.rows, out / "plots" / "forgetting.png", c.language)
    t = settings
    config = {"language": c.language, "modes": modes, "frozen_entries": res.frozen_entries,
              "steps": t.steps, "batch_size": t.batch_size, "window": t.window, "lr": t.lr,
              "weight_decay": t.weight_decay, "warmup": t.warmup, "max_grad_norm": t.max_grad_norm,
              "precision": t.precision, "eval_languages": t.eval_languages, "eval_tokens": t.eval_tokens,
              "eval_every": t.eval_every, "checkpoint_every": t.checkpoint_every}
    write_manifest(out / "forgetting.csv", make_manifest(
        KIND, model=lm.meta, corpus=corpus.describe(), split={"train": "stats", "eval": "eval"},
        config=config, seeds={"data": t.seed, "random_region": t.seed}, started=started),
        [out / "forgetting.csv", out / "summary.csv", out / "plots" / "forgetting.png",
         *[out / m / RESULT for m in modes]])
    return out / "forgetting.csv"
