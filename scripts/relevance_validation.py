"""Validate the strict judge's relevance criterion (PMI > 0, fixed before this was run) on a
model's own native continuations (run: python scripts/relevance_validation.py [--model gemma-3-270m]).

For every language with built-in prompts, the unsteered model continues each native prompt as
the steer study decodes (greedy, 32 new tokens, no repetition penalty: the command's defaults).
True pairs (each continuation after its own prompt) should be accepted; shuffled pairs (each
continuation after the prompt half the set away, in the same language, so only the topic
differs) should be rejected. Prints both rates per language and pooled, with 95%
Clopper-Pearson intervals over pairs, and the CPU class (langloc.machine).
"""

from __future__ import annotations

import argparse
import time

from langloc import machine
from langloc.models.loading import load_model
from langloc.steer.prompts import PROMPTS
from langloc.steer.relevance_validation import validate
from langloc.steer.steering import Generation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--languages", default=",".join(PROMPTS))
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--others", type=int, default=4)
    a = ap.parse_args()
    info = machine.describe()
    print(f"CPU: {info['cpu']} (class {info['cpu_class']}, {info['threads']} threads; torch {info.get('torch')})")
    lm = load_model(a.model, dtype=a.dtype, device="cpu")
    gen = Generation(max_new_tokens=a.max_new_tokens, repetition_penalty=a.repetition_penalty)
    started = time.time()
    print(f"{a.model} ({lm.meta.get('dtype', a.dtype)}), greedy, {a.max_new_tokens} new tokens, repetition penalty "
          f"{a.repetition_penalty:g}; criterion PMI > 0 against {a.others} other prompts")
    print(f"{'language':9s} {'n':>4s}  {'true pairs accepted':>24s}  {'shuffled pairs rejected':>24s}  "
          f"median PMI true / shuffled (nats per token)", flush=True)
    ci = lambda r, k: f"{100 * r[f'{k}_rate']:5.1f}% [{100 * r[f'{k}_lo']:.0f}-{100 * r[f'{k}_hi']:.0f}]"  # noqa: E731
    validate(lm, a.languages.split(","), gen, a.others, report=lambda r: print(
        f"{r['language']:9s} {r['n']:4d}  {ci(r, 'accept'):>24s}  {ci(r, 'reject'):>24s}  "
        f"{r['median_pmi_true']:+.3f} / {r['median_pmi_shuffled']:+.3f}", flush=True))
    print(f"wall {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
