"""Per-neuron counters filled by forward hooks; activations are never stored.

For every decoder layer the hook folds a batch's activations ``a[tokens, I]`` into

* ``over_zero[l, j]``: tokens with ``a[:, j] > 0`` (LAPE's count),
* ``active_sum[l, j]``: sum of ``a`` where it is > 0 (so ``active_sum / over_zero`` is the mean
  active value that steering forces neurons to),
* ``act_sum[l, j]``: sum of ``a`` (the mean activation);

and every decoder layer's output (the residual stream after layer ``l``, ``h[tokens, H]``) into

* ``resid_sum[l, d]``: sum of ``h`` (the mean residual state, whose difference between two
  languages is the DiffMean steering vector, :mod:`langloc.steer.diffmean`).

Per batch the sums run in float32, which counts exactly up to 2**24 tokens per batch (checked).
Summing a float mask is ~6x faster on CPU than summing a bool tensor, which is why the count
is not ``(a > 0).sum()``; on CPU they run over blocks of rows that stay in cache
(:func:`_column_sums_in_blocks`). The totals are int64: counts as they are, sums in fixed point
(units of 2**-24). Integer addition is associative, so totals do not depend on the order in
which batches are added: a run split over processes (all-reduced) or interrupted and resumed
gives bit for bit the totals of one uninterrupted process. Fixed point holds sums up to
~5e11 in magnitude at a resolution of 6e-8 per batch.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from langloc.models.hooks import neuron_hooks, residual_hooks

_EXACT_FLOAT32 = 2**24
FIXED_POINT = 2.0**24  # active_sum / act_sum totals are stored as round(sum * FIXED_POINT)
# Residual sums use coarser units (2**-16): residual states are large (Gemma 3 270M's mean state
# has a norm of up to 3.6e4 per layer, from a few massive dimensions), so that 100M tokens
# still fit. A batch's sum must stay below 2**32 (2**48 in fixed point) and a running total
# below 2**62 in fixed point (2**46 = 7e13 as a number), so that no addition wraps an int64.
RESID_FIXED_POINT = 2.0**16
_FIXED_LIMIT = 2.0**32
_TOTAL_LIMIT = 2**62


class ActivationCounter:
    """Context manager that hooks every layer's neuron module of a LoadedModel."""

    def __init__(self, lm, *, skip_first_position: bool):
        self.lm = lm
        self.skip_first = skip_first_position
        self._hooks = contextlib.ExitStack()
        self._cpu = lm.device.type == "cpu"
        # The token-embedding table is read a few rows per batch; if it is mapped from the
        # weights file, its pages are handed back right after each lookup (see MappedPages).
        self._embeddings = _input_embeddings(lm) if self._cpu else None
        self._embedding_pages = MappedPages.of(getattr(self._embeddings, "weight", None))
        self.reset()

    def reset(self) -> None:
        I = self.lm.intermediate_size
        self.n_tokens = 0
        self.over_zero, self.active_sum, self.act_sum, self.resid_sum = [], [], [], []
        H = hidden_size(self.lm)
        for module in self.lm.down_modules:
            # Counters live where the layer runs (one GPU or another under device_map="auto").
            dev = module.weight.device
            self.over_zero.append(torch.zeros(I, dtype=torch.int64, device=dev))
            self.active_sum.append(torch.zeros(I, dtype=torch.int64, device=dev))
            self.act_sum.append(torch.zeros(I, dtype=torch.int64, device=dev))
            self.resid_sum.append(torch.zeros(H, dtype=torch.int64, device=dev))

    def _hook(self, layer: int):
        def hook(a):
            if self.skip_first:
                a = a[:, 1:]
            a = a.reshape(-1, a.shape[-1])
            if self._cpu:
                count, active, total = _column_sums_in_blocks(a)
            else:
                count = (a > 0).to(torch.float32).sum(0)
                active = a.clamp(min=0).sum(0, dtype=torch.float32)
                total = a.sum(0, dtype=torch.float32)
            self.over_zero[layer] += count.to(torch.int64)
            self.active_sum[layer] += _fixed(active)
            self.act_sum[layer] += _fixed(total)

        return hook

    def _residual_hook(self, layer: int):
        def hook(h):
            if self.skip_first:
                h = h[:, 1:]
            total = h.reshape(-1, h.shape[-1]).sum(0, dtype=torch.float32)
            if not bool(torch.isfinite(total).all()) or float(total.abs().max()) > _FIXED_LIMIT:
                raise OverflowError(f"layer {layer}: residual sums of one batch reach {float(total.abs().max()):.3g}, "
                                    "beyond what the fixed-point totals hold; use smaller batches")
            self.resid_sum[layer] += _fixed(total, RESID_FIXED_POINT).to(self.resid_sum[layer].device)
            if int(self.resid_sum[layer].abs().max()) > _TOTAL_LIMIT:
                raise OverflowError(f"layer {layer}: the residual sum outgrew its fixed-point total; collect fewer tokens")

        return hook

    def __enter__(self):
        self._hooks.enter_context(neuron_hooks(self.lm, {i: self._hook(i) for i in range(self.lm.num_layers)}))
        self._hooks.enter_context(residual_hooks(self.lm, {i: self._residual_hook(i)
                                                           for i in range(self.lm.num_layers)}))
        if self._embedding_pages is not None:
            pages = self._embedding_pages

            def release_rows(module, args, output):
                pages.release()  # returns None: a forward hook's return value would replace the output

            self._hooks.callback(self._embeddings.register_forward_hook(release_rows).remove)
        return self

    def __exit__(self, *exc):
        self._hooks.close()

    def run(self, input_ids: torch.Tensor) -> None:
        """Run the decoder body (no LM head) on one batch of full windows and count."""
        B, T = input_ids.shape
        counted = B * (T - 1 if self.skip_first else T)
        if counted > _EXACT_FLOAT32:
            raise ValueError(f"a batch of {counted} tokens would overflow exact float32 counting")
        self.lm.body(input_ids=input_ids.to(self.lm.device), use_cache=False)
        self.n_tokens += counted
        if self._cpu:
            release_freed_memory()

    def state(self) -> dict[str, torch.Tensor]:
        """The raw int64 totals (what checkpoints store and processes all-reduce)."""
        return {
            "over_zero": torch.stack([t.cpu() for t in self.over_zero]),
            "active_sum_fx": torch.stack([t.cpu() for t in self.active_sum]),
            "act_sum_fx": torch.stack([t.cpu() for t in self.act_sum]),
            "resid_sum_fx": torch.stack([t.cpu() for t in self.resid_sum]),
            "n": torch.tensor([self.n_tokens], dtype=torch.int64),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if "resid_sum_fx" not in state:
            from langloc.errors import LanglocError

            raise LanglocError("this checkpoint was written by an older langloc without residual sums; "
                               "delete it to start that language over")
        for layer in range(len(self.over_zero)):
            self.over_zero[layer].copy_(state["over_zero"][layer])
            self.active_sum[layer].copy_(state["active_sum_fx"][layer])
            self.act_sum[layer].copy_(state["act_sum_fx"][layer])
            self.resid_sum[layer].copy_(state["resid_sum_fx"][layer])
        self.n_tokens = int(state["n"][0])


# Rows per block in _column_sums_in_blocks: 2**20 float32 values (4 MiB), about what a core's
# caches hold. Measured on 2 cores of an AMX-BF16 Xeon, 2,048 tokens x 8,960 neurons in
# bfloat16: the whole-tensor sums took 132 ms, blocks of 117-256 rows 36-38 ms, of 1,024 rows
# 105 ms (bench/collect.py has the end-to-end effect).
_BLOCK_VALUES = 2**20


def _column_sums_in_blocks(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per column of ``a[tokens, I]``: the count of values > 0, the sum of those values and the
    sum of all, in float32, taken over blocks of rows.

    On CPU each whole-tensor operation streams the full activation (and its float32 copies)
    through memory, and the three sums cost more than a third of a 1.5 B model's forward pass
    on a CPU with AMX. Block by block the copies stay in cache. The count is exact either way
    (float32 holds integers up to 2**24); the sums differ from one-pass sums only in float32
    rounding order, and are deterministic.
    """
    width = a.shape[-1]
    count = torch.zeros(width, dtype=torch.float32)
    active = torch.zeros(width, dtype=torch.float32)
    total = torch.zeros(width, dtype=torch.float32)
    for block in a.split(max(16, _BLOCK_VALUES // max(width, 1))):
        x = block.to(torch.float32)
        count += (x > 0).to(torch.float32).sum(0)
        active += x.clamp(min=0).sum(0)
        total += x.sum(0)
    return count, active, total


def _glibc(name: str):
    try:
        import ctypes

        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _glibc("malloc_trim")


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc only).

    A forward pass on CPU allocates and frees tens of megabytes of activations per layer,
    and glibc keeps freed heap memory. Measured on Gemma 3 270M (float32, batches of
    4 x 512), before :class:`MappedPages`: after 54 batches the resident size was 1,576 MiB
    without a trim per batch and 1,356 MiB with one. The growth that remained with the trim
    was the mapped embedding table (see :class:`MappedPages`), not the heap.

    Not done: fixing glibc's mmap threshold at 1 MiB (``mallopt(M_MMAP_THRESHOLD)``) makes
    every activation tensor its own mapping, so a batch's peak is exactly its live tensors,
    but each allocation then faults in fresh zeroed pages: on 2 CPU cores it cut the bare
    forward of Gemma 3 270M from 731 to 525 tokens/s (``bench/collect.py``, 2026-11-24).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _input_embeddings(lm) -> torch.nn.Module | None:
    try:
        return lm.model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None


_MADV_DONTNEED = 4  # Linux
_PAGEMAP_PRESENT, _PAGEMAP_SWAPPED, _PAGEMAP_FILE = 63, 62, 61  # bits of a /proc/self/pagemap entry


class MappedPages:
    """The pages of a tensor that lies in a file mapping, to be dropped from the resident set.

    Weights loaded from safetensors stay mapped from the file (``mmap``) when no dtype
    conversion is needed, and a page of a mapped file counts in the process's resident size
    from the first time it is read. The layer weights are all read by the first batch, but the
    token-embedding table is read one row per distinct token: each batch reads a few hundred
    rows (the kernel maps 64 KiB around each one), so the table's resident part grows with
    the number of tokens seen until the whole table (640 MiB for Gemma 3 270M) is resident.
    Measured on Gemma 3 270M, 40 batches of 4 x 512 French tokens: the mapped table went from
    30 MiB resident after batch 1 to 205 MiB after batch 40, all of the loop's growth (the
    anonymous memory after a batch stayed at 535-537 MiB). :class:`ActivationCounter` calls
    :meth:`release` right after each embedding lookup, so only one batch's rows are resident,
    and not at the batch's peak.

    :meth:`release` unmaps the pages (``madvise(MADV_DONTNEED)``); they stay in the page
    cache, and the next read maps them again from there. That drops nothing only if every
    page is the file's own content, so it first checks ``/proc/self/pagemap``: a page that
    was written to (copy-on-write of a private mapping, then an anonymous page) or swapped
    out makes it do nothing. Linux only; elsewhere, or for a tensor not in a file mapping,
    :meth:`of` gives None.
    """

    def __init__(self, tensor: torch.Tensor, start: int, stop: int):
        self.tensor = tensor  # kept alive so that the mapping is
        self.start, self.stop = start, stop  # page-aligned addresses, inside the tensor's bytes

    @classmethod
    def of(cls, tensor: torch.Tensor | None) -> "MappedPages | None":
        if _MADVISE is None or tensor is None or tensor.device.type != "cpu" or not tensor.is_contiguous():
            return None
        page = _PAGE_SIZE
        first = tensor.data_ptr()
        last = first + tensor.numel() * tensor.element_size()
        start, stop = -(-first // page) * page, last // page * page
        if stop <= start or not _in_file_mapping(start, stop):
            return None
        return cls(tensor, start, stop)

    def unwritten(self) -> bool:
        """Whether every page of the range is unmodified file content (or not mapped now)."""
        n = (self.stop - self.start) // _PAGE_SIZE
        try:
            with open("/proc/self/pagemap", "rb", buffering=0) as f:
                f.seek(self.start // _PAGE_SIZE * 8)
                raw = f.read(n * 8)
        except OSError:
            return False
        if len(raw) != n * 8:
            return False
        # numpy, not torch: a torch op here would wake its thread pool for ~1 ms of work.
        e = np.frombuffer(raw, dtype=np.uint64)
        present = (e >> np.uint64(_PAGEMAP_PRESENT)) & np.uint64(1)
        swapped = (e >> np.uint64(_PAGEMAP_SWAPPED)) & np.uint64(1)
        file_page = (e >> np.uint64(_PAGEMAP_FILE)) & np.uint64(1)
        return not bool((swapped | (present & (file_page ^ np.uint64(1)))).any())

    def release(self) -> bool:
        """Unmap the range if all of it is file content; True if it was released."""
        if not self.unwritten():
            return False
        return _MADVISE(self.start, self.stop - self.start, _MADV_DONTNEED) == 0


def _load_madvise():
    try:
        import ctypes
        import sys

        if not sys.platform.startswith("linux"):
            return None
        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_MADVISE = _load_madvise()
try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):
    _PAGE_SIZE = 4096


def _in_file_mapping(start: int, stop: int) -> bool:
    """Whether [start, stop) lies in one mapping of a regular file (per /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= start < hi:
                    # inode (field 5) is 0 for anonymous memory; a path that is not [heap] etc.
                    path = parts[5].strip() if len(parts) > 5 else ""
                    return stop <= hi and parts[4] != "0" and path.startswith("/")
    except (OSError, ValueError, IndexError):
        return False
    return False


def hidden_size(lm) -> int:
    """Width of the residual stream (the decoder layers' output)."""
    cfg = lm.model.config
    size = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    if size is None:
        size = lm.model.get_input_embeddings().embedding_dim
    return int(size)


def _fixed(x: torch.Tensor, unit: float = FIXED_POINT) -> torch.Tensor:
    return (x.double() * unit).round().to(torch.int64)


def totals_from_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The statistics file's tensors: counts int64, sums float64."""
    return {
        "over_zero": state["over_zero"],
        "active_sum": state["active_sum_fx"].double() / FIXED_POINT,
        "act_sum": state["act_sum_fx"].double() / FIXED_POINT,
        "resid_sum": state["resid_sum_fx"].double() / RESID_FIXED_POINT,
        "n": state["n"],
    }
