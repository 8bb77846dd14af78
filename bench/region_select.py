"""Picking a region's entries: selection (``kthvalue``, what ``langloc regions`` does) against
the full stable sort it replaced, on one matrix of a given size, in alternating rounds.

    python bench/region_select.py [--rows 8960] [--cols 1536] [--rate 0.01] [--repeats 5] [--threads 1]

The default shape is one MLP matrix of qwen2.5-coder-1.5b (13.8 M entries); the scores are
random numbers rounded to bfloat16, as importance scores are stored, so ties occur at the
boundary. Both picks are checked to be the same entries. Prints the medians, their ratio and
the CPU class.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from langloc import machine
from langloc.regions.regions import _bottom, _top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8960)
    ap.add_argument("--cols", type=int, default=1536)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(machine.summary())
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(a.rows, a.cols, generator=g).to(torch.bfloat16).float()
    k = max(1, int(a.rate * scores.numel()))
    flat = scores.flatten()

    def by_sort():
        return (torch.sort(flat, descending=True, stable=True).indices[:k].sort().values,
                torch.sort(flat, stable=True).indices[:k].sort().values)

    def by_selection():
        return _top(scores, k), _bottom(scores, k)

    sort_s, select_s = [], []
    for _ in range(a.repeats):  # alternating rounds: drift in the machine's speed hits both alike
        for fn, times in ((by_sort, sort_s), (by_selection, select_s)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    assert all(torch.equal(x, y) for x, y in zip(by_sort(), by_selection())), "selection differs from the sort"
    s, q = statistics.median(sort_s), statistics.median(select_s)
    print(f"{a.rows} x {a.cols} matrix, k = {k} (top and bottom), {a.threads} thread(s), {a.repeats} rounds")
    print(f"stable sort: {s:.3f} s   selection: {q:.3f} s   sort / selection: {s / q:.2f}x (same entries)")


if __name__ == "__main__":
    main()
