"""Further pre-training on one language with a frozen region, and the forgetting it causes.

Zhang et al. (ACL 2024) freeze the *core linguistic region* while continuing pre-training on
a new language and find that perplexity on the languages the model already knew rises much
less than without freezing, while the new language is still learnt. :func:`forgetting` runs
that experiment with its control: the same training (same seed, data order, steps and
schedule) with the core region frozen, a random region of the same size per parameter frozen,
and nothing frozen.

An output folder of :func:`train`::

    OUT/train.json         the manifest (langloc.manifest), settings, frozen region (size, digest),
                           final summary
    OUT/perplexity.csv     step, language, ppl   (held-out "eval" split; step 0 = before training)
    OUT/window_nll.csv     step, language, window, nll, tokens (the same evaluations per held-out window:
                           paired intervals over windows, see :func:`forgetting`)
    OUT/loss.csv           step, loss, lr        (training loss of every step)
    OUT/plots/training.png perplexity / perplexity at step 0 against step, per language
    OUT/checkpoint.pt      while running: everything needed to resume (removed when done)

:func:`forgetting` writes one such folder per mode (``OUT/core``, ``OUT/random``,
``OUT/none``) and returns the rows of ``OUT/forgetting.csv`` (mode, step, language, ppl, ratio)
and ``OUT/summary.csv``, which :mod:`langloc.studies.train` writes with
``OUT/plots/forgetting.png`` and ``OUT/forgetting.manifest.json``.

Training keeps the parameters in float32 (they are the master weights) and runs the forward
pass under ``torch.autocast`` (``precision="bf16"``, or ``"fp16"`` with a GradScaler);
perplexity is evaluated in float32. The data order is a function of the seed and the step
only, so a resumed run, and every freezing mode, sees the same batches.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from langloc import kinds
from langloc.artefacts import atomic_path, weights_fingerprint, write_csv, write_json
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.evaluate.perplexity import window_nll
from langloc.manifest import check_same_model, make_manifest, read_manifest, stamp
from langloc.regions import Region, check_region, region_size
from langloc.train.freezing import RegionFreezer, check_region_tensors, optimizer_step
from langloc.train.plots import plot_training

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FREEZE_MODES = ("core", "random", "none")  # what is frozen: the core region, a random one, nothing

CHECKPOINT = "checkpoint.pt"
RESULT = "train.json"
PPL_CSV = "perplexity.csv"
WINDOW_CSV = "window_nll.csv"
LOSS_CSV = "loss.csv"
MIN_LR_RATIO = 0.1  # the cosine schedule decays to 10% of the peak learning rate
BETAS = (0.9, 0.95)
EPS = 1e-8


@dataclass
class TrainSettings:
    """How :func:`train` trains (and :func:`forgetting`, the same way in every mode): ``steps``
    optimiser steps of ``batch_size`` windows of ``window`` tokens; AdamW with peak ``lr`` and
    ``weight_decay`` (matrices only), ``warmup`` steps of linear warm-up then cosine decay,
    gradient clipping at ``max_grad_norm`` (None: none); the forward pass in ``precision``;
    ``seed``: the data order (and dropout); held-out perplexity of the trained language and
    ``eval_languages`` on ``eval_tokens`` tokens, every ``eval_every`` steps; a checkpoint every
    ``checkpoint_every`` steps. Checked by :func:`train` before anything is written."""

    steps: int = 200
    batch_size: int = 8
    window: int = 512
    lr: float = 2e-5
    weight_decay: float = 0.1
    warmup: int = 20
    seed: int = 0
    eval_languages: list[str] | tuple = ()
    eval_tokens: int = 8192
    eval_every: int = 50
    checkpoint_every: int = 100
    max_grad_norm: float | None = 1.0
    precision: str = "bf16"


@dataclass
class Forgetting:
    """What :func:`forgetting` computes: the rows of forgetting.csv (mode, step, language, ppl,
    ratio) and of summary.csv (per mode and language: perplexity at the start and the end, their
    ratio, with paired intervals), and the frozen entries per mode."""

    rows: list[dict]
    summary: list[dict]
    frozen_entries: dict


@dataclass
class TrainResult:
    out: Path
    rows: list[dict]  # step, language, ppl
    losses: list[dict]  # step, loss, lr
    meta: dict = field(default_factory=dict)  # the contents of train.json
    reused: bool = False  # True: a finished run with the same settings was found in `out`
    windows: list[dict] = field(default_factory=list)  # step, language, window, nll, tokens

    def ppl(self, step: int, language: str) -> float:
        for r in self.rows:
            if r["step"] == step and r["language"] == language:
                return r["ppl"]
        raise KeyError((step, language))


def region_digest(region: Region | None) -> str | None:
    """A short hash of a region's names and indices (None for no region)."""
    if region is None:
        return None
    h = hashlib.sha256()
    for name in sorted(region):
        idx = region[name].to("cpu", torch.long).unique()
        h.update(f"{name}:{idx.numel()};".encode())
        h.update(idx.numpy().tobytes())
    return h.hexdigest()[:16]


