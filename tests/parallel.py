"""Run a CLI command in one process and in two gloo processes (torchrun), and compare what
they wrote: every file, byte for byte, but for the fields that say when and how long."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What differs between two runs of the same command: clocks and the command line (its output
# path). Dropped from JSON documents (and safetensors metadata) at any depth, blanked in CSVs.
VOLATILE = {"created", "command", "wall_seconds", "seconds", "compute_seconds", "wall_seconds_by_step",
            "compute_seconds_of_kept_steps", "train_seconds"}


def env() -> dict:
    """The same kernels in every process (one thread each), this checkout's langloc."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def run_cli(*args, processes: int = 1) -> subprocess.CompletedProcess:
    """``langloc ARGS`` in one process, or under ``torchrun --nproc-per-node PROCESSES`` (gloo on CPU)."""
    head = [sys.executable, "-m", "langloc.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "-m", "langloc.cli"]
    done = subprocess.run([*head, *map(str, args)], env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# Lists written from a Python set, in an order that changes from process to process (string
# hashing): PEFT's adapter_config.json target_modules. Compared as sets.
UNORDERED = {"target_modules"}


def _plain(doc):
    if isinstance(doc, dict):
        return {k: sorted(v) if k in UNORDERED and isinstance(v, list) else _plain(v)
                for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [_plain(v) for v in doc]
    return doc


def _csv(path: Path) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    drop = [i for i, name in enumerate(rows[0]) if name in VOLATILE] if rows else []
    return [[v for i, v in enumerate(r) if i not in drop] for r in rows]


def _safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = {k: _plain(json.loads(v)) if v.startswith("{") else v for k, v in (f.metadata() or {}).items()}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def assert_same_outputs(one: Path, two: Path) -> list[str]:
    """Every file under ``one`` is under ``two`` and the other way round, with the same content:
    bytes, except JSON compared without :data:`VOLATILE` fields, CSVs without such columns
    and safetensors by tensors and metadata. Returns the files compared."""
    import torch

    names = files_under(one)
    assert names == files_under(two)
    for name in names:
        a, b = Path(one) / name, Path(two) / name
        if name.endswith(".json"):
            assert _plain(json.loads(a.read_text())) == _plain(json.loads(b.read_text())), name
        elif name.endswith(".csv") and any(v in a.read_text().split("\n", 1)[0].split(",") for v in VOLATILE):
            assert _csv(a) == _csv(b), name
        elif name.endswith(".safetensors"):
            (ta, ma), (tb, mb) = _safetensors(a), _safetensors(b)
            assert ma == mb and ta.keys() == tb.keys(), name
            assert all(torch.equal(ta[k], tb[k]) for k in ta), name
        else:
            assert a.read_bytes() == b.read_bytes(), name
    return names
