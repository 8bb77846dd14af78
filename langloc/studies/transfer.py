"""transfer: neuron-masked LoRA (PEFT): fine-tune only a language's neurons and measure
cross-lingual transfer on the offline Bible translation-choice task.

Conditions: the set's neurons, random neurons of the same count per layer, all MLP neurons,
no MLP adapter (attention only), and the model with no adapter. Writes the CSV ``OUT``
(condition, language, accuracy and its 95% interval over items) and ``<OUT stem>.manifest.json``
beside it. Under torchrun the conditions (the unadapted model, each adapter mode: trained,
evaluated on every language) are shared out over the processes; the first writes the CSV,
the same as one process's (each process saves the adapters it trained).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from langloc import kinds
from langloc.adapters.transfer import AdapterSettings  # the adapters' defaults, stated there once
from langloc.studies.base import Manifest, StudyConfig, check_choices, load_model_of

KIND = kinds.TRANSFER


@dataclass
class Config(StudyConfig):
    """neurons: neuron set whose language's neurons the adapter may change; language: train on
    this language's items (stats split); eval_languages: languages evaluated (eval split, the
    trained one first); modes: neurons, random, all, none; target: language of the answer
    choices; train_items, eval_items: items; preset: langloc or mondal adapter settings, with
    r and alpha overriding it; attention: also plain LoRA on attention; down: also adapt the
    MLP output projection; lr, epochs, batch_size: training; seed: items, random neurons and
    training; save_adapters: save each trained adapter to SAVE_ADAPTERS/<mode> (for langloc
    harness --adapter); model, device: default the neuron set's model; progress: bars."""

    neurons: Path
    language: str
    eval_languages: tuple[str, ...]
    modes: tuple[str, ...] = ("neurons", "random", "all", "none")
    target: str = "en"
    train_items: int = 200
    eval_items: int = 100
    preset: str = "langloc"
    r: Optional[int] = None
    alpha: Optional[int] = None
    attention: bool = AdapterSettings.attention
    down: bool = AdapterSettings.down
    lr: float = AdapterSettings.lr
    epochs: int = AdapterSettings.epochs
    batch_size: int = AdapterSettings.batch_size
    seed: int = AdapterSettings.seed
    save_adapters: Optional[Path] = None
    model: Optional[str] = None
    device: Optional[str] = None
    progress: bool = True


def run(lm, config: Config, out: str | Path) -> Manifest:
    from langloc import distributed
    from langloc.tasks.bible_choice import bible_choice_items
    from langloc.adapters.masked_lora import ADAPTER_MODES
    from langloc.adapters.transfer import AdapterSettings, preset_settings, transfer_study
    from langloc.artefacts import write_csv
    from langloc.identify import NeuronSet
    from langloc.manifest import make_manifest, write_manifest

    c, out = config, Path(out)
    started = time.time()
    settings = preset_settings(c.preset, r=c.r, alpha=c.alpha)
    check_choices("mode", c.modes, ADAPTER_MODES)
    ns = NeuronSet.load(c.neurons)
    train_set = bible_choice_items(c.language, "stats", c.train_items, target=c.target, seed=c.seed)
    evals = {lang: bible_choice_items(lang, "eval", c.eval_items, target=c.target, seed=c.seed)
             for lang in [c.language, *[x for x in c.eval_languages if x != c.language]]}
    lm = lm or load_model_of(ns.meta, c.model, "float32", c.device or distributed.local_device(), str(c.neurons))
    ns.check_model(lm)
    adapter = AdapterSettings(**settings, attention=c.attention, down=c.down, lr=c.lr, epochs=c.epochs,
                              batch_size=c.batch_size, seed=c.seed)
    rows = transfer_study(lm, ns.layers(c.language), train_items=train_set, eval_items=evals, adapter=adapter,
                          modes=list(c.modes), progress=c.progress, save_adapters=c.save_adapters)
    if not distributed.is_main():
        return Manifest(result=rows)
    write_csv(out, rows, list(dict.fromkeys(k for row in rows for k in row)))
    manifest = make_manifest(
        KIND, model=lm.meta, corpus={"name": "bible", "task": "bible-choice", "target": c.target},
        split={"train": "stats", "eval": "eval"}, started=started,
        config={"neurons": str(c.neurons), "method": ns.method, "language": c.language, "eval_languages": list(evals),
                "modes": list(c.modes), "preset": c.preset, **settings, "attention": c.attention, "down": c.down,
                "lr": c.lr, "epochs": c.epochs, "batch_size": c.batch_size, "train_items": c.train_items,
                "eval_items": c.eval_items},
        seeds={"items": c.seed, "random_neurons": c.seed, "training": c.seed})
    write_manifest(out, manifest, [out])
    return Manifest(manifest, result=rows, path=out)