def _seed_for(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def random_region_like(lm, region: Region, seed: int = 0) -> Region:
    """The control for ``region``: in every parameter it names, as many distinct entries,
    drawn uniformly at random (deterministic for ``seed``; each parameter drawn independently)."""
    check_region_tensors(region, "region")
    params = check_region(lm, region)
    out = {}
    for name in sorted(region):
        k = int(region[name].unique().numel())
        g = torch.Generator().manual_seed(_seed_for("random_region_like", seed, name))
        out[name] = torch.randperm(params[name].numel(), generator=g)[:k].sort().values
    return out


def lr_at(step: int, *, lr: float, warmup: int, steps: int) -> float:
    """Learning rate of optimiser step ``step`` (1-based): linear warm-up to ``lr`` over the
    first ``warmup`` steps, then cosine decay from ``lr`` towards ``MIN_LR_RATIO * lr``
    (reached one step after the last)."""
    if step <= warmup:
        return lr * step / warmup
    t = (step - warmup - 1) / (steps - warmup)
    return lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * t)))


class _Batches:
    """Batch ``s`` = samples ``s*B .. s*B+B-1`` of an endless stream of shuffled passes over
    the windows; pass ``e`` is a permutation seeded by (seed, e). A function of the step only,
    so a resumed run continues with the very next batch."""

    def __init__(self, windows: torch.Tensor, batch_size: int, seed: int):
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.windows), generator=torch.Generator().manual_seed(
                _seed_for("train-data", self.seed, epoch)))}
        return self._perms[epoch]

    def __call__(self, step: int) -> torch.Tensor:
        n = len(self.windows)
        rows = [self._perm(g // n)[g % n] for g in range(step * self.batch_size, (step + 1) * self.batch_size)]
        return self.windows[torch.stack(rows)]


def _validate(*, steps, batch_size, window, lr, weight_decay, warmup, eval_tokens, eval_every, checkpoint_every,
              max_grad_norm, precision) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise LanglocError(message)

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("window", window, 2),
                             ("warmup", warmup, 0), ("eval_every", eval_every, 1),
                             ("checkpoint_every", checkpoint_every, 1), ("eval_tokens", eval_tokens, 1)):
        need(is_int(value) and value >= low, f"{name} must be an integer >= {low}, got {value!r}")
    need(isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0, f"lr must be a positive number, got {lr!r}")
    need(isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0,
         f"weight_decay must be >= 0, got {weight_decay!r}")
    need(warmup <= steps, f"warmup ({warmup}) must not exceed steps ({steps})")
    need(eval_tokens >= window, f"eval_tokens ({eval_tokens}) must be at least one window ({window} tokens)")
    need(max_grad_norm is None or (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0),
         f"max_grad_norm must be positive (or None for no clipping), got {max_grad_norm!r}")
    need(precision in PRECISIONS, f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")


def _check_model(lm, precision: str) -> None:
    low = sorted({str(p.dtype).replace("torch.", "") for p in lm.model.parameters() if p.dtype != torch.float32})
    if low:
        raise LanglocError(
            f"training needs float32 parameters (the master weights; precision={precision} only sets the "
            f"autocast dtype of the forward pass), but the model has {', '.join(low)}: load it with dtype='float32'"
        )
    if precision == "bf16" and lm.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LanglocError("this GPU does not support bfloat16; use precision='fp16' or 'fp32'")


def check_region_meta(lm, region_meta: dict | None, what: str) -> None:
    """Refuse a region whose artefact metadata (``{"model": ..., "shapes": {name: shape}}``, as
    in a langloc region file) names another model or other parameter shapes."""
    if region_meta is None:
        return
    check_same_model(region_meta, lm.meta, what)
    named = dict(lm.model.named_parameters())
    for name, shape in (region_meta.get("shapes") or {}).items():
        if name in named and list(named[name].shape) != list(shape):
            raise LanglocError(f"{what} was made for a model whose {name!r} has shape {list(shape)}, "
                               f"but the loaded model's has {list(named[name].shape)}")


def _autocast(lm, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=lm.device.type, dtype=dtype)


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{"step": int(r["step"]), "language": r["language"], "ppl": float(r["ppl"])} for r in csv.DictReader(fh)]


def _read_windows(path: Path) -> list[dict]:
    if not path.is_file():  # a run finished before window NLLs were recorded
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{"step": int(r["step"]), "language": r["language"], "window": int(r["window"]), "nll": float(r["nll"]),
                 "tokens": int(r["tokens"])} for r in csv.DictReader(fh)]


