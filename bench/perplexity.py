"""Perplexity with the LM head a slice of positions at a time vs the model's own forward, one run.

    python bench/perplexity.py [--model gemma-3-270m] [--languages en,zh,hi] [--tokens 4096]
                               [--batch-sizes 1,2,4] [--repeats 3] [--dtype fast]

On the same held-out Bible windows it times, in alternating rounds (medians compared):

* full    - ``model(input_ids).logits`` then cross-entropy over all positions at once: the
            straightforward way (and langloc's before 2026-11-24);
* sliced  - ``langloc.evaluate.window_nll``: the decoder body once, then the LM head and the
            cross-entropy on 256 positions at a time.

for each batch size, and checks that both give the same NLL. With a 262,144-word vocabulary
(Gemma 3) the full logits of 4 windows of 512 tokens are 1 GiB in bf16 and 2 GiB more in
float32; the ablation experiment runs 21 conditions x 10 languages of them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from langloc.data import corpus_windows, load_corpus
from langloc.evaluate.perplexity import window_nll
from langloc.models import load_model
from langloc import machine


@torch.inference_mode()
def full_forward_nll(lm, windows: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(lm.device)
        logits = lm.model(input_ids=ids, use_cache=False).logits
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
        out.append(losses.view(len(ids), -1).double().sum(1).cpu())
        del logits, losses
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--languages", default="en,zh,hi")
    ap.add_argument("--tokens", type=int, default=4096, help="held-out tokens per language")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="fast")
    args = ap.parse_args()

    lm = load_model(args.model, dtype=args.dtype)
    corpus = load_corpus("bible")
    windows = torch.cat([corpus_windows(lm, corpus, lang, "eval", window=args.window, max_tokens=args.tokens)
                         for lang in args.languages.split(",")])
    n_tokens = windows.numel()
    print(machine.summary())
    print(f"{args.model} ({lm.meta['dtype']}), {len(windows)} windows x {args.window} tokens "
          f"({args.languages}), {torch.get_num_threads()} threads")
    full_forward_nll(lm, windows[:1], 1)  # warm-up
    window_nll(lm, windows[:1], 1)

    print(f"{'batch':>5}  {'full tok/s':>10}  {'sliced tok/s':>12}  {'sliced / full':>13}  {'max |dNLL| per window':>21}")
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        times = {"full": [], "sliced": []}
        for _ in range(args.repeats):
            for name, fn in (("full", full_forward_nll), ("sliced", window_nll)):
                t = time.perf_counter()
                nll = fn(lm, windows, bs)
                times[name].append(time.perf_counter() - t)
                if name == "full":
                    reference = nll
                else:
                    diff = (nll - reference).abs().max().item()
        full, sliced = (n_tokens / statistics.median(times[k]) for k in ("full", "sliced"))
        print(f"{bs:>5}  {full:>10.0f}  {sliced:>12.0f}  {sliced / full:>13.2f}  {diff:>21.2e}")


if __name__ == "__main__":
    main()
