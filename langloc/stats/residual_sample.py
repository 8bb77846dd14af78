"""A bounded, seeded sample of residual-stream vectors per language and layer
(``langloc collect --residual-sample N``), for the steering directions that are fitted on
samples rather than on means: a linear probe, LDA and PCA (:mod:`langloc.steer.directions`).

What is sampled: the tokens the statistics count (every position of the statistics windows,
BOS excluded, exactly the tokens of ``resid_sum``); what is kept of a sampled token: its
residual state after every decoder layer (the decoder layer's output, the sites DiffMean and
:class:`~langloc.intervene.intervention.ResidualEdit` use), so the sample holds the same N
tokens at every layer.

Which tokens: each token gets a priority, a 64-bit hash (splitmix64) of the run's seed, the
language, the token's window (its index among the language's statistics windows) and its
position in the window; the sample is the N tokens of lowest priority (ties: the earlier
window, then position). That is a uniform sample of N tokens without replacement, and it is a
function of the tokens alone, not of the order in which they arrive: the same for every batch
size, for any number of torchrun processes (each keeps the N lowest of its own batches; the N
lowest of their union are the N lowest overall) and for an interrupted and resumed run (the
kept tokens are checkpointed with the counters). With fewer than N tokens, all are kept.

Storage: ``RUN/residual_sample/<lang>.safetensors`` holds ``vectors`` [L, N, H] bfloat16
(bfloat16 rather than float16: float32's range, so that the few very large residual
dimensions of some models, e.g. Gemma's, cannot overflow), ``window`` and ``position`` [N]
int64, ordered by window and position; its manifest (kind ``langloc.residual_sample``) in the
metadata. The disk cost is N x L x H x 2 bytes per language: on gemma-3-270m (18 layers,
hidden 640) 23,040 bytes per token, so N = 2000 takes 46 MB per language. Collecting holds the
same in memory (under torchrun, the processes' samples are gathered once per language).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from langloc import kinds
from langloc.artefacts import atomic_path
from langloc.errors import LanglocError
from langloc.manifest import content, make_manifest, read_safetensors_manifest, stamp
from langloc.models.hooks import residual_hooks

KIND = kinds.RESIDUAL_SAMPLE
FOLDER = "residual_sample"
DTYPE = torch.bfloat16
SITE = "decoder layer outputs (the residual stream after each layer), BOS excluded"
HINT = "run `langloc collect --residual-sample N` (e.g. 2000) into a new run folder"


def sample_bytes(size: int, num_layers: int, hidden: int) -> int:
    """Bytes of one language's sample on disk (the vectors; window and position add 16 per token)."""
    return size * num_layers * hidden * 2


def sample_file(run: str | Path, lang: str) -> Path:
    return Path(run) / FOLDER / f"{lang}.safetensors"


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on an array of uint64 (wrapping arithmetic: numpy arrays wrap silently)."""
    x = np.array(x, dtype=np.uint64, ndmin=1)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _base(seed: int, lang: str) -> np.uint64:
    digest = hashlib.blake2b(f"langloc.residual_sample/{int(seed)}/{lang}".encode("utf-8"), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def token_priorities(seed: int, lang: str, windows, positions) -> np.ndarray:
    """[len(windows), len(positions)] uint64: each token's priority (see the module)."""
    w = _mix(np.asarray(windows, dtype=np.uint64) ^ _base(seed, lang))
    return _mix(w[:, None] ^ np.asarray(positions, dtype=np.uint64)[None, :])


