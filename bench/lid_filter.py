"""Language-ID filtering (``--lid-filter``): what it drops of the Bible, and what it costs.

    python bench/lid_filter.py [--model gemma-3-270m] [--corpus bible|DIR] [--tokens 16384] [--repeats 2]

1. Drop rates on the Bible (the 10 demo languages, stats split), where every text is in its
   language, so that every drop is a false one: per document as collection filters it (a
   chapter), and per verse (the unit of a line-based corpus of short lines).
2. Collection overhead, in one run: ``collect`` of one language's ``--tokens`` with and without
   the filter, in alternating rounds (medians compared), the ratio printed with the CPU class.
   The filter's cost is the identification of every document read plus tokenizing it once
   more for the report's token counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from langloc import machine
from langloc.data import load_corpus
from langloc.data.bible import bible_verses
from langloc.data.langid import DEFAULT_CANDIDATES, LanguageIdentifier
from langloc.data.lid_filter import DEFAULT_THRESHOLD

LANGUAGES = ("en", "zh", "fr", "es", "ru", "ja", "ar", "hi", "vi", "id")


def drop_rates(threshold: float) -> None:
    filtered = load_corpus("bible", lid_filter={"threshold": threshold})
    identify = LanguageIdentifier(DEFAULT_CANDIDATES)
    print(f"Bible, stats split, threshold {threshold} (candidates: the 22 Bible languages)")
    print(f"{'language':9s} {'chapters dropped':>18s} {'verses dropped':>20s}  verses dropped, as")
    for lang in LANGUAGES:
        for _ in filtered.documents(lang, "stats"):
            pass
        r = filtered.report(lang, "stats")
        verses = list(bible_verses(lang, "stats").values())
        low = [identify.probability(v, lang) for v in verses]
        dropped = [top for p, top in low if p < threshold]
        tops = {}
        for top in dropped:
            tops[top] = tops.get(top, 0) + 1
        top3 = ", ".join(f"{k} {n}" for k, n in sorted(tops.items(), key=lambda kv: -kv[1])[:3])
        print(f"{lang:9s} {r['dropped_documents']:>7d}/{r['documents']:<5d} {r['dropped_document_share']:6.2%}"
              f" {len(dropped):>6d}/{len(verses):<5d} {len(dropped) / len(verses):6.2%}  {top3}")


def overhead(model: str, corpus: str, lang: str, tokens: int, window: int, repeats: int, dtype: str) -> None:
    from langloc.models import load_model
    from langloc.stats import collect

    lm = load_model(model, dtype=dtype)
    corpora = {"plain": lambda: load_corpus(corpus),
               "filtered": lambda: load_corpus(corpus, lid_filter={"threshold": DEFAULT_THRESHOLD})}
    times = {name: [] for name in corpora}

    def once(name: str) -> float:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            collect(lm, corpora[name](), [lang], out=out, tokens=tokens, window=window, progress=False)
            return time.perf_counter() - t

    once("plain"), once("filtered")  # warm-up: allocator, kernels, py3langid's model
    for _ in range(repeats):
        for name in corpora:
            times[name].append(once(name))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(machine.summary())
    print(f"model {model} ({lm.meta['dtype']}), corpus {corpus}, {lang}, {tokens} tokens in windows of {window}, {repeats} rounds")
    for name, t in times.items():
        print(f"collect, {name:8s}: {med[name]:7.2f} s  (rounds: {', '.join(f'{x:.2f}' for x in t)})")
    print(f"ratio filtered / plain wall time: {med['filtered'] / med['plain']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--corpus", default="bible", help="bible (a document is a chapter) or a folder of <lang>.txt lines")
    ap.add_argument("--language", default="fr")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--no-overhead", action="store_true", help="only the Bible drop rates")
    ap.add_argument("--no-drop-rates", action="store_true", help="only the overhead")
    args = ap.parse_args()
    if not args.no_drop_rates:
        drop_rates(args.threshold)
    if not args.no_overhead:
        overhead(args.model, args.corpus, args.language, args.tokens, args.window, args.repeats, args.dtype)


if __name__ == "__main__":
    main()
