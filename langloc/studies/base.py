"""The shape every study has: a config dataclass that round-trips through JSON, and ``run``.

A study module (one per experiment, see :mod:`langloc.studies`) defines

- ``Config``: a dataclass (with :class:`StudyConfig`) whose fields are the study's settings,
  documented in its docstring; ``Config.from_json(c.to_json()) == c``;
- ``KIND``: the manifest kind of its main output (a key of :data:`langloc.manifest.KINDS`);
- ``run(lm, config, out) -> Manifest``: checks the config, loads the model where ``lm`` is
  None (after every check that needs no model, so bad input fails fast), computes, writes
  every file into ``out`` with its manifest and returns that manifest. Its in-memory results
  (rows, summaries) are the manifest's ``result`` attribute, for printing.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from langloc.data.loading import run_corpus, run_corpus_spec  # noqa: F401 (the studies' helpers)
from langloc.errors import LanglocError
from langloc.models.loading import load_model_of  # noqa: F401


class Manifest(dict):
    """The manifest a study wrote (a dict, as :func:`langloc.manifest.make_manifest` makes it),
    with the study's in-memory results as ``result`` and its main output as ``path``. Under
    torchrun the processes other than the first write nothing: their manifest is empty."""

    def __init__(self, doc: dict | None = None, *, result: Any = None, path: Path | None = None):
        super().__init__(doc or {})
        self.result = result
        self.path = path


def _coerce(tp, value):
    """``value`` (from JSON or a command line) as the field type ``tp``: Paths from strings,
    tuples from lists or comma-separated strings, numbers inside tuples from strings."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if tp is Path:
        return Path(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        elem = args[0] if args else Any
        return tuple(_coerce(elem, v) for v in value)
    if tp in (int, float) and isinstance(value, str):
        try:
            return tp(value)
        except ValueError:
            return value  # left for the study's checks to name (check_numbers)
    return value


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class StudyConfig:
    """Mixin for a study's config dataclass: JSON round trip and construction from options."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(hints[f.name], getattr(self, f.name)))

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise LanglocError(f"unknown setting(s) {', '.join(unknown)} for {cls.__module__}.{cls.__qualname__}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_options(cls, options: dict, **renamed):
        """The config from a command's options (its ``locals()``): every option named like a
        field, and ``renamed`` (field -> value) for the others; options no field has are left."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names}, **renamed)


def field_default(config_class, name: str):
    """The default of field ``name`` of the dataclass ``config_class`` (its default factory's
    value where it has one): where the command line reads its option defaults, so that each
    default is stated once, in the config."""
    for f in dataclasses.fields(config_class):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise TypeError(f"{config_class.__qualname__}.{name} has no default")
    raise KeyError(f"{config_class.__qualname__} has no field {name!r}")


def split_list(spec: str | None) -> list[str]:
    """``"en, fr,,zh"`` -> ``["en", "fr", "zh"]``."""
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


def check_numbers(option: str, values, kind: str = "numbers") -> None:
    """Refuse a list option whose entries did not parse as numbers (they stay strings)."""
    if values and any(isinstance(v, str) for v in values):
        raise LanglocError(f"--{option} must be comma-separated {kind}, got {','.join(map(str, values))!r}")


def check_choices(what: str, given, allowed) -> None:
    """Refuse an empty selection or one with names not in ``allowed``."""
    bad = [m for m in given if m not in allowed]
    if bad or not given:
        raise LanglocError(f"unknown {what}(s) {', '.join(bad) or '(none)'}; choose from {', '.join(allowed)}")