def lowest(priority: np.ndarray, window: np.ndarray, position: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` entries of lowest (priority, window, position)."""
    return np.lexsort((position, window, priority))[:size]


class ResidualSampler:
    """Context manager that hooks every decoder layer's output and keeps the N tokens of lowest
    priority (see the module). Before each forward pass, :meth:`plan` is told the batch and the
    index of its first window; the hooks then copy the states of the tokens that enter the sample."""

    def __init__(self, lm, size: int, seed: int, *, skip_first_position: bool):
        from langloc.stats.counters import hidden_size

        if size < 1:
            raise LanglocError(f"a residual sample needs a positive size, got {size}")
        self.lm, self.size, self.seed, self.skip_first = lm, int(size), int(seed), skip_first_position
        self.num_layers, self.hidden = lm.num_layers, hidden_size(lm)
        self._hooks = contextlib.ExitStack()
        self.reset("")

    def reset(self, lang: str) -> None:
        self.lang = lang
        self.count = 0
        self.priority = np.zeros(self.size, dtype=np.uint64)
        self.window = np.zeros(self.size, dtype=np.int64)
        self.position = np.zeros(self.size, dtype=np.int64)
        self.vectors = torch.zeros(self.num_layers, self.size, self.hidden, dtype=DTYPE)
        self._plan = None

    def plan(self, first_window: int, batch: torch.Tensor) -> None:
        """Choose which tokens of ``batch`` (windows ``first_window``, ``first_window + 1``, ...)
        enter the sample, and which kept ones they replace."""
        B, T = batch.shape
        pos = np.arange(1 if self.skip_first else 0, T, dtype=np.int64)
        if not len(pos):
            self._plan = None
            return
        win = np.arange(first_window, first_window + B, dtype=np.int64)
        pri = token_priorities(self.seed, self.lang, win, pos).ravel()
        idx = np.arange(pri.size)
        m = self.count
        if m == self.size:  # only a token below the worst kept one can enter
            idx = idx[pri <= self.priority[:m].max()]
        cw, cp, pri = win[idx // len(pos)], pos[idx % len(pos)], pri[idx]
        order = lowest(np.concatenate([self.priority[:m], pri]), np.concatenate([self.window[:m], cw]),
                       np.concatenate([self.position[:m], cp]), self.size)
        new = order[order >= m] - m
        if not len(new):
            self._plan = None
            return
        slots = np.concatenate([np.setdiff1d(np.arange(m), order[order < m]), np.arange(m, len(order))])
        self.priority[slots], self.window[slots], self.position[slots] = pri[new], cw[new], cp[new]
        self.count = len(order)
        self._plan = (torch.from_numpy(slots), torch.from_numpy(idx[new] // len(pos)),
                      torch.from_numpy(pos[idx[new] % len(pos)]))

    def _hook(self, layer: int):
        def hook(h):
            if self._plan is not None:
                slots, rows, cols = self._plan
                self.vectors[layer, slots] = h[rows.to(h.device), cols.to(h.device)].to(DTYPE).cpu()

        return hook

    def __enter__(self):
        self._hooks.enter_context(residual_hooks(self.lm, {i: self._hook(i) for i in range(self.num_layers)}))
        return self

    def __exit__(self, *exc):
        self._hooks.close()

    def state(self) -> dict[str, torch.Tensor]:
        """The kept tokens, for a checkpoint (beside the counters' state)."""
        m = self.count
        return {"sample_priority": torch.from_numpy(self.priority[:m].view(np.int64).copy()),
                "sample_window": torch.from_numpy(self.window[:m].copy()),
                "sample_position": torch.from_numpy(self.position[:m].copy()),
                "sample_vectors": self.vectors[:, :m].contiguous()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if "sample_window" not in state:
            raise LanglocError("this checkpoint holds no residual sample; delete it to start that language over")
        m = len(state["sample_window"])
        self.count = m
        self.priority[:m] = state["sample_priority"].numpy().view(np.uint64)
        self.window[:m] = state["sample_window"].numpy()
        self.position[:m] = state["sample_position"].numpy()
        self.vectors[:, :m] = state["sample_vectors"]

    def result(self) -> dict[str, torch.Tensor]:
        """The sample, ordered by window and position; under torchrun, of all processes together
        (a collective call: every process must make it)."""
        from langloc import distributed

        parts = [self.state()]
        if distributed.rank_and_world()[1] > 1:
            import torch.distributed as dist

            parts = [None] * distributed.rank_and_world()[1]
            dist.all_gather_object(parts, self.state())
        pri = np.concatenate([p["sample_priority"].numpy().view(np.uint64) for p in parts])
        win = np.concatenate([p["sample_window"].numpy() for p in parts])
        pos = np.concatenate([p["sample_position"].numpy() for p in parts])
        keep = lowest(pri, win, pos, self.size)
        keep = keep[np.lexsort((pos[keep], win[keep]))]
        vectors = torch.cat([p["sample_vectors"] for p in parts], dim=1)
        return {"vectors": vectors[:, torch.from_numpy(keep)].contiguous(),
                "window": torch.from_numpy(win[keep].copy()), "position": torch.from_numpy(pos[keep].copy())}


def describe(size: int, seed: int, num_layers: int, hidden: int) -> dict:
    """What ``run.json`` records of a run's residual sample."""
    return {"size": size, "seed": seed, "dtype": "bfloat16", "site": SITE,
            "bytes_per_language": sample_bytes(size, num_layers, hidden)}


def save_residual_sample(run: str | Path, lang: str, sample: dict, meta: dict, started: float | None = None) -> Path:
    """One language's sample as ``RUN/residual_sample/<lang>.safetensors`` (atomically); ``meta``:
    model, corpus, window, tokens, seed and ``residual_sample`` (:func:`describe`)."""
    path = sample_file(run, lang)
    doc_meta = meta["residual_sample"]
    manifest = make_manifest(KIND, model=meta.get("model"), corpus=meta.get("corpus"), split="stats",
                             config={"size": doc_meta["size"], "window": meta.get("window"), "tokens": meta.get("tokens"),
                                     "dtype": doc_meta["dtype"]},
                             seeds={"sample": doc_meta["seed"]}, started=started)
    doc = stamp({**content({k: v for k, v in meta.items() if k != "residual_sample"}), "language": lang,
                 "residual_sample": doc_meta, "kept": int(sample["window"].numel())}, manifest)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in sample.items()}, str(tmp),
                  metadata={"langloc": json.dumps(doc, ensure_ascii=False)})
    return path


class ResidualSamples:
    """The residual samples of a run folder, read one layer at a time (``vectors[l]``)."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self._docs: dict[str, dict] = {}

    def require(self, languages) -> None:
        """One error line naming the languages without a sample, and what to do."""
        missing = [lang for lang in dict.fromkeys(languages) if not sample_file(self.run, lang).is_file()]
        if missing:
            raise LanglocError(f"run {self.run} has no residual sample for {', '.join(missing)} (probe, lda and pca "
                               f"are fitted on one): {HINT}")

    def doc(self, lang: str) -> dict:
        if lang not in self._docs:
            self.require([lang])
            self._docs[lang] = read_safetensors_manifest(sample_file(self.run, lang), KIND)
        return self._docs[lang]

    def layer(self, lang: str, layer: int) -> torch.Tensor:
        """[kept, H] float32: the sampled residual states of ``lang`` after decoder layer ``layer``."""
        self.doc(lang)
        path = sample_file(self.run, lang)
        try:
            with safe_open(str(path), "pt") as f:
                return f.get_slice("vectors")[layer].float()
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise LanglocError(f"residual sample {path} is unreadable: {exc}") from None

    def describe(self, languages) -> dict:
        """What a fitted direction depends on: each language's sample size, seed and kept count."""
        return {lang: {"size": self.doc(lang)["residual_sample"]["size"], "seed": self.doc(lang)["residual_sample"]["seed"],
                       "kept": self.doc(lang)["kept"]} for lang in languages}
