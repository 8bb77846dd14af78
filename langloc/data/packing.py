"""Tokenise documents into full, fixed-length windows: no padding anywhere.

Documents are concatenated into one token stream, separated by the EOS token, and cut into
windows of ``window`` tokens. If the model expects a BOS token, every window starts with one
and carries ``window - 1`` stream tokens (the BOS position is the same in every language,
so statistics skip it: see :mod:`langloc.stats`).
"""

from __future__ import annotations

from typing import Iterable

import torch

from langloc.errors import LanglocError


def pack_windows(
    tokenizer,
    documents: Iterable[str],
    *,
    window: int,
    max_tokens: int,
    add_bos: bool,
    what: str = "text",
) -> torch.Tensor:
    """Return a LongTensor ``[n_windows, window]`` with ``n_windows = max_tokens // window``
    (at least 1); fewer if the documents run out, an error if they do not fill one window."""
    if window < 2:
        raise LanglocError(f"window must be at least 2 tokens, got {window}")
    if max_tokens < window:
        raise LanglocError(f"the token budget ({max_tokens}) must be at least one window ({window} tokens)")
    n_windows = max_tokens // window
    body = window - 1 if add_bos else window
    need = n_windows * body
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in documents:
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
        if len(stream) >= need:
            break
    got = len(stream) // body
    if got == 0:
        raise LanglocError(f"{what} has too little text ({len(stream)} tokens) to fill one window of {window} tokens")
    got = min(got, n_windows)
    ids = torch.tensor(stream[: got * body], dtype=torch.long).view(got, body)
    if add_bos:
        ids = torch.cat([torch.full((got, 1), tokenizer.bos_token_id, dtype=torch.long), ids], dim=1)
    return ids


def corpus_windows(model, corpus, lang: str, split: str, *, window: int, max_tokens: int) -> torch.Tensor:
    """Windows of ``lang``'s ``split`` of ``corpus`` for ``model`` (a LoadedModel)."""
    docs = corpus.documents(lang, split)
    first = next(docs, None)
    if first is None:
        raise LanglocError(f"language {lang!r} has no text in the {split} split of corpus {corpus.name}")

    def chain():
        yield first
        yield from docs

    return pack_windows(model.tokenizer, chain(), window=window, max_tokens=max_tokens,
                        add_bos=model.add_bos, what=f"language {lang!r} ({split} split of {corpus.name})")
