"""Language-ID filtering of a corpus: keep a document only if py3langid gives it the language
it is filed under with probability at least ``threshold``.

A document is what the corpus yields: a line of a ``<lang>.txt`` file (one per line), a JSONL
record, a parquet row, a Bible chapter, a Hugging Face dataset row. Probabilities are
normalised over a candidate set (:data:`langloc.data.langid.DEFAULT_CANDIDATES`, the 22
languages of the built-in Bible, plus the language filtered): over all 97 py3langid languages,
short French verses go to ``lb`` or ``oc`` and 1.3% of true French verses fall below 0.5; over
the candidates, 0.65% (mostly lists of names), while no English verse reaches 0.5 for French
(``bench/lid_filter.py``).

The filter counts, per language and split, the documents (and, given a tokenizer, the tokens)
it read, and what it dropped and as which language (:meth:`LidFilter.report`). Only the
documents read are counted: a step that stops at its token budget reads no further.
Identification is deterministic, so the same corpus and settings keep the same documents.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from langloc.data.corpora import Corpus
from langloc.data.langid import DEFAULT_CANDIDATES, LanguageIdentifier
from langloc.errors import LanglocError

# P(language | text) below which a document is dropped (normalised over the candidates).
DEFAULT_THRESHOLD = 0.5
# Where an artefact (run.json, importance.json, ablation.manifest.json) keeps, per language,
# what the filter dropped.
LID_REPORT = "lid_filter_report"
# A filter that drops more than this share of a language's documents is warned about.
MOST = 0.5


def identifier_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"py3langid {version('py3langid')}"
    except PackageNotFoundError:
        raise LanglocError("language identification needs py3langid: pip install 'langloc[langid]'") from None


@dataclass
class _Tally:
    documents: int = 0
    tokens: int = 0
    dropped_documents: int = 0
    dropped_tokens: int = 0
    dropped_to: dict = field(default_factory=dict)  # language -> [documents, tokens]

    def as_dict(self, counts_tokens: bool) -> dict:
        d = {"documents": self.documents, "dropped_documents": self.dropped_documents,
             "dropped_document_share": self.dropped_documents / self.documents if self.documents else 0.0}
        if counts_tokens:
            d.update(tokens=self.tokens, dropped_tokens=self.dropped_tokens,
                     dropped_token_share=self.dropped_tokens / self.tokens if self.tokens else 0.0)
        d["dropped_to"] = {lang: ({"documents": n, "tokens": t} if counts_tokens else {"documents": n})
                           for lang, (n, t) in sorted(self.dropped_to.items(), key=lambda kv: -kv[1][0])}
        return d


@dataclass
class LidFilter(Corpus):
    """``inner``'s documents whose identified probability of their language is >= ``threshold``."""

    inner: Corpus
    threshold: float = DEFAULT_THRESHOLD
    candidates: tuple = DEFAULT_CANDIDATES
    tokenizer: object = None  # a Hugging Face tokenizer: the report also counts tokens
    _tallies: dict = field(default_factory=dict, init=False, repr=False)
    _identifiers: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise LanglocError(f"the language-ID threshold must be in (0, 1], got {self.threshold}")
        self.candidates = tuple(self.candidates)
        self.name = self.inner.name
        self.version = identifier_version()

    def languages(self) -> list[str]:
        return self.inner.languages()

    def check_languages(self, langs: list[str]) -> None:
        self.inner.check_languages(langs)
        for lang in langs:
            self._identifier(lang)

    def settings(self) -> dict:
        return {"identifier": self.version, "threshold": self.threshold, "candidates": list(self.candidates)}

    def describe(self) -> dict:
        return {**self.inner.describe(), "lid_filter": self.settings()}

    def _identifier(self, lang: str) -> LanguageIdentifier:
        key = self.candidates if lang in self.candidates else self.candidates + (lang,)
        if key not in self._identifiers:
            try:
                self._identifiers[key] = LanguageIdentifier(key)
            except LanglocError as exc:
                raise LanglocError(f"{exc}: run without --lid-filter for language {lang!r}") from None
        return self._identifiers[key]

    def use_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if self.tokenizer else 0

    def documents(self, lang: str, split: str) -> Iterator[str]:
        identify = self._identifier(lang)
        tally = self._tallies[(lang, split)] = _Tally()  # each pass starts from the corpus's start
        for doc in self.inner.documents(lang, split):
            p, top = identify.probability(doc, lang)
            n = self._count(doc)
            tally.documents += 1
            tally.tokens += n
            if p >= self.threshold:
                yield doc
                continue
            tally.dropped_documents += 1
            tally.dropped_tokens += n
            to = tally.dropped_to.setdefault(top, [0, 0])
            to[0] += 1
            to[1] += n

    def report(self, lang: str, split: str) -> dict | None:
        tally = self._tallies.get((lang, split))
        return None if tally is None else tally.as_dict(self.tokenizer is not None)

    def skip_note(self, lang: str, split: str) -> str:
        note = self.inner.skip_note(lang, split)
        r = self.report(lang, split)
        if r and r["dropped_document_share"] > MOST:
            to = ", ".join(f"{k} {v['documents']}" for k, v in list(r["dropped_to"].items())[:5])
            note += (f"; the language-ID filter dropped {r['dropped_documents']} of {r['documents']} document(s) "
                     f"as not {lang!r} with probability >= {self.threshold} (identified as {to}); "
                     "lower --lid-threshold or check the text")
        return note