def _settings_diff(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)


def _save_checkpoint(path: Path, *, settings: dict, step: int, batch_size: int, params: dict, optimizer, scaler,
                     rows: list[dict], losses: list[dict], windows: list[dict]) -> None:
    state = {
        "settings": json.dumps(settings, sort_keys=True),
        "step": step,
        "next_sample": step * batch_size,  # the data position (batches are a function of the step)
        "params": {name: p.detach().cpu() for name, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "rows": json.dumps(rows),
        "losses": json.dumps(losses),
        "windows": json.dumps(windows),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, settings: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["settings"])
    except Exception as exc:  # torch.load raises many types for damaged files
        raise LanglocError(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                           "delete it to start the training over") from None
    if saved != json.loads(json.dumps(settings, sort_keys=True)):
        raise LanglocError(f"checkpoint {path} was made with other settings ({_settings_diff(saved, settings)}); "
                           "resume with the same model, corpus and settings, or delete it to start over")
    return state


def train(
    lm,
    corpus,
    lang: str,
    settings: TrainSettings = TrainSettings(),
    *,
    frozen: Region | None = None,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    region_meta: dict | None = None,
    label: str | None = None,
) -> TrainResult:
    """Further pre-train ``lm`` (in place) on ``lang``'s "stats" split with ``frozen`` kept
    bit-identical, as ``settings`` say (:class:`TrainSettings`), evaluating held-out perplexity
    of ``lang`` and the settings' ``eval_languages``.

    AdamW (betas 0.9/0.95; weight decay on matrices only), linear warm-up then cosine decay,
    gradient clipping at ``max_grad_norm``. Perplexity is measured at step 0, every
    ``eval_every`` steps and at the last step. Every ``checkpoint_every`` steps everything
    needed to continue is checkpointed atomically to ``OUT/checkpoint.pt``; ``resume=True``
    continues from it and gives the same result as an uninterrupted run (bitwise on CPU).
    A finished run in ``out`` with the same settings is returned as is, without training.
    ``region_meta``: the metadata of the region's artefact (``{"model": ...}``), checked
    against the model. ``label`` names the run in the progress bar and the plot title.
    """
    started = time.time()
    t = settings
    steps, batch_size, window, lr, weight_decay, warmup = t.steps, t.batch_size, t.window, t.lr, t.weight_decay, t.warmup
    seed, eval_languages, eval_tokens, eval_every = t.seed, t.eval_languages, t.eval_tokens, t.eval_every
    checkpoint_every, max_grad_norm, precision = t.checkpoint_every, t.max_grad_norm, t.precision
    _validate(steps=steps, batch_size=batch_size, window=window, lr=lr, weight_decay=weight_decay, warmup=warmup,
              eval_tokens=eval_tokens, eval_every=eval_every, checkpoint_every=checkpoint_every,
              max_grad_norm=max_grad_norm, precision=precision)
    eval_langs = list(dict.fromkeys(x for x in eval_languages if x != lang))  # the trained one comes first
    corpus.check_languages([lang] + eval_langs)
    _check_model(lm, precision)
    if frozen is not None:
        check_region_tensors(frozen, "the frozen region")
        check_region(lm, frozen, "the frozen region")
    check_region_meta(lm, region_meta, "the frozen region")
    out = Path(out)
    ckpt_path = out / CHECKPOINT

    # Everything that makes two runs the same run: a checkpoint or finished run is used only
    # if all of it agrees. The model is identified by its weights *now* (lm.meta may be stale).
    windows = corpus_windows(lm, corpus, lang, "stats", window=window, max_tokens=steps * batch_size * window)
    settings = {
        "language": lang, "eval_languages": eval_langs, "corpus": corpus.describe(), "steps": steps,
        "batch_size": batch_size, "window": window, "lr": lr, "weight_decay": weight_decay, "warmup": warmup,
        "seed": seed, "eval_tokens": eval_tokens, "eval_every": eval_every, "max_grad_norm": max_grad_norm,
        "precision": precision, "betas": list(BETAS), "eps": EPS, "min_lr_ratio": MIN_LR_RATIO,
        "model_weights": weights_fingerprint(lm.model),
        "frozen": {"entries": region_size(frozen) if frozen is not None else 0, "digest": region_digest(frozen)},
        "data": {"windows": len(windows), "sha256": hashlib.sha256(windows.numpy().tobytes()).hexdigest()[:16]},
    }

    if (out / RESULT).is_file():
        done = read_manifest(out / RESULT, kinds.TRAIN)
        if "settings" not in done:
            raise LanglocError(f"{out / RESULT} is not a langloc training result")
        if done["settings"] != json.loads(json.dumps(settings)):
            raise LanglocError(f"{out} already holds a finished training run with other settings "
                               f"({_settings_diff(done['settings'], settings)}); choose another --out")
        return TrainResult(out, _read_rows(out / PPL_CSV), [], done, reused=True,
                           windows=_read_windows(out / WINDOW_CSV))
    if ckpt_path.is_file() and not resume:
        raise LanglocError(f"{out} holds an interrupted training run ({CHECKPOINT}); pass --resume to continue it "
                           f"(or delete {ckpt_path} to start over)")

    # The freezer saves the frozen values from the model as given, i.e. the original weights,
    # also when resuming (the checkpoint's weights are loaded after it).
    freezer = RegionFreezer(lm, frozen, "the frozen region") if frozen is not None else None
    named = dict(lm.model.named_parameters())
    params = {n: p for n, p in named.items() if p.requires_grad}
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": weight_decay},
         {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}],  # norms, biases
        lr=lr, betas=BETAS, eps=EPS)
    scaler = torch.amp.GradScaler(lm.device.type) if precision == "fp16" else None

    eval_windows = {lg: corpus_windows(lm, corpus, lg, "eval", window=window, max_tokens=eval_tokens)
                    for lg in [lang] + eval_langs}
    batches = _Batches(windows, batch_size, seed)
    start, rows, losses, wrows = 0, [], [], []
    if resume and ckpt_path.is_file():
        state = _load_checkpoint(ckpt_path, settings)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        start, rows, losses = state["step"], json.loads(state["rows"]), json.loads(state["losses"])
        wrows = json.loads(state.get("windows", "[]"))
        if freezer is not None and freezer.mismatches():
            raise LanglocError(f"checkpoint {ckpt_path} does not hold the frozen region at its original values; "
                               "delete it to start over")
    else:
        torch.manual_seed(seed)  # dropout, where the model has it

    def evaluate(step: int) -> None:
        lm.model.eval()
        for lg, w in eval_windows.items():
            nlls = window_nll(lm, w, batch_size)
            tokens = w.shape[1] - 1
            rows.append({"step": step, "language": lg, "ppl": math.exp(nlls.sum().item() / (tokens * len(w)))})
            wrows.extend({"step": step, "language": lg, "window": i, "nll": float(v), "tokens": tokens}
                         for i, v in enumerate(nlls.tolist()))
        lm.model.train()
        write_csv(out / PPL_CSV, rows, ["step", "language", "ppl"])
        write_csv(out / WINDOW_CSV, wrows, ["step", "language", "window", "nll", "tokens"])

    name = label or lang
    out.mkdir(parents=True, exist_ok=True)
    lm.model.train()
    try:
        if start == 0:
            evaluate(0)
        bar = tqdm(total=steps, initial=start, desc=f"train {name}", unit="step", disable=not progress, leave=False)
        busy, ran = 0.0, 0  # seconds in training steps (not evaluation or checkpoints), steps run
        for step in range(start + 1, steps + 1):
            t0 = time.perf_counter()
            ids = batches(step - 1).to(lm.device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, lr=lr, warmup=warmup, steps=steps)
            with _autocast(lm, precision):
                logits = lm.model(input_ids=ids, use_cache=False).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            del logits
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            value = loss.item()
            if scaler is None and not math.isfinite(value):
                raise LanglocError(f"training diverged at step {step} (loss {value}); lower the learning rate")
            _step(optimizer, params.values(), freezer=freezer, scaler=scaler, max_grad_norm=max_grad_norm)
            losses.append({"step": step, "loss": value, "lr": optimizer.param_groups[0]["lr"]})
            if lm.device.type == "cuda":
                torch.cuda.synchronize()
            busy, ran = busy + time.perf_counter() - t0, ran + 1
            bar.update()
            bar.set_postfix(loss=f"{value:.3f}")
            if step % eval_every == 0 or step == steps:
                evaluate(step)
            if step % checkpoint_every == 0 and step < steps:
                _save_checkpoint(ckpt_path, settings=settings, step=step, batch_size=batch_size, params=params,
                                 optimizer=optimizer, scaler=scaler, rows=rows, losses=losses, windows=wrows)
        seconds = busy / ran if ran else None
        bar.close()
    finally:
        lm.model.eval()
        lm.meta["weights_fingerprint"] = weights_fingerprint(lm.model)  # the weights have changed

    if freezer is not None and freezer.mismatches():  # cannot happen; never report a broken run as frozen
        raise RuntimeError(f"{freezer.mismatches()} frozen entries changed during training")
    write_csv(out / LOSS_CSV, losses, ["step", "loss", "lr"])
    summary = {}
    for lg in eval_windows:
        first = next(r["ppl"] for r in rows if r["language"] == lg and r["step"] == 0)
        last = next(r["ppl"] for r in rows if r["language"] == lg and r["step"] == steps)
        summary[lg] = {"ppl_start": first, "ppl_end": last, "ratio": last / first}
    trained_from = {**lm.meta, "weights_fingerprint": settings["model_weights"]}  # the weights trained from
    manifest = make_manifest(kinds.TRAIN, model=trained_from, corpus=settings["corpus"],
                             split={"train": "stats", "eval": "eval"},
                             config={k: v for k, v in settings.items() if k not in ("corpus", "seed")},
                             seeds={"data": seed}, started=started)
    meta = stamp({
        "settings": settings,
        # Checked bit for bit after the last step (None: nothing was frozen).
        "frozen_verified_identical": True if freezer is not None else None,
        "frozen_names": freezer.names if freezer else [],
        "trained_weights_fingerprint": lm.meta["weights_fingerprint"],
        "seconds_per_step": seconds,  # of this call's steps (None if it only finished evaluating)
        "tokens_trained": steps * batch_size * window,
        "passes_over_data": steps * batch_size / len(windows), "perplexity": summary,
    }, manifest)
    plot_training(rows, out / "plots" / "training.png", lang,
                  f"Further pre-training on {lang}" + (f" ({label})" if label else "") + ": held-out perplexity")
    write_json(out / RESULT, meta)  # last: its presence marks the run as finished
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(out, rows, losses, meta, windows=wrows)


