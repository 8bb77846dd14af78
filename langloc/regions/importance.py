"""Parameter importance per language: I_k(θ) = |θ · ∂L_k/∂θ| (Zhang et al., first-order Taylor).

For each language, the model runs over a token budget of that language's corpus (packed
windows, the statistics split) and the gradients of the loss are *summed* over batches, with
no optimiser step; the score of every entry of every decoder-layer weight matrix is
``|θ ⊙ G|`` where ``G`` is the gradient of the mean token NLL over the whole budget (the sum
of per-batch token NLL sums divided by the number of predicted tokens, so the score does not
depend on the batch size). Only the region parameters require gradients: embeddings, the LM
head and norms are not scored, which also spares their gradient memory.

Memory: the parameters, one gradient buffer per region parameter, and one batch of
activations for backpropagation; nothing grows with the token budget.

Files: ``OUT/importance/<lang>.safetensors``, one tensor per parameter (named as in
``lm.model.named_parameters()``), stored in bfloat16 by default: it keeps float32's exponent
range (scores span many orders of magnitude) with 8 bits of mantissa; ties this creates at a
region boundary are broken by index (see :mod:`langloc.regions.regions`). ``precision="float32"``
stores full precision at twice the size. The metadata records model, corpus, token budget and
window; ``importance.json`` describes the folder.

Resume: the summed gradients and the position are checkpointed atomically every
``checkpoint_every`` batches; ``resume=True`` continues an interrupted language. Under
torchrun the batches are split over processes and the gradients all-reduced (a float sum: equal
to a single-process run up to rounding order, unlike the integer activation counters).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from langloc import kinds
from langloc.artefacts import atomic_path, write_json
from langloc.data.lid_filter import LID_REPORT
from langloc.data.packing import corpus_windows, iter_batches
from langloc.errors import LanglocError
from langloc.manifest import check_same_model, make_manifest, read_manifest, read_safetensors_manifest, stamp
from langloc.regions.params import region_parameters

INFO_FILE = "importance.json"
PRECISIONS = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def importance_file(out: Path, lang: str) -> Path:
    return Path(out) / "importance" / f"{lang}.safetensors"


def _checkpoint_file(out: Path, lang: str, rank: int, world: int) -> Path:
    return Path(out) / "importance" / ".partial" / f"{lang}.rank{rank}-of-{world}.safetensors"


def _batch_nll_sum(lm, ids: torch.Tensor) -> torch.Tensor:
    logits = lm.model(input_ids=ids, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")


@dataclass
class ImportanceConfig:
    """``langloc importance``'s settings, with their defaults (stated here once):
    out: the region folder; languages: the languages scored (the core region sums over them);
    model, dtype (float32 recommended for the gradients), device, neuron_site: the model;
    corpus, seed (the order of documents), lid_filter (load_corpus's, e.g. ``{"threshold":
    0.5}``): the text; tokens: budget per language; window: tokens per packed window;
    batch_size: windows per forward/backward pass; precision: storage of the scores (bfloat16
    or float32); resume, checkpoint_every: continue an interrupted language, checkpoint every N
    batches."""

    out: Path
    languages: tuple[str, ...]
    model: str
    corpus: str = "bible"
    tokens: int = 16384
    window: int = 512
    batch_size: int = 1
    precision: str = "bfloat16"
    seed: int = 0
    dtype: str = "float32"
    device: Optional[str] = None
    neuron_site: Optional[str] = None
    resume: bool = False
    checkpoint_every: int = 25
    lid_filter: Optional[dict] = None


def compute_importance(
    lm,
    corpus,
    languages: list[str],
    out: str | Path,
    *,
    tokens: int = ImportanceConfig.tokens,
    window: int = ImportanceConfig.window,
    batch_size: int = ImportanceConfig.batch_size,
    precision: str = ImportanceConfig.precision,
    resume: bool = ImportanceConfig.resume,
    checkpoint_every: int = ImportanceConfig.checkpoint_every,
    progress: bool = True,
) -> Path:
    """Score every decoder-layer weight entry for each language; returns ``out``."""
    from langloc import distributed

    started = time.time()
    if tokens < window or window < 2 or batch_size < 1 or checkpoint_every < 1:
        raise LanglocError("tokens must be at least one window, window at least 2, batch_size and "
                           "checkpoint_every positive")
    if precision not in PRECISIONS:
        raise LanglocError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    corpus.check_languages(languages)
    out = Path(out)
    rank, world = distributed.rank_and_world()
    settings = {"corpus": corpus.describe(), "tokens": tokens, "window": window, "precision": precision}
    info_path = out / INFO_FILE
    if info_path.is_file():
        info = read_manifest(info_path, kinds.IMPORTANCE)
        check_same_model(info, lm.meta, f"importance folder {out}")
        for key, value in settings.items():
            if info.get(key) != value:
                raise LanglocError(f"{out} holds importance scores computed with {key}={info.get(key)!r}, not "
                                   f"{value!r}; use another --out")
    else:
        info = {"model": lm.meta, **settings, "languages": []}

    def manifest(kind: str) -> dict:
        return make_manifest(kind, model=lm.meta, corpus=settings["corpus"], split="stats",
                             config={k: v for k, v in settings.items() if k != "corpus"},
                             seeds={"data": settings["corpus"].get("seed")}, started=started)
    todo = [lang for lang in languages if not importance_file(out, lang).is_file()]
    partial = [lang for lang in todo if _checkpoint_file(out, lang, rank, world).is_file()]
    if partial and not resume:
        raise LanglocError(f"{out} holds an interrupted importance run of {', '.join(partial)}; pass --resume "
                           f"to continue it (or delete {out}/importance/.partial to start over)")

    params = region_parameters(lm)
    ckpt_settings = {**settings, "batch_size": batch_size, "world": world, "weights": lm.meta["weights_fingerprint"]}
    was_training = lm.model.training
    requires = {name: p.requires_grad for name, p in lm.model.named_parameters()}
    lm.model.eval()  # no dropout: the score is of the model as it is used
    for name, p in lm.model.named_parameters():
        p.requires_grad_(name in params)
    n_batches = -(-(tokens // window) // batch_size)
    try:
        for lang in todo:
            for p in params.values():
                p.grad = None
            ckpt = _checkpoint_file(out, lang, rank, world)
            done, predicted = 0, 0
            if ckpt.is_file():
                done, predicted = _load_checkpoint(ckpt, ckpt_settings, params)
            windows = corpus_windows(lm, corpus, lang, "stats", window=window, max_tokens=tokens, lazy=True)
            bar = tqdm(total=distributed.rank_share(n_batches, rank, world), initial=done, desc=f"importance {lang}",
                       unit="batch", disable=not progress or rank != 0, leave=False)
            for mine, batch in distributed.my_batches(iter_batches(windows, batch_size), rank, world, done):
                ids = batch.to(lm.device)
                # Gradients of token NLL *sums* accumulate in .grad; dividing by the token count
                # once at the end gives the gradient of the mean over the whole budget.
                _batch_nll_sum(lm, ids).backward()
                predicted += ids[:, 1:].numel()
                bar.update()
                if mine % checkpoint_every == 0:
                    _save_checkpoint(ckpt, ckpt_settings, params, mine, predicted)
            bar.close()
            grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).float() for name, p in params.items()}
            grads = distributed.all_reduce_sum({**grads, "__predicted__": torch.tensor([float(predicted)])}, lm.device)
            total = grads.pop("__predicted__").item()
            if rank == 0:
                dtype = PRECISIONS[precision]
                scores = {name: (p.detach().float().cpu() * (grads[name].cpu() / total)).abs().to(dtype).contiguous()
                          for name, p in params.items()}
                meta = stamp({"language": lang, **settings, "predicted_tokens": int(total),
                              "score": "|theta * dL/dtheta| (mean token NLL)"}, manifest(kinds.IMPORTANCE_SCORES))
                with atomic_path(importance_file(out, lang)) as tmp:
                    save_file(scores, str(tmp), metadata={"langloc": json.dumps(meta, ensure_ascii=False)})
                dropped = corpus.report(lang, "stats")
                if dropped is not None:  # what the language-ID filter dropped of the text read
                    info.setdefault(LID_REPORT, {})[lang] = dropped
                if lang not in info["languages"]:
                    info["languages"].append(lang)
                write_json(info_path, stamp(info, manifest(kinds.IMPORTANCE)))
            distributed.barrier()
            ckpt.unlink(missing_ok=True)
    finally:
        for p in params.values():
            p.grad = None
        for name, p in lm.model.named_parameters():
            p.requires_grad_(requires[name])
        lm.model.train(was_training)
    if rank == 0:
        for lang in languages:
            if lang not in info["languages"]:
                info["languages"].append(lang)
        write_json(info_path, stamp(info, manifest(kinds.IMPORTANCE)))
    distributed.barrier()
    return out


def _save_checkpoint(path: Path, settings: dict, params: dict, done: int, predicted: int) -> None:
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().contiguous()
             for name, p in params.items()}
    with atomic_path(path) as tmp:
        save_file(grads, str(tmp), metadata={"langloc_checkpoint": json.dumps(
            {"settings": settings, "next": done, "predicted": predicted})})


def _load_checkpoint(path: Path, settings: dict, params: dict) -> tuple[int, int]:
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["langloc_checkpoint"])
        grads = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any damage means the same thing to the user
        raise LanglocError(f"checkpoint {path} is unreadable ({exc}); delete it to start that language over") from None
    if meta["settings"] != settings:
        raise LanglocError(f"checkpoint {path} was made with other settings ({meta['settings']}); delete it or use them")
    for name, p in params.items():
        p.grad = grads[name].to(p.device, p.dtype)
    return meta["next"], meta["predicted"]


class LazyScores(Mapping):
    """One language's scores, ``param -> float32 tensor``, read from its file one matrix at a
    time (memory-mapped). All languages' scores of a 1.5B model held at once would need 31 GB in
    float32 (6 languages × 1.31 B entries); the regions are built one matrix at a time, so this
    keeps the peak at a few matrices."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = safe_open(str(path), "pt")
            self._keys = list(self._file.keys())
        except Exception as exc:  # noqa: BLE001 - any damage means the same thing to the user
            raise LanglocError(f"importance file {path} is unreadable (truncated or not safetensors): {exc}") from None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._keys:
            raise KeyError(name)
        try:
            return self._file.get_tensor(name).float()
        except Exception as exc:  # noqa: BLE001
            raise LanglocError(f"importance file {self.path} is unreadable at {name}: {exc}") from None

    def shape(self, name: str) -> list[int]:
        """A matrix's shape, read from the file's header (no data)."""
        return list(self._file.get_slice(name).get_shape())

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def load_importance(out: str | Path, languages: list[str] | None = None, lm=None) -> tuple[dict, dict]:
    """``(scores, info)``: ``scores[lang][param] -> float32 tensor``, read on access (see
    :class:`LazyScores`); refused for another model."""
    out = Path(out)
    info = read_manifest(out / INFO_FILE, kinds.IMPORTANCE)
    if lm is not None:
        check_same_model(info, lm.meta, f"importance scores in {out}")
    langs = languages or info["languages"]
    missing = [lang for lang in langs if not importance_file(out, lang).is_file()]
    if missing:
        raise LanglocError(f"{out} has no importance scores for {', '.join(missing)} (run `langloc importance`)")
    scores = {}
    for lang in langs:
        path = importance_file(out, lang)
        read_safetensors_manifest(path, kinds.IMPORTANCE_SCORES)
        scores[lang] = LazyScores(path)
    return scores, info
