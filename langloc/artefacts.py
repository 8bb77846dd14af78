"""Files that carry their own metadata, written atomically.

Every artefact (statistics, neuron sets, tables) records which model it was made for. A
model is identified by a *fingerprint* of its weights and tokenizer, so an artefact made for
another model (or another checkpoint of the same architecture) is refused instead of being
silently applied to the wrong neurons.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from langloc.errors import LanglocError

# A fixed multilingual probe: two tokenizers that split it identically and have the same
# vocabulary size are treated as the same tokenizer.
_TOKENIZER_PROBE = (
    "The quick brown fox. Le renard brun rapide. El zorro marrón. Быстрая лиса. 快速的棕色狐狸。"
    " 素早い茶色の狐。 الثعلب البني. तेज़ भूरी लोमड़ी। Con cáo nâu. Rubah cokelat. 1234 <tag>\n\t"
)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A crash, Ctrl-C or full disk while writing leaves the previous file (or none), never a
    half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the artefact the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def cached_step(folder: str | os.PathLike | None, name: str, settings: dict, compute,
                seconds: dict | None = None) -> Any:
    """The JSON result of one finished step of a long study, kept in ``folder/name.json``
    with the ``settings`` that made it, so a killed run resumes after its last finished step.

    A file made with other settings is recomputed (and overwritten), never reused; with
    ``folder`` None nothing is kept. ``compute()`` must return plain JSON data. The time the
    step took when it was computed is kept beside it and, if ``seconds`` is given, entered there
    under ``name`` (None for a step kept before timings were), so a study resumed over several
    invocations can still say what its whole computation cost.
    """
    path = Path(folder) / f"{name}.json" if folder is not None else None
    key = json.loads(json.dumps(settings, default=str))
    kept = _kept_step(path, key)
    if kept is not None:
        result, took = kept
    else:
        result, took = _compute_step(path, key, compute, write=True)
    if seconds is not None:
        seconds[name] = took
    return result


def _kept_step(path: Path | None, key) -> tuple[Any, float | None] | None:
    """(result, seconds) of the step kept at ``path`` if it was made with ``key``, else None."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        doc = None  # absent, or damaged by hand (files are written atomically): compute it again
    if isinstance(doc, dict) and doc.get("settings") == key and "result" in doc:
        return doc["result"], doc.get("seconds")
    return None


def _compute_step(path: Path | None, key, compute, write: bool) -> tuple[Any, float]:
    t = time.perf_counter()
    result = compute()
    took = round(time.perf_counter() - t, 1)
    if path is not None and write:
        write_json(path, {"settings": key, "result": result, "seconds": took})
    return result, took


def cached_cells(folder: str | os.PathLike | None, cells, seconds: dict | None = None, done=None) -> list:
    """:func:`cached_step` for independent steps ``cells``, ``(name, settings, compute)`` each,
    shared out over the processes of a torchrun launch (:func:`langloc.distributed.map_cells`:
    cell j on rank j % W, which reads and writes its file); every rank gets every result, in
    order. In one process: the steps one after the other. ``compute`` must not talk to the
    other processes (every rank computes different cells). ``done(j, result)`` is called on
    the rank that computed (or read) cell j."""
    from langloc import distributed

    def one(cell):
        name, settings, compute = cell
        took: dict = {}
        return cached_step(folder, name, settings, compute, took), took[name]

    out = distributed.map_cells(one, cells, None if done is None else lambda j, r: done(j, r[0]))
    if seconds is not None:
        for (name, _, _), (_, took) in zip(cells, out):
            seconds[name] = took
    return [result for result, _ in out]


def shared_step(folder: str | os.PathLike | None, name: str, settings: dict, compute,
                seconds: dict | None = None) -> Any:
    """:func:`cached_step` for a step that every process of a torchrun launch computes
    together (``compute`` shares its work out and gathers it): rank 0 decides whether the kept
    file serves and hands its result to the others, so that every rank takes the same branch
    (a kept step on one rank and a computed one on another would leave the latter waiting), and
    only rank 0 writes the file. In one process: :func:`cached_step`."""
    from langloc import distributed

    rank, world = distributed.rank_and_world()
    if world == 1:
        return cached_step(folder, name, settings, compute, seconds)
    path = Path(folder) / f"{name}.json" if folder is not None else None
    key = json.loads(json.dumps(settings, default=str))
    kept = distributed.broadcast_object(_kept_step(path, key) if rank == 0 else None)
    result, took = kept if kept is not None else _compute_step(path, key, compute, write=rank == 0)
    if seconds is not None:
        seconds[name] = took
    return result


def compute_key(lm) -> dict:
    """What a kept step's numbers depend on in the model as loaded, for the key of every step a
    study keeps (:func:`cached_step`): the weights and tokenizer (fingerprints) *and* the dtype
    and device class they compute in. The weights fingerprint deliberately ignores the dtype
    (an artefact made in float32 applies to a bfloat16 load), so a resumed step must name it."""
    return {"weights": lm.meta["weights_fingerprint"], "tokenizer": lm.meta["tokenizer_fingerprint"],
            "dtype": str(next(lm.model.parameters()).dtype).replace("torch.", ""), "device": lm.device.type}


def step_seconds(seconds: dict) -> float | None:
    """The summed compute time of a study's steps, fresh and kept; None if any is unknown."""
    vals = list(seconds.values())
    return round(sum(vals), 1) if vals and None not in vals else None


def write_csv(path: str | os.PathLike, rows: list[dict], fieldnames, float_digits: int | None = None) -> None:
    """Rows of dicts as a CSV file (atomically); floats rounded to ``float_digits`` if given."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fieldnames))
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.{float_digits}f}" if float_digits is not None and isinstance(v, float) else v)
                    for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LanglocError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LanglocError(f"{what} {path} is not valid JSON (truncated or not a langloc file?): {exc}") from None


def tokenizer_fingerprint(tokenizer) -> str:
    ids = tokenizer(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    h = hashlib.sha256(f"{len(tokenizer)}|{ids}".encode())
    return h.hexdigest()[:16]


def weights_fingerprint(model) -> str:
    """Hash of every parameter's name and shape plus the values of a few of them.

    Hashing all weights of a 7B model would take seconds for every command; names, shapes and
    the bytes of the first and last decoder matrices tell checkpoints apart in practice. The
    values are hashed rounded to bfloat16, so the same checkpoint loaded in float32 or in
    bfloat16 has one fingerprint (an artefact made with ``--dtype float32`` applies to the
    model loaded with ``--dtype fast``); a float16 load may differ where double rounding does.
    """
    import torch

    h = hashlib.sha256()
    named = list(model.named_parameters())
    for name, p in named:
        h.update(f"{name}:{tuple(p.shape)};".encode())
    matrices = [p for _, p in named if p.dim() == 2]
    for p in (matrices[:2] + matrices[-2:]) if matrices else []:
        sample = p.detach().flatten()[:65536].to("cpu", torch.bfloat16).view(torch.int16).contiguous()
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
