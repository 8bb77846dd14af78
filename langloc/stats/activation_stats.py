"""Activation statistics per language, and the run folder that holds them.

A run folder::

    RUN/run.json                 the manifest (model, corpus, window, token budget, seed, ...: see
                                 langloc.manifest) and the languages; with --lid-filter, per
                                 language what the filter dropped (``lid_filter_report``)
    RUN/stats/<lang>.safetensors over_zero [L, I] int64, active_sum / act_sum [L, I] float64, n [1],
                                 resid_sum [L, H] float64 (sum of each layer's output, the
                                 residual stream; absent in runs made before it was added);
                                 the manifest in its metadata
    RUN/residual_sample/<lang>.safetensors
                                 with ``collect --residual-sample N`` only: N sampled tokens'
                                 residual states per layer, vectors [L, N, H] bfloat16
                                 (:mod:`langloc.stats.residual_sample`)

Each language is its own file, written atomically when that language is done, so adding a
language to a run computes only that language, and a killed run keeps the finished ones.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from langloc import kinds
from langloc.artefacts import atomic_path, write_json
from langloc.data.lid_filter import LID_REPORT
from langloc.data.packing import corpus_windows, iter_batches
from langloc.errors import LanglocError
from langloc.models.loading import DEFAULT_MODEL
from langloc.manifest import check_same_model, content, make_manifest, read_manifest, read_safetensors_manifest, stamp
from langloc.stats.counters import ActivationCounter, hidden_size, totals_from_state
from langloc.stats.residual_sample import ResidualSampler, save_residual_sample
from langloc.stats.residual_sample import describe as describe_sample

RUN_FILE = "run.json"
# Settings that must agree between a run folder and a later `collect` that adds languages.
_RUN_KEYS = ("corpus", "window", "tokens", "seed")


@dataclass
class ActivationStats:
    """Counts for K languages over L layers of I neurons."""

    languages: list[str]
    n: torch.Tensor  # [K] int64 tokens counted
    over_zero: torch.Tensor  # [K, L, I] int64
    active_sum: torch.Tensor  # [K, L, I] float64
    act_sum: torch.Tensor  # [K, L, I] float64
    meta: dict = field(default_factory=dict)
    resid_sum: torch.Tensor | None = None  # [K, L, H] float64, None if any language lacks it

    @property
    def num_layers(self) -> int:
        return self.over_zero.shape[1]

    @property
    def intermediate_size(self) -> int:
        return self.over_zero.shape[2]

    def activation_probability(self) -> torch.Tensor:
        """p[k, l, j] = over_zero / n, float64."""
        return self.over_zero.double() / self.n.double().view(-1, 1, 1)

    def mean_active_value(self) -> torch.Tensor:
        """Mean activation over the tokens where the neuron is active (0 if never active)."""
        return torch.where(self.over_zero > 0, self.active_sum / self.over_zero.clamp(min=1).double(), 0.0)

    def mean_activation(self) -> torch.Tensor:
        return self.act_sum / self.n.double().view(-1, 1, 1)

    def mean_residual(self, lang: str) -> torch.Tensor:
        """[L, H] float64: the mean residual-stream state after each decoder layer on ``lang``."""
        k = self.index(lang)
        if self.resid_sum is None:
            raise LanglocError("these statistics have no residual-stream sums (collected by an older langloc); "
                               "collect again into a new folder for DiffMean")
        return self.resid_sum[k] / self.n[k].double()

    def index(self, lang: str) -> int:
        try:
            return self.languages.index(lang)
        except ValueError:
            raise LanglocError(f"language {lang!r} not in these statistics ({', '.join(self.languages)})") from None

    @classmethod
    def load(cls, run: str | Path, languages: list[str] | None = None) -> "ActivationStats":
        run = Path(run)
        meta = read_run(run)
        langs = languages or meta["languages"]
        parts = [load_language(run, lang) for lang in langs]
        return cls(
            languages=list(langs),
            n=torch.cat([p["n"] for p in parts]),
            over_zero=torch.stack([p["over_zero"] for p in parts]),
            active_sum=torch.stack([p["active_sum"] for p in parts]),
            act_sum=torch.stack([p["act_sum"] for p in parts]),
            meta=meta,
            resid_sum=(torch.stack([p["resid_sum"] for p in parts]) if all("resid_sum" in p for p in parts)
                       else None),
        )


def read_run(run: Path) -> dict:
    if not Path(run).is_dir():
        raise LanglocError(f"run folder not found: {run} (make one with `langloc collect --out {run}`)")
    meta = read_manifest(Path(run) / RUN_FILE, kinds.RUN)
    if "model" not in meta or "languages" not in meta:
        raise LanglocError(f"{Path(run) / RUN_FILE} is a damaged langloc run file (no model or languages); "
                           "remake it with `langloc collect`")
    return meta


def language_file(run: Path, lang: str) -> Path:
    return Path(run) / "stats" / f"{lang}.safetensors"


def load_language(run: Path, lang: str) -> dict[str, torch.Tensor]:
    path = language_file(run, lang)
    if not path.is_file():
        raise LanglocError(f"no statistics for language {lang!r} in {run} (run `langloc collect` for it)")
    read_safetensors_manifest(path, kinds.STATS)
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise LanglocError(f"statistics file {path} is unreadable (truncated or not safetensors): {exc}") from None
    missing = {"n", "over_zero", "active_sum", "act_sum"} - set(tensors)
    if missing:
        raise LanglocError(f"statistics file {path} lacks {', '.join(sorted(missing))}")
    return tensors


def _run_manifest(kind: str, meta: dict, started: float | None) -> dict:
    return make_manifest(kind, model=meta.get("model"), corpus=meta.get("corpus"), split="stats",
                         config={k: meta[k] for k in ("window", "tokens", "imported") if k in meta},
                         seeds={"data": meta["seed"]} if "seed" in meta else {}, started=started)


def save_language_stats(run: Path, lang: str, totals: dict[str, torch.Tensor], meta: dict,
                        started: float | None = None) -> None:
    """One language's counter totals as ``RUN/stats/<lang>.safetensors`` (atomically), its
    manifest in the file's metadata; ``collect``, ``import-lape`` and ``validate``'s shards share it."""
    path = language_file(run, lang)
    doc = stamp({**content(meta), "language": lang}, _run_manifest(kinds.STATS, meta, started))
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in totals.items()}, str(tmp),
                  metadata={"langloc": json.dumps(doc, ensure_ascii=False)})


def write_run_meta(out: Path, meta: dict, started: float | None) -> None:
    """The run folder's ``run.json`` (atomically), stamped with its manifest."""
    write_json(Path(out) / RUN_FILE, stamp(meta, _run_manifest(kinds.RUN, meta, started)))