def _step(optimizer, parameters, **kwargs):
    """One optimiser step (a separate function so that tests can interrupt training here)."""
    return optimizer_step(optimizer, parameters, **kwargs)


def _window_nll(windows: list[dict], step: int, language: str) -> tuple[list[float], list[int]]:
    got = sorted((w["window"], w["nll"], w["tokens"]) for w in windows if w["step"] == step and w["language"] == language)
    return [g[1] for g in got], [g[2] for g in got]


def add_intervals(summary: list[dict], windows: dict[str, list[dict]], last: int) -> None:
    """Add 95% paired intervals over held-out windows to ``summary``'s rows (mode,
    language): ``ratio_lo/hi`` for perplexity after / before training, and ``vs_none`` (with
    ``vs_none_lo/hi``) for perplexity after training in this mode / after training with nothing
    frozen, on the same windows. Rows whose mode has no window NLLs (older runs) get none."""
    from langloc.evaluate.intervals import perplexity_ratio_ci

    for row in summary:
        mode, lg = row["mode"], row["language"]
        start, tokens = _window_nll(windows.get(mode, []), 0, lg)
        end, _ = _window_nll(windows.get(mode, []), last, lg)
        if not start or len(start) != len(end):
            continue
        row["ratio_lo"], row["ratio_hi"] = perplexity_ratio_ci(start, end, tokens)
        ref, _ = _window_nll(windows.get("none", []), last, lg)
        if len(ref) == len(end):
            row["vs_none"] = math.exp((sum(end) - sum(ref)) / sum(tokens))
            row["vs_none_lo"], row["vs_none_hi"] = perplexity_ratio_ci(ref, end, tokens)


