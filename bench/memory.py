"""Peak memory of statistics collection at 1x and 10x the token budget.

    python bench/memory.py [--model gemma-3-270m] [--tokens 8192] [--dtype auto]

Each budget runs `langloc collect` in a fresh child process; the peak resident set size of
that child (ru_maxrss; on a GPU also torch.cuda.max_memory_allocated) is compared. Counters
never store activations and windows are tokenised lazily, so the two should match.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile

from langloc import machine

CHILD = r"""
import json, resource, sys, torch
from langloc import CollectConfig, load_corpus, load_model, collect
model, tokens, dtype, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lm = load_model(model, dtype=dtype)
collect(lm, load_corpus("bible"), CollectConfig(out=out, languages=["fr"], tokens=tokens, window=512, batch_size=4),
        progress=False)
gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "gpu": gpu}))
"""


def peak(model: str, tokens: int, dtype: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        res = subprocess.run([sys.executable, "-c", CHILD, model, str(tokens), dtype, out + "/run"],
                             capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    one, ten = peak(args.model, args.tokens, args.dtype), peak(args.model, 10 * args.tokens, args.dtype)
    print(machine.summary())
    print(f"model {args.model}, budgets {args.tokens} and {10 * args.tokens} tokens of fr")
    print(f"peak RSS  1x: {one['rss_kb'] / 1024:8.1f} MiB   10x: {ten['rss_kb'] / 1024:8.1f} MiB   "
          f"ratio 10x/1x: {ten['rss_kb'] / one['rss_kb']:.3f}")
    if one["gpu"]:
        print(f"peak GPU  1x: {one['gpu'] / 2**20:8.1f} MiB   10x: {ten['gpu'] / 2**20:8.1f} MiB   "
              f"ratio: {ten['gpu'] / one['gpu']:.3f}")


if __name__ == "__main__":
    main()
