"""Per-shard activation statistics of a run: the same windows and batches as ``collect``, cut
into K contiguous blocks of batches.

``collect`` counts a language's ``tokens // window`` statistics windows in batches of
``batch_size``; shard ``j`` of ``K`` holds batches ``[j·B/K, (j+1)·B/K)`` (B batches, integer
division), so the shards are disjoint stretches of the corpus (different chapters of the
Bible, in the run's shuffled chapter order) and together are exactly the run's windows.
Counts are integers and the sums are fixed point per batch (:mod:`langloc.stats.counters`),
so on the machine and with the batch size that made the run, the shards' counters add up to
the run's bit for bit; :func:`compare_with_run` measures how far they are from it elsewhere.

Each shard is a run folder of its own (``SHARDS/shard<j>/run.json`` and
``stats/<lang>.safetensors``, with ``"shard": {"index", "of", "batches"}`` in the manifest), so
``ActivationStats.load`` and ``langloc identify`` read it. A language's shards are written as
each shard is finished, atomically; a killed run resumes from the shards already there, but
only from those counted with the same key (the run's corpus, window, tokens and seed, the
shards and batch size, and the model's dtype and device class: ``"key"`` in each shard's
metadata); the others are counted again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from langloc import kinds
from langloc.artefacts import compute_key
from langloc.data.packing import corpus_windows, iter_batches
from langloc.errors import LanglocError
from langloc.manifest import check_same_model, content, read_safetensors_manifest
from langloc.stats import ActivationStats
from langloc.stats.activation_stats import language_file, read_run, save_language_stats, write_run_meta
from langloc.stats.counters import ActivationCounter, totals_from_state


def shard_bounds(n_batches: int, shards: int) -> list[tuple[int, int]]:
    """``[start, stop)`` batch ranges of the ``shards`` contiguous shards of ``n_batches``."""
    if shards < 2 or shards > n_batches:
        raise LanglocError(f"--shards must be between 2 and the run's {n_batches} statistics batches per language, "
                           f"got {shards}")
    return [(j * n_batches // shards, (j + 1) * n_batches // shards) for j in range(shards)]


def shard_folder(root: Path, j: int) -> Path:
    return Path(root) / f"shard{j}"


def collect_shards(lm, corpus, run_meta: dict, languages: list[str], root: str | Path, *, shards: int,
                   batch_size: int = 4, progress: bool = True) -> list[ActivationStats]:
    """Count the run's statistics windows shard by shard into ``root/shard<j>``; returns the
    shards' statistics. Languages whose shards are all there are not recomputed.

    Under torchrun every process walks the same batches and counts batches b % W == rank of
    each shard; the counters are summed over the processes at the end of the shard (integers
    and fixed-point sums, as ``collect``'s: the same bits as one process) and the first
    process writes it. What is already on disk is decided by the first process, for all."""
    from langloc import distributed

    started = time.time()
    root = Path(root)
    rank, world = distributed.rank_and_world()
    check_same_model(run_meta, lm.meta, "the run")
    window, tokens, seed = run_meta["window"], run_meta["tokens"], run_meta.get("seed", 0)
    n_batches = -(-(tokens // window) // batch_size)
    bounds = shard_bounds(n_batches, shards)
    settings = {"corpus": run_meta["corpus"], "window": window, "tokens": tokens, "seed": seed}
    key = {**settings, "shards": shards, "batch_size": batch_size, "model": compute_key(lm)}
    plan = None
    if rank == 0:
        fresh = {j for j in range(shards) if _made_with(shard_folder(root, j), key)}  # the others are counted anew
        plan = (fresh, {lang: [j for j in range(shards) if not (j in fresh and _kept(shard_folder(root, j), lang, key))]
                        for lang in languages})
    fresh, todo_of = distributed.broadcast_object(plan)
    counter = ActivationCounter(lm, skip_first_position=lm.add_bos)
    with counter, torch.inference_mode():
        for lang in languages:
            todo = todo_of[lang]
            if not todo:
                continue
            windows = corpus_windows(lm, corpus, lang, "stats", window=window, max_tokens=tokens, lazy=True)
            bar = tqdm(total=sum(len(range(bounds[j][0] + (rank - bounds[j][0]) % world, bounds[j][1], world))
                                 for j in todo), desc=f"shards {lang}", unit="batch",
                       disable=not progress or rank != 0, leave=False)
            j, counter_shard, filled = 0, None, set()
            for b, batch in enumerate(iter_batches(windows, batch_size)):
                while b >= bounds[j][1]:
                    j += 1
                if j not in todo:
                    continue  # this shard is already on disk: skip its batches without the model
                if counter_shard != j:
                    counter.reset()  # on every process, whether or not it counts a batch of this shard
                    counter_shard = j
                if b % world == rank:
                    counter.run(batch)
                    bar.update()
                if b == bounds[j][1] - 1:
                    state = distributed.all_reduce_sum(counter.state(), lm.device)
                    if rank == 0:
                        _save_shard(root, j, shards, bounds[j], lang, totals_from_state(state), lm,
                                    {**settings, "key": key}, started, anew=j not in fresh)
                    fresh.add(j)
                    filled.add(j)
            bar.close()
            missing = [j for j in todo if j not in filled]
            if missing:
                raise LanglocError(f"the {lang} statistics ran out before shard(s) {missing} were filled: the "
                                   "corpus changed since the run was collected")
    distributed.barrier()  # the first process has written every shard before any reads them
    return [load_shard(root, j, languages) for j in range(shards)]


def _made_with(folder: Path, key: dict) -> bool:
    """Whether the shard folder's run.json was written with ``key`` (not: another dtype, ...)."""
    try:
        return read_run(folder).get("key") == json.loads(json.dumps(key))
    except LanglocError:
        return False


def _kept(folder: Path, lang: str, key: dict) -> bool:
    """Whether ``lang``'s shard file is there and was counted with ``key``."""
    path = language_file(folder, lang)
    try:
        return path.is_file() and content(read_safetensors_manifest(path, kinds.STATS)).get("key") == \
            json.loads(json.dumps(key))
    except LanglocError:
        return False


def _save_shard(root: Path, j: int, shards: int, bounds: tuple[int, int], lang: str, totals: dict, lm,
                settings: dict, started: float, anew: bool) -> None:
    """Write ``lang``'s shard ``j``; ``anew``: the folder's run.json is stale (another key) and
    is started again, listing only the languages counted with this key."""
    folder = shard_folder(root, j)
    shard = {"index": j, "of": shards, "batches": list(bounds)}
    save_language_stats(folder, lang, totals, {"model": lm.meta, **settings, "shard": shard}, started)
    path = folder / "run.json"
    meta = read_run(folder) if path.is_file() and not anew else {"model": lm.meta, **settings, "shard": shard,
                                                                  "languages": []}
    if lang not in meta["languages"]:
        meta["languages"].append(lang)
    write_run_meta(folder, meta, started)


def load_shard(root: str | Path, j: int, languages: list[str]) -> ActivationStats:
    return ActivationStats.load(shard_folder(root, j), languages)


def sum_stats(parts: list[ActivationStats]) -> ActivationStats:
    """The statistics of the union of disjoint shards (counters add up)."""
    first = parts[0]
    if any(p.languages != first.languages for p in parts):
        raise LanglocError("shards cover different languages")
    return ActivationStats(list(first.languages), sum(p.n for p in parts), sum(p.over_zero for p in parts),
                           sum(p.active_sum for p in parts), sum(p.act_sum for p in parts), dict(first.meta))


def compare_with_run(parts: list[ActivationStats], full: ActivationStats) -> dict:
    """How the shards' summed counters compare with the run's: token counts must be equal;
    activation counts are equal bit for bit where the model computes as it did for the run."""
    total = sum_stats(parts)
    if not torch.equal(total.n, full.n):
        raise LanglocError(f"the shards hold {total.n.tolist()} tokens per language, the run "
                           f"{full.n.tolist()}: they are not the run's windows (other corpus or settings)")
    diff = (total.over_zero - full.over_zero).abs()
    return {"tokens_equal": True,
            "over_zero_equal": bool(torch.equal(total.over_zero, full.over_zero)),
            "over_zero_entries_differing": int((diff > 0).sum()),
            "over_zero_max_abs_difference": int(diff.max()),
            "activation_probability_max_abs_difference": float((diff.double() / full.n.double().view(-1, 1, 1)).max()),
            "act_sum_max_abs_difference": float((total.act_sum - full.act_sum).abs().max())}
