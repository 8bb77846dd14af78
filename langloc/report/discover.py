"""Find the study outputs under folders by their manifests (docs/artefacts.md).

Every JSON document under the folders whose ``kind`` names a langloc artefact is one output:
``run.json``, ``neurons/*.json``, ``steer.json``, ``regions.json``, the ``<name>.manifest.json``
beside a study's CSV, ... . Safetensors files are not opened: what they hold is summarised by
the JSON document of the same step (``run.json`` for statistics, ``importance.json`` for scores,
``regions.json`` for regions).

The report only reads, so it shows what it can rather than refusing: a document that
:func:`langloc.manifest.read_manifest` refuses for its format (files written before the
manifest, format 1) or whose kind this langloc does not know (a newer langloc's) is still
shown, with a note that says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from langloc import kinds
from langloc.errors import LanglocError
from langloc.manifest import KINDS, read_manifest

# JSON documents larger than this are data, not manifests (a steering study's steer.json with
# its search details stays far below it).
_MAX_JSON_BYTES = 64 << 20
# Folders that hold transient state, never an output.
_SKIP_DIRS = {".partial", ".parts", "__pycache__", ".git"}  # .parts: resumable steps of steer and validate


@dataclass
class Output:
    """One study output: its kind, the file that carries its manifest, and that document."""

    kind: str
    path: Path
    doc: dict
    note: str | None = None  # why it is shown with less trust (old format, unknown kind)
    extra: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def command(self) -> str | None:
        """The command line that made it (the manifest's ``command``), as one string."""
        cmd = self.doc.get("command")
        if isinstance(cmd, list) and cmd:
            import shlex

            first = Path(str(cmd[0]))
            # sys.argv[0] is a path: the langloc script, a Python program, or a package's
            # __main__.py (python -m pkg) for library calls.
            prog = (f"python -m {first.parent.name}" if first.name == "__main__.py"
                    else f"python {shlex.quote(str(first))}" if first.suffix == ".py" else first.name)
            return " ".join([prog, *(shlex.quote(str(c)) for c in cmd[1:])])
        return cmd if isinstance(cmd, str) else None

    def listed(self, suffix: str) -> list[Path]:
        """The files the manifest lists under ``outputs`` that end in ``suffix`` and exist."""
        files = [self.folder / p for p in self.doc.get("outputs", []) if str(p).endswith(suffix)]
        return [p for p in files if p.is_file()]


def _read(path: Path) -> dict | None:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def classify(path: Path, doc: dict) -> Output | None:
    """The output a JSON document is, or None if it is not a langloc artefact."""
    kind = doc.get("kind")
    if kind is None and path.name == "run.json" and "langloc_version" in doc and "languages" in doc:
        # Run files of format 1 had no kind.
        return Output(kinds.RUN, path, doc, note="format 1 (written before manifests): some fields are missing")
    if not isinstance(kind, str) or not kind.startswith("langloc."):
        return None
    if kind not in KINDS:
        return Output(kind, path, doc, note=f"kind {kind} is unknown to this langloc: shown as it is")
    try:
        read_manifest(doc, kind, where=path)
    except LanglocError as exc:
        if doc.get("format_version", 1) != 1:
            return Output(kind, path, doc, note=str(exc))
        return Output(kind, path, doc, note="format 1 (written before manifests): some fields are missing")
    return Output(kind, path, doc)


def _legacy_ablation(run: Output) -> Output | None:
    """A format-1 run's ``ablation.csv`` had no manifest beside it."""
    csv = run.folder / "ablation.csv"
    if not csv.is_file() or (run.folder / "ablation.manifest.json").is_file():
        return None
    doc = {"kind": kinds.ABLATION, "model": run.doc.get("model"), "corpus": run.doc.get("corpus"),
           "outputs": ["ablation.csv", "plots/ablation.png"]}
    return Output(kinds.ABLATION, csv, doc,
                  note="format 1 (written before manifests): no manifest beside ablation.csv")


def discover(paths: list[str | Path]) -> list[Output]:
    """Every output under ``paths`` (folders or single JSON files), in a stable order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*.json") if not _SKIP_DIRS & set(f.relative_to(p).parts))
        else:
            raise LanglocError(f"{p} not found: give run folders or study output folders (or their JSON files)")
    found, seen = [], set()
    for f in files:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        doc = _read(f)
        out = classify(f, doc) if doc is not None else None
        if out is None:
            continue
        found.append(out)
        if out.kind == kinds.RUN and out.note:
            legacy = _legacy_ablation(out)
            if legacy is not None:
                found.append(legacy)
    return found
