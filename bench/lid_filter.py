"""Language-ID filtering (``--lid-filter``): what it drops of the Bible, and what it costs.

    python bench/lid_filter.py [--model gemma-3-270m] [--corpus bible|DIR] [--tokens 16384] [--repeats 2]

1. Drop rates on the Bible (the 10 demo languages, stats split), where every text is in its
   language, so that every drop is a false one: per document as collection filters it (a
   chapter), and per verse (the unit of a line-based corpus of short lines).
2. Collection overhead, in one run: ``collect`` of one language's ``--tokens`` with and without
   the filter, in alternating rounds (fastest rounds compared), and the filter's own work
   (identifying every document the collection read, and tokenizing it once more for the
   report's token counts) timed alone on the same documents; the ratio (collection + filter) /
   collection is printed with the CPU class. On a shared machine whole-run wall times vary by
   more than the filter costs, so the second ratio is the one to read.
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


def filter_seconds(corpus_spec: str, lang: str, tokenizer, documents: int, repeats: int = 3) -> float:
    """The filter's own work on the first ``documents`` documents (what a collection read):
    identification and the report's token count, timed alone (fastest of ``repeats``)."""
    plain = load_corpus(corpus_spec)
    docs = [d for _, d in zip(range(documents), plain.documents(lang, "stats"))]
    filtered = load_corpus(corpus_spec, lid_filter={"threshold": DEFAULT_THRESHOLD})
    filtered.use_tokenizer(tokenizer)
    identify = filtered._identifier(lang)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for d in docs:
            identify.probability(d, lang)
            filtered._count(d)
        best = min(best, time.perf_counter() - t)
    return best


def overhead(model: str, corpus: str, lang: str, tokens: int, window: int, repeats: int, dtype: str) -> None:
    from langloc.models import load_model
    from langloc.stats import CollectConfig, collect

    lm = load_model(model, dtype=dtype)
    corpora = {"plain": lambda: load_corpus(corpus),
               "filtered": lambda: load_corpus(corpus, lid_filter={"threshold": DEFAULT_THRESHOLD})}
    times = {name: [] for name in corpora}
    read = {}

    def once(name: str) -> float:
        c = corpora[name]()
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            collect(lm, c, CollectConfig(out=out, languages=[lang], tokens=tokens, window=window), progress=False)
            seconds = time.perf_counter() - t
        if c.report(lang, "stats") is not None:
            read.update(c.report(lang, "stats"))
        return seconds

    once("plain"), once("filtered")  # warm-up: allocator, kernels, py3langid's model
    for _ in range(repeats):
        for name in corpora:
            times[name].append(once(name))
    best = {name: min(t) for name, t in times.items()}
    own = filter_seconds(corpus, lang, lm.tokenizer, read["documents"])
    print(machine.summary())
    print(f"model {model} ({lm.meta['dtype']}), corpus {corpus}, {lang}, {tokens} tokens in windows of {window}, "
          f"{repeats} alternating rounds; the filter read {read['documents']} documents, dropped "
          f"{read['dropped_documents']}")
    for name, t in times.items():
        print(f"collect, {name:8s}: fastest {best[name]:7.2f} s  (rounds: {', '.join(f'{x:.2f}' for x in t)})")
    print(f"the filter's own work on those documents (identify + count tokens): {own:.3f} s")
    print(f"ratio (collection + filter) / collection    : {(best['plain'] + own) / best['plain']:.4f}")
    print(f"ratio filtered / plain, fastest rounds        : {best['filtered'] / best['plain']:.3f} "
          "(wall time of whole runs: other work on the machine moves it more than the filter)")


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