def _checkpoint_file(run: Path, lang: str, rank: int, world: int) -> Path:
    return Path(run) / "stats" / ".partial" / f"{lang}.rank{rank}-of-{world}.safetensors"


def _load_checkpoint(path: Path, expect: dict) -> tuple[dict, int]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["langloc_checkpoint"])
        state = load_file(path)
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise LanglocError(f"checkpoint {path} is unreadable ({exc}); delete it to start that language over") from None
    if meta["settings"] != expect:
        raise LanglocError(f"checkpoint {path} was made with other settings ({meta['settings']}); delete it or use them")
    return state, meta["next"]


@dataclass
class CollectConfig:
    """``langloc collect``'s settings, with their defaults (stated here once): out: the run
    folder; languages; model, dtype, device, neuron_site: the model; corpus, seed (the order of
    documents), lid_filter (load_corpus's language-ID filter, e.g. ``{"threshold": 0.5}``): the
    text; tokens: budget per language; window: tokens per packed window; batch_size: windows per
    forward pass; resume, checkpoint_every: continue from the last checkpoint, checkpoint every
    N batches; segments, segment_tokens: also store each neuron's mean response on N segments of
    that many tokens per language (expert units); residual_sample: keep a seeded sample of that
    many tokens' residual states per language and layer (:mod:`langloc.stats.residual_sample`)."""

    out: Path
    languages: tuple[str, ...]
    model: str = DEFAULT_MODEL
    corpus: str = "bible"
    tokens: int = 100_000
    window: int = 512
    batch_size: int = 4
    seed: int = 0
    dtype: str = "auto"
    device: Optional[str] = None
    neuron_site: Optional[str] = None
    resume: bool = False
    checkpoint_every: int = 50
    segments: int = 0
    segment_tokens: int = 32
    lid_filter: Optional[dict] = None
    residual_sample: int = 0