def forgetting(
    lm,
    corpus,
    lang: str,
    core: Region,
    settings: TrainSettings = TrainSettings(),
    *,
    out: str | Path,
    modes: list[str] | tuple = FREEZE_MODES,
    resume: bool = False,
    progress: bool = True,
    control: Region | None = None,
    region_meta: dict | None = None,
) -> Forgetting:
    """Train the same way (``settings``) in each of ``modes`` ("core": ``core`` frozen; "random":
    a random region of the same size per parameter frozen, see :func:`random_region_like`;
    "none": nothing frozen), each from the original weights, into ``OUT/<mode>`` (:func:`train`:
    its own train.json; modes already finished there are not retrained). Returns the rows of
    forgetting.csv and summary.csv (:class:`Forgetting`), which :mod:`langloc.studies.train`
    writes with ``plots/forgetting.png`` and the manifest. ``control``: the region frozen in
    mode "random" (e.g. a region file's ``random``); default :func:`random_region_like`
    ``(core, settings.seed)``. ``region_meta``: the region file's metadata (model, shapes),
    checked against ``lm``. The model is left at its original weights.
    """
    modes = list(modes)
    bad = [m for m in modes if m not in FREEZE_MODES]
    if not modes or bad:
        raise LanglocError(f"unknown mode(s) {', '.join(bad) or '(none given)'}; use {', '.join(FREEZE_MODES)}")
    if len(set(modes)) != len(modes):
        raise LanglocError(f"mode listed twice: {', '.join(modes)}")
    check_region_tensors(core, "the core region")
    check_region(lm, core, "the core region")
    if control is not None:
        check_region_tensors(control, "the control region")
        check_region(lm, control, "the control region")
    check_region_meta(lm, region_meta, "the core region")
    if region_size(core) == 0 and any(m != "none" for m in modes):
        raise LanglocError("the core region is empty; nothing to freeze")
    if control is None and "random" in modes:
        control = random_region_like(lm, core, settings.seed)
    regions = {"core": core, "random": control, "none": None}
    out = Path(out)
    # Every mode starts from the original weights: keep a copy (on the CPU) to restore them.
    original = {n: p.detach().to("cpu", copy=True) for n, p in lm.model.named_parameters()}
    original_fp = lm.meta.get("weights_fingerprint")
    combined, windows = [], {}
    try:
        for mode in modes:
            result = train(lm, corpus, lang, settings, frozen=regions[mode], out=out / mode, resume=resume,
                           progress=progress, label=f"{mode}")
            if not result.reused:
                with torch.no_grad():
                    for n, p in lm.model.named_parameters():
                        p.copy_(original[n])
                lm.meta["weights_fingerprint"] = original_fp
            windows[mode] = result.windows
            base = {r["language"]: r["ppl"] for r in result.rows if r["step"] == 0}
            combined += [{"mode": mode, **r, "ratio": r["ppl"] / base[r["language"]]} for r in result.rows]
    finally:
        with torch.no_grad():
            for n, p in lm.model.named_parameters():
                p.copy_(original[n])
        lm.meta["weights_fingerprint"] = original_fp
    last = max(r["step"] for r in combined)
    summary = [{"mode": r["mode"], "language": r["language"], "trained": r["language"] == lang,
                "ppl_start": next(s["ppl"] for s in combined if s["mode"] == r["mode"] and s["step"] == 0
                                  and s["language"] == r["language"]),
                "ppl_end": r["ppl"], "ratio": r["ratio"]} for r in combined if r["step"] == last]
    add_intervals(summary, windows, last)
    return Forgetting(combined, summary, {m: region_size(r) if r is not None else 0
                                          for m, r in regions.items() if m in modes})
