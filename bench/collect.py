"""Statistics collection vs a bare forward of the decoder body, on the same packed tokens.

    python bench/collect.py [--model gemma-3-270m] [--tokens 16384] [--repeats 5] [--dtype auto]

Both runs use the same windows, batch size and inference mode; the only difference is the
counting hooks. Rounds alternate (bare, collect, bare, collect, ...) so that drift in the
machine's speed hits both, and the medians are compared. Prints tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from langloc.data import corpus_windows, load_corpus
from langloc.models import load_model
from langloc.stats import ActivationCounter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--language", default="fr")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    ids = corpus_windows(lm, load_corpus("bible"), args.language, "stats", window=args.window, max_tokens=args.tokens)
    batches = [ids[i:i + args.batch_size].to(lm.device) for i in range(0, len(ids), args.batch_size)]
    counter = ActivationCounter(lm, skip_first_position=lm.add_bos)
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)

    def bare() -> None:
        for b in batches:
            lm.body(input_ids=b, use_cache=False)

    def collect() -> None:
        with counter:
            for b in batches:
                counter.run(b)

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return ids.numel() / (time.perf_counter() - t)

    with torch.inference_mode():
        bare(), collect()  # warm-up: allocator, kernels, caches
        rates = {"bare": [], "collect": []}
        for _ in range(args.repeats):
            rates["bare"].append(timed(bare))
            rates["collect"].append(timed(collect))
    b, c = statistics.median(rates["bare"]), statistics.median(rates["collect"])
    print(f"model {args.model} ({lm.meta['dtype']}, {lm.device}), {ids.numel()} tokens "
          f"({len(ids)} windows of {args.window}), batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"bare decoder body forward : {b:9.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in rates['bare'])})")
    print(f"statistics collection     : {c:9.1f} tokens/s  (rounds: {', '.join(f'{r:.0f}' for r in rates['collect'])})")
    print(f"ratio collect / bare      : {c / b:.3f}")


if __name__ == "__main__":
    main()
