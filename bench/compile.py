"""Is torch.compile worth it for langloc's CPU work? One run, eager vs compiled.

    python bench/compile.py [--model gemma-3-270m] [--dtype fast] [--batches 6]

Times the decoder body (what statistics run) and body + LM head + cross-entropy (what
perplexity runs) on the same Bible windows, eager and under ``torch.compile`` (inductor),
reports the compile time, the steady-state tokens/s of each and their ratio, and the largest
difference in NLL. The CPU class is printed with the figures.
"""

from __future__ import annotations

import argparse
import time

import torch

from langloc import machine
from langloc.data import corpus_windows, load_corpus
from langloc.evaluate.perplexity import window_nll
from langloc.models import load_model


def rate(fn, batches) -> float:
    fn(batches[0])  # warm-up (and, compiled, the compilation)
    t = time.perf_counter()
    for b in batches[1:]:
        fn(b)
    return sum(b.numel() for b in batches[1:]) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="fast")
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    print(machine.summary())
    lm = load_model(args.model, dtype=args.dtype)
    windows = corpus_windows(lm, load_corpus("bible"), "fr", "eval", window=256, max_tokens=256 * 4 * args.batches)
    batches = list(windows.split(4))
    body = lambda ids: lm.body(input_ids=ids, use_cache=False)  # noqa: E731
    nll = lambda ids: window_nll(lm, ids, len(ids))  # noqa: E731
    with torch.inference_mode():
        eager_body, eager_nll = rate(body, batches), rate(nll, batches)
        ref = torch.cat([nll(b) for b in batches])
        lm.model.base_model.forward = torch.compile(lm.model.base_model.forward)
        t = time.perf_counter()
        body(batches[0])
        compile_s = time.perf_counter() - t
        comp_body, comp_nll = rate(body, batches), rate(nll, batches)
        diff = (torch.cat([nll(b) for b in batches]) - ref).abs().max().item()
    print(f"{lm.meta['dtype']}, {len(batches)} batches of 4 x 256 tokens; first compiled call {compile_s:.0f} s")
    print(f"body       eager {eager_body:7.0f} tok/s  compiled {comp_body:7.0f}  ratio {comp_body / eager_body:.2f}")
    print(f"body+head  eager {eager_nll:7.0f} tok/s  compiled {comp_nll:7.0f}  ratio {comp_nll / eager_nll:.2f}")
    print(f"largest NLL difference per window (nats): {diff:.2e}")


if __name__ == "__main__":
    main()
