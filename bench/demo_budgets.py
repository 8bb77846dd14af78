"""Do the demo's smaller budgets find the same neurons and the same matrix? One comparison.

    python bench/demo_budgets.py SMALL_RUN LARGE_RUN

Both folders are `langloc demo -o ...` runs, e.g. the default (16,384 statistics tokens,
512 held-out tokens per language) against `--tokens 32768 --eval-tokens 1024 --eval-window 512`
(the earlier defaults). Prints, per language, the sizes and Jaccard of the two LAPE sets and the
share of the larger run's neurons that the smaller one finds; then, per zeroed set, the two
rows of perplexity ratios, whether the own language is the largest in both, and the largest
absolute difference of log-ratios. The CPU class is printed with the figures.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from langloc import machine
from langloc.identify import NeuronSet


def read_matrix(run: Path) -> dict[tuple[str, str], float]:
    with open(run / "ablation.csv", encoding="utf-8") as fh:
        return {(r["deactivated"], r["evaluated"]): float(r["ratio"]) for r in csv.DictReader(fh)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("small", type=Path)
    ap.add_argument("large", type=Path)
    args = ap.parse_args()
    print(machine.summary())
    a, b = NeuronSet.load(args.small / "neurons" / "lape.json"), NeuronSet.load(args.large / "neurons" / "lape.json")
    print(f"\nLAPE sets: {args.small} ({a.unique_count()} neurons) vs {args.large} ({b.unique_count()})")
    print(f"{'lang':>5} {'small':>6} {'large':>6} {'shared':>6} {'jaccard':>8} {'found':>6}")
    for lang in b.languages:
        x, y = a.mask(lang), b.mask(lang)
        inter, union = int((x & y).sum()), int((x | y).sum())
        found = inter / int(y.sum()) if y.any() else float("nan")
        print(f"{lang:>5} {int(x.sum()):>6} {int(y.sum()):>6} {inter:>6} {inter / max(union, 1):>8.2f} {found:>6.2f}")
    ma, mb = read_matrix(args.small), read_matrix(args.large)
    langs = b.languages
    print("\nperplexity ratios, small / large budget; * = own language largest in the row")
    print(f"{'zeroed':>10} " + " ".join(f"{e:>11}" for e in langs) + "  max|dlog|")
    agree = 0
    for name in list(dict.fromkeys(d for d, _ in mb)):
        ra, rb = [ma[(name, e)] for e in langs], [mb[(name, e)] for e in langs]
        star = lambda r: "*" if name in langs and r[langs.index(name)] == max(r) else " "  # noqa: E731
        if name in langs:
            agree += star(ra) == star(rb)
        diff = max(abs(math.log(x) - math.log(y)) for x, y in zip(ra, rb))
        print(f"{name:>10}{star(ra)}{star(rb)}" + " ".join(f"{x:>5.2f}/{y:<5.2f}" for x, y in zip(ra, rb)) + f"  {diff:.2f}")
    print(f"\nown language largest: same verdict for {agree}/{len(langs)} languages")


if __name__ == "__main__":
    main()
