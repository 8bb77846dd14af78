"""Language identification (py3langid), shared by the steering judge and the corpus filter.

py3langid is restricted to a candidate set (by default the 22 languages of the built-in Bible
corpus): the full model also answers with close relatives such as ``wuu``/``yue`` for Mandarin
text or ``lb``/``oc`` for short French lines, which would count text in the language as another.
"""

from __future__ import annotations

from langloc.errors import LanglocError

DEFAULT_CANDIDATES = ("en", "zh", "fr", "es", "ru", "ja", "ar", "hi", "vi", "id", "de", "pt", "it", "ko", "tr",
                      "bn", "fa", "sw", "uk", "pl", "ro", "tl")


class LanguageIdentifier:
    """py3langid restricted to ``candidates`` (ISO 639-1 codes); probabilities normalised over them."""

    def __init__(self, candidates=DEFAULT_CANDIDATES):
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier as _LI
        except ModuleNotFoundError:
            raise LanglocError("language identification needs py3langid: pip install 'langloc[langid]'") from None
        self._id = _LI.from_model_file(MODEL_FILE, norm_probs=True)
        unknown = sorted(set(candidates) - set(self._id.nb_classes))
        if unknown:
            raise LanglocError(f"py3langid does not know {', '.join(unknown)}")
        self.candidates = list(dict.fromkeys(candidates))
        self._id.set_languages(self.candidates)

    def __call__(self, text: str) -> tuple[str, float]:
        """The likeliest candidate and its probability (``("none", 0.0)`` for blank text)."""
        if not text.strip():
            return "none", 0.0
        lang, prob = self._id.classify(text)
        return lang, float(prob)

    def probability(self, text: str, lang: str) -> tuple[float, str]:
        """``(P(lang | text), the likeliest candidate)``; ``(0.0, "none")`` for blank text."""
        if not text.strip():
            return 0.0, "none"
        ranked = self._id.rank(text)
        return next((float(p) for code, p in ranked if code == lang), 0.0), ranked[0][0]
