"""Segment-level mean responses of every neuron, for expert units (Kojima et al., NAACL 2024).

Kojima et al. take sentences; langloc takes fixed-length text segments (``segment_tokens``
tokens of packed text, cut like the statistics windows), so there is no padding here either.
A segment's response of neuron (l, j) is its mean activation over the segment's tokens (the
BOS position excluded). Responses are stored per language in ``RUN/responses/<lang>.safetensors``
as ``responses [S, L, I]`` float32: memory is segments × neurons × 4 bytes (gemma-3-270m,
100 segments: 15 MB per language), fixed by the segment count, not by a token budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from langloc import kinds
from langloc.artefacts import atomic_path
from langloc.data.packing import corpus_windows
from langloc.errors import LanglocError
from langloc.manifest import content, make_manifest, read_safetensors_manifest, stamp
from langloc.models.hooks import neuron_hooks


def responses_file(run: str | Path, lang: str) -> Path:
    return Path(run) / "responses" / f"{lang}.safetensors"


@torch.inference_mode()
def segment_responses(lm, corpus, lang: str, *, segments: int = 100, segment_tokens: int = 32,
                      batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """``[S, L, I]`` float32 mean activation of every neuron on each of ``segments`` segments."""
    if segments < 1 or segment_tokens < 1:
        raise LanglocError("segments and segment_tokens must be positive")
    window = segment_tokens + (1 if lm.add_bos else 0)
    windows = corpus_windows(lm, corpus, lang, "stats", window=window, max_tokens=window * segments)
    skip = 1 if lm.add_bos else 0
    out = torch.empty(len(windows), lm.num_layers, lm.intermediate_size, dtype=torch.float32)
    start = {}

    def make_hook(layer):
        def hook(a):
            out[start["s"]:start["s"] + a.shape[0], layer] = a[:, skip:].float().mean(1).cpu()
        return hook

    with neuron_hooks(lm, {i: make_hook(i) for i in range(lm.num_layers)}):
        for s in tqdm(range(0, len(windows), batch_size), desc=f"responses {lang}", unit="batch",
                      disable=not progress, leave=False):
            ids = windows[s:s + batch_size]
            start["s"] = s
            lm.body(input_ids=ids.to(lm.device), use_cache=False)
    return out


def save_responses(run: str | Path, lang: str, responses: torch.Tensor, meta: dict,
                   started: float | None = None) -> Path:
    """``meta``: model, corpus, segments, segment_tokens (stamped as the file's manifest)."""
    path = responses_file(run, lang)
    manifest = make_manifest(kinds.RESPONSES, model=meta.get("model"), corpus=meta.get("corpus"), split="stats",
                             config={k: meta[k] for k in ("segments", "segment_tokens") if k in meta},
                             started=started)
    doc = stamp({**content(meta), "language": lang}, manifest)
    with atomic_path(path) as tmp:
        save_file({"responses": responses.contiguous()}, str(tmp),
                  metadata={"langloc": json.dumps(doc, ensure_ascii=False)})
    return path


def load_responses(run: str | Path, lang: str) -> torch.Tensor:
    path = responses_file(run, lang)
    if not path.is_file():
        raise LanglocError(f"no segment responses for {lang!r} in {run}; collect them with "
                           f"`langloc collect --segments 100` (expert units need them)")
    read_safetensors_manifest(path, kinds.RESPONSES)
    try:
        return load_file(path)["responses"]
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise LanglocError(f"responses file {path} is unreadable: {exc}") from None
