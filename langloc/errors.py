"""One exception type for every user-facing failure.

The CLI prints ``error: <message>`` on one line and exits with status 2; library users catch
:class:`LanglocError`. Messages say what was wrong and what to do instead.
"""


class LanglocError(Exception):
    """A problem with the user's input (model, corpus, parameters, artefacts)."""


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise a LanglocError unless ``low (<|<=) value <= high``."""
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise LanglocError(f"{name} must be in {bracket}{low}, {high}], got {value}")