def collect(lm, corpus, config: CollectConfig, *, progress: bool = True, on_batch=None) -> ActivationStats:
    """Count neuron activations of ``lm`` on ``config.tokens`` tokens per language of
    ``config.languages`` into run folder ``config.out`` (``config``'s model, corpus and
    segment settings are :func:`langloc.workflows.collect_run`'s: here the model and the corpus
    are given).

    Languages already in ``out`` (same model and settings) are kept, not recomputed. Every
    ``checkpoint_every`` batches the counters and the position are checkpointed atomically;
    after a crash or kill, ``resume=True`` continues from the last checkpoint and gives the
    same result as an uninterrupted run. Under torchrun the batches are split over processes.
    ``on_batch(tokens)``, if given, is called after each batch this process counts (the demo
    times the first ones to print an estimate of the whole run). ``residual_sample`` N > 0 also
    keeps a seeded sample of N tokens' residual states per language and layer
    (:mod:`langloc.stats.residual_sample`); like the window and the token budget, a run
    folder's languages all share it.
    """
    from langloc import distributed

    started = time.time()
    c, languages = config, list(config.languages)
    out, tokens, window, batch_size, seed = c.out, c.tokens, c.window, c.batch_size, c.seed
    resume, checkpoint_every, residual_sample = c.resume, c.checkpoint_every, c.residual_sample
    if tokens < 1 or window < 2 or batch_size < 1 or checkpoint_every < 1:
        raise LanglocError("tokens, batch_size and checkpoint_every must be positive and window at least 2")
    if residual_sample < 0:
        raise LanglocError(f"--residual-sample must be 0 (none) or a positive number of tokens, got {residual_sample}")
    corpus.check_languages(languages)
    rank, world = distributed.rank_and_world()
    out = Path(out)
    settings = {"corpus": corpus.describe(), "window": window, "tokens": tokens, "seed": seed}
    run_path = out / RUN_FILE
    if run_path.is_file():
        meta = read_run(out)
        check_same_model(meta, lm.meta, f"run folder {out}")
        for key in _RUN_KEYS:
            if meta.get(key) != settings[key]:
                raise LanglocError(
                    f"run folder {out} was collected with {key}={meta.get(key)!r}, not {settings[key]!r}; "
                    "use another --out to collect with different settings"
                )
        had = (meta.get("residual_sample") or {}).get("size", 0)
        if had != residual_sample:
            raise LanglocError(f"run folder {out} was collected with residual_sample={had}, not {residual_sample}; "
                               "use another --out to collect with a different residual sample")
    else:
        meta = {"model": lm.meta, **settings, "languages": []}
    if residual_sample:
        meta["residual_sample"] = describe_sample(residual_sample, seed, lm.num_layers, hidden_size(lm))
    todo = [lang for lang in languages if not language_file(out, lang).is_file()]
    partial = [lang for lang in todo if _checkpoint_file(out, lang, rank, world).is_file()]
    if partial and not resume:
        raise LanglocError(
            f"{out} holds an interrupted collection of {', '.join(partial)}; pass --resume to continue it "
            f"(or delete {out}/stats/.partial to start over)"
        )
    torch.manual_seed(seed)
    ckpt_settings = {"tokens": tokens, "window": window, "batch_size": batch_size, "seed": seed,
                     "world": world, "weights": lm.meta["weights_fingerprint"]}
    if residual_sample:  # (only then: checkpoints written without a sample stay valid)
        ckpt_settings["residual_sample"] = residual_sample
    n_batches = -(-(tokens // window) // batch_size)
    counter = ActivationCounter(lm, skip_first_position=lm.add_bos)
    sampler = (ResidualSampler(lm, residual_sample, seed, skip_first_position=lm.add_bos) if residual_sample
               else None)
    with counter, sampler or contextlib.nullcontext(), torch.inference_mode():
        for lang in todo:
            # Windows are tokenised lazily: memory does not grow with the token budget.
            windows = corpus_windows(lm, corpus, lang, "stats", window=window, max_tokens=tokens, lazy=True)
            counter.reset()
            if sampler is not None:
                sampler.reset(lang)
            ckpt = _checkpoint_file(out, lang, rank, world)
            done = 0  # batches of this rank already counted
            if ckpt.is_file():
                state, done = _load_checkpoint(ckpt, ckpt_settings)
                counter.load_state(state)
                if sampler is not None:
                    sampler.load_state(state)
            bar = tqdm(total=distributed.rank_share(n_batches, rank, world), initial=done, desc=f"collect {lang}",
                       unit="batch", disable=not progress or rank != 0, leave=False)
            # b: the batch's index among all of the language's batches (its first window is b x batch_size)
            for mine, (b, batch) in distributed.my_batches(enumerate(iter_batches(windows, batch_size)), rank, world,
                                                           done):
                if sampler is not None:
                    sampler.plan(b * batch_size, batch)
                counter.run(batch)
                bar.update()
                if on_batch is not None:
                    on_batch(batch.numel())
                if mine % checkpoint_every == 0:
                    with atomic_path(ckpt) as tmp:
                        save_file({**counter.state(), **(sampler.state() if sampler is not None else {})}, str(tmp),
                                  metadata={"langloc_checkpoint": json.dumps(
                            {"settings": ckpt_settings, "next": mine})})
            bar.close()
            state = distributed.all_reduce_sum(counter.state(), lm.device)
            sample = sampler.result() if sampler is not None else None  # every process takes part
            if rank == 0:
                if sample is not None:  # before the statistics file, which marks the language done
                    save_residual_sample(out, lang, sample, {"model": lm.meta, **settings,
                                                             "residual_sample": meta["residual_sample"]}, started)
                save_language_stats(out, lang, totals_from_state(state), {"model": lm.meta, **settings}, started)
                dropped = corpus.report(lang, "stats")
                if dropped is not None:  # what the language-ID filter dropped of the text read
                    meta.setdefault(LID_REPORT, {})[lang] = dropped
                if lang not in meta["languages"]:
                    meta["languages"].append(lang)
                write_run_meta(out, meta, started)
            distributed.barrier()
            ckpt.unlink(missing_ok=True)
    if rank == 0:
        for lang in languages:
            if lang not in meta["languages"]:
                meta["languages"].append(lang)
        write_run_meta(out, meta, started)
    distributed.barrier()
    return ActivationStats.load(out, languages)


def save_run(out: str | Path, stats: ActivationStats) -> Path:
    """Write ``stats`` as a run folder (used by ``import-lape``; ``collect`` writes as it goes)."""
    started = time.time()
    out = Path(out)
    if (out / RUN_FILE).exists():
        raise LanglocError(f"{out} already holds a run; choose another --out")
    for k, lang in enumerate(stats.languages):
        totals = {"n": stats.n[k:k + 1].clone(), "over_zero": stats.over_zero[k].clone(),
                  "active_sum": stats.active_sum[k].clone(), "act_sum": stats.act_sum[k].clone()}
        if stats.resid_sum is not None:
            totals["resid_sum"] = stats.resid_sum[k].clone()
        save_language_stats(out, lang, totals, stats.meta, started)
    write_run_meta(out, {**content(stats.meta), "languages": stats.languages}, started)
    return out
