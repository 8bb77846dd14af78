"""Statistics collection vs the physical limit and vs the straightforward approach, one run.

    python bench/collect.py [--model gemma-3-270m] [--tokens 16384] [--repeats 3] [--dtype auto]

On the same tokens (one language's packed windows from the Bible) it times, in alternating
rounds so that drift in the machine's speed hits both sides alike (medians are compared), first
collect against bare, then collect against naive (the naive approach's gigabytes of copies
and logits disturb the allocator for whatever runs next, so it is kept out of the first pair):

* bare      - a forward of the decoder body alone (no hooks, no LM head): the physical limit;
* collect   - langloc's collection (decoder body + counting hooks);
* naive     - what published scripts do: the same tokens cut into sentences of 20-80 tokens,
              one right-padded batch of 16 sentences at a time, the *full* model (LM head
              included), hooks that copy every activation out, counting afterwards.

It also measures the machine's matrix-multiply rate (square matmuls in the same dtype) and the
FLOP rate that collection achieves (2 x linear-layer parameters per token + attention scores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from langloc.data import corpus_windows, load_corpus
from langloc.models import load_model
from langloc.stats import ActivationCounter
from langloc import machine


def naive_sentences(ids: torch.Tensor, add_bos: bool, bos: int | None, seed: int = 0) -> list[torch.Tensor]:
    """Cut the windows' tokens (without BOS) into 'sentences' of 20-80 tokens."""
    stream = (ids[:, 1:] if add_bos else ids).flatten()
    g = torch.Generator().manual_seed(seed)
    out, i = [], 0
    while i < len(stream):
        n = int(torch.randint(20, 81, (1,), generator=g))
        piece = stream[i:i + n]
        out.append(torch.cat([torch.tensor([bos]), piece]) if add_bos else piece)
        i += n
    return out


def naive_collect(lm, sentences: list[torch.Tensor], batch: int = 16) -> torch.Tensor:
    """Full forward with padding; hooks copy activations out; counts computed afterwards."""
    stored: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, a, out: stored.append(out.detach().to("cpu", copy=True)))
             for m in lm.neuron_modules]
    over_zero = torch.zeros(lm.num_layers, lm.intermediate_size, dtype=torch.int64)
    try:
        for s in range(0, len(sentences), batch):
            group = sentences[s:s + batch]
            width = max(len(x) for x in group)
            ids = torch.zeros(len(group), width, dtype=torch.long)
            mask = torch.zeros(len(group), width, dtype=torch.long)
            for r, x in enumerate(group):
                ids[r, :len(x)], mask[r, :len(x)] = x, 1
            stored.clear()
            lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
            keep = mask.bool().view(-1)
            for layer, act in enumerate(stored):
                act = act.reshape(-1, act.shape[-1])[keep]
                over_zero[layer] += (act > 0).sum(0)
    finally:
        for h in hooks:
            h.remove()
    return over_zero


def body_flops_per_token(lm, window: int) -> float:
    cfg = lm.model.config
    linear = sum(m.in_features * m.out_features for layer in lm.layers for m in layer.modules()
                 if isinstance(m, torch.nn.Linear))
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attention = lm.num_layers * 4 * heads * head_dim * (window + 1) / 2  # QK^T and AV, causal mean context
    return 2 * linear + attention


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    best = 0.0
    for _ in range(repeats + 1):
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def bare_forward(lm, batches: list[torch.Tensor]) -> Callable[[], None]:
    """The physical limit: the decoder body alone over ``batches`` (no hooks, no LM head)."""
    def bare() -> None:
        for b in batches:
            lm.body(input_ids=b, use_cache=False)
    return bare


def counted_forward(lm, batches: list[torch.Tensor]) -> Callable[[], None]:
    """langloc's collection over ``batches``: the decoder body with the counting hooks."""
    counter = ActivationCounter(lm, skip_first_position=lm.add_bos)

    def collect() -> None:
        counter.reset()
        with counter:
            for b in batches:
                counter.run(b)
    return collect


def alternating_rates(pairs, collect, tokens: int, repeats: int, device: torch.device) -> dict:
    """Tokens/s of each ``(name, fn)`` of ``pairs`` and of ``collect`` in the same rounds.

    Each pair is warmed up once (allocator, kernels, caches), then timed in ``repeats``
    alternating rounds, so that drift in the machine's speed hits both sides alike. Returns
    ``{name: [rates], "collect": {name: [rates]}}``.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return tokens / (time.perf_counter() - t)

    rates: dict = {"collect": {}}
    with torch.inference_mode():
        for name, other in pairs:
            other(), collect()
            rates[name], rates["collect"][name] = [], []
            for _ in range(repeats):
                rates[name].append(timed(other))
                rates["collect"][name].append(timed(collect))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--language", default="fr")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-naive", action="store_true", help="skip the straightforward approach")
    args = ap.parse_args()

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    ids = corpus_windows(lm, load_corpus("bible"), args.language, "stats", window=args.window, max_tokens=args.tokens)
    batches = [ids[i:i + args.batch_size].to(lm.device) for i in range(0, len(ids), args.batch_size)]
    sentences = naive_sentences(ids, lm.add_bos, lm.tokenizer.bos_token_id)
    bare, collect = bare_forward(lm, batches), counted_forward(lm, batches)

    def naive() -> None:
        naive_collect(lm, sentences)

    pairs = [("bare", bare)] + ([] if args.no_naive else [("naive", naive)])
    rates = alternating_rates(pairs, collect, ids.numel(), args.repeats, lm.device)
    with torch.inference_mode():
        peak = matmul_rate(next(lm.model.parameters()).dtype, lm.device)
    med = {name: statistics.median(rates[name]) for name, _ in pairs}
    coll = {name: statistics.median(r) for name, r in rates["collect"].items()}
    flops = body_flops_per_token(lm, args.window)
    print(machine.summary())
    print(f"model {args.model} ({lm.meta['dtype']}, {lm.device}), {ids.numel()} tokens "
          f"({len(ids)} windows of {args.window}), batch {args.batch_size}, {torch.get_num_threads()} threads")
    labels = {"bare": "bare decoder body forward", "naive": "straightforward (padded, LM head, copies)"}

    def show(label, r):
        print(f"{label:42s}: {statistics.median(r):9.1f} tokens/s  (rounds: {', '.join(f'{x:.0f}' for x in r)})")

    for name, _ in pairs:
        show(labels[name], rates[name])
        show("langloc collection, same rounds", rates["collect"][name])
    print(f"ratio collect / bare                       : {coll['bare'] / med['bare']:.3f}")
    if "naive" in med:
        print(f"ratio collect / straightforward            : {coll['naive'] / med['naive']:.2f}")
    rate = coll["bare"]
    print(f"matrix-multiply rate (2048^3, same dtype)  : {peak / 1e9:9.1f} GFLOP/s")
    print(f"collection achieved ({flops / 1e6:.0f} MFLOP/token)  : {rate * flops / 1e9:9.1f} GFLOP/s "
          f"= {rate * flops / peak:.2f} of the matmul rate")


if __name__ == "__main__":
    main()
