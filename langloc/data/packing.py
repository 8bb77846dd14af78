"""Tokenise documents into full, fixed-length windows: no padding anywhere.

Documents are concatenated into one token stream, separated by the EOS token, and cut into
windows of ``window`` tokens. If the model expects a BOS token, every window starts with one
and carries ``window - 1`` stream tokens (the BOS position is the same in every language,
so statistics skip it: see :mod:`langloc.stats`).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from langloc.errors import LanglocError


def iter_windows(
    tokenizer,
    documents: Iterable[str],
    *,
    window: int,
    max_tokens: int,
    add_bos: bool,
    what: str = "text",
) -> Iterator[torch.Tensor]:
    """Yield LongTensor windows ``[window]`` one at a time, ``max_tokens // window`` of them
    (at least 1) or fewer if the documents run out; an error if they do not fill one window.

    Only one window's worth of tokens is held at a time, so memory does not grow with the
    token budget.
    """
    if window < 2:
        raise LanglocError(f"window must be at least 2 tokens, got {window}")
    if max_tokens < window:
        raise LanglocError(f"the token budget ({max_tokens}) must be at least one window ({window} tokens)")
    n_windows = max_tokens // window
    body = window - 1 if add_bos else window
    prefix = [tokenizer.bos_token_id] if add_bos else []
    eos = tokenizer.eos_token_id
    buf: list[int] = []
    made = 0
    for doc in documents:
        buf.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            buf.append(eos)
        while len(buf) >= body and made < n_windows:
            yield torch.tensor(prefix + buf[:body], dtype=torch.long)
            del buf[:body]
            made += 1
        if made == n_windows:
            return
    if made == 0:
        raise LanglocError(f"{what} has too little text ({len(buf)} tokens) to fill one window of {window} tokens")


def pack_windows(tokenizer, documents: Iterable[str], **kwargs) -> torch.Tensor:
    """All windows of :func:`iter_windows` as one LongTensor ``[n_windows, window]``."""
    return torch.stack(list(iter_windows(tokenizer, documents, **kwargs)))


def iter_batches(windows: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    batch = []
    for w in windows:
        batch.append(w)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


# Held-out windows are spread over the held-out split rather than taken from its start:
# neighbouring windows of running text are correlated (lag-1 correlation of the per-window
# log-ratio 0.08-0.37 on gemma-3-270m's Bible windows), so a contiguous run of them covers the
# split's ratio far less often than 95% (bench/interval_coverage.py; docs/statistics.md). The
# split is read up to SPREAD times the budget, and the windows are taken evenly from it.
SPREAD = 32


def spread_windows(tokenizer, documents: Iterable[str], *, window: int, max_tokens: int, add_bos: bool,
                   what: str = "text") -> torch.Tensor:
    """``max_tokens // window`` windows (or fewer if the text runs out) taken evenly from the
    first ``SPREAD * max_tokens`` tokens of ``documents``: window ``i`` of ``n`` is the one at
    ``floor((i + 1/2) M / n)`` of the ``M`` windows read."""
    n = max(1, max_tokens // window)
    read = list(iter_windows(tokenizer, documents, window=window, max_tokens=SPREAD * n * window, add_bos=add_bos,
                             what=what))
    n = min(n, len(read))
    return torch.stack([read[(2 * i + 1) * len(read) // (2 * n)] for i in range(n)])


def corpus_windows(model, corpus, lang: str, split: str, *, window: int, max_tokens: int,
                   lazy: bool = False) -> torch.Tensor | Iterator[torch.Tensor]:
    """Windows of ``lang``'s ``split`` of ``corpus`` for ``model`` (a LoadedModel): a tensor
    ``[n, window]``, or with ``lazy=True`` an iterator of ``[window]`` tensors (contiguous, for
    counting statistics). Windows of the ``eval`` split are spread over it (:data:`SPREAD`)."""
    corpus.use_tokenizer(model.tokenizer)
    docs = corpus.documents(lang, split)
    first = next(docs, None)
    if first is None:
        raise LanglocError(f"language {lang!r} has no text in the {split} split of corpus {corpus.name}"
                           + corpus.skip_note(lang, split))

    def chain():
        yield first
        yield from docs

    what = f"language {lang!r} ({split} split of {corpus.name})"
    kw = dict(window=window, max_tokens=max_tokens, add_bos=model.add_bos, what=what)

    def noted(exc: LanglocError) -> LanglocError:
        # "too little text" is found only at the end of the text: say then what was skipped.
        return LanglocError(f"{exc}{corpus.skip_note(lang, split)}")

    def lazy_windows():
        try:
            yield from iter_windows(model.tokenizer, chain(), **kw)
        except LanglocError as exc:
            raise noted(exc) from None

    if lazy:
        return lazy_windows()
    pack = spread_windows if split == "eval" else pack_windows
    try:
        return pack(model.tokenizer, chain(), **kw)
    except LanglocError as exc:
        raise noted(exc) from None
