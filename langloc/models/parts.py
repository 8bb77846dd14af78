"""A file that a registry ships in numbered parts, put back together once and checked.

Registries cap the size of one package, so a GGUF of a billion parameters comes as packages
``<prefix>1`` … ``<prefix>N``, each holding one piece ``data/partNN.bin``. langloc concatenates
them in numeric order into the user's cache under a temporary name, checks the size and sha256
of the whole, and only then renames it into place: a missing part, a damaged download or a
killed assembly never leaves a file that a later run would take for the model.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from langloc.artefacts import atomic_path
from langloc.errors import LanglocError

_CHUNK = 1 << 22  # 4 MiB: large enough to stream at disk speed, small enough to keep memory flat


@dataclass(frozen=True)
class PartedFile:
    """What the assembled file must be, and where its parts are installed."""

    name: str  # what the file is, to begin every message with
    package: str  # import name of part i is f"{package}{i}"
    count: int  # parts 1 .. count
    size: int  # bytes of the assembled file
    sha256: str
    remedy: str  # what to run when a part is missing or the whole does not check out

    def piece(self, i: int) -> str:
        """The path of part ``i`` inside its package."""
        return f"data/part{i:02d}.bin"

    def locate(self) -> list[Path]:
        """The installed parts in numeric order; one error line naming the missing ones."""
        found, missing = [], []
        for i in range(1, self.count + 1):
            spec = importlib.util.find_spec(f"{self.package}{i}")
            path = Path(spec.submodule_search_locations[0]) / self.piece(i) \
                if spec is not None and spec.submodule_search_locations else None
            if path is None or not path.is_file():
                missing.append(i)
            else:
                found.append(path)
        if missing:
            one = len(missing) == 1
            raise LanglocError(f"{self.name}: {'part' if one else 'parts'} {_ranges(missing)} of "
                               f"{self.package}1-{self.count} {'is' if one else 'are'} not installed; {self.remedy}")
        return found


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``, so that a message about 22 parts stays one short line."""
    groups: list[list[int]] = []
    for n in numbers:
        if groups and n == groups[-1][1] + 1:
            groups[-1][1] = n
        else:
            groups.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in groups)


def _digest(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _check(what: PartedFile, size: int, digest: str, source: str) -> None:
    if size != what.size or digest != what.sha256:
        raise LanglocError(f"{what.name}: {source} is {size:,} bytes with sha256 {digest[:16]}…, "
                           f"expected {what.size:,} bytes with sha256 {what.sha256[:16]}…; {what.remedy}")


def assemble(what: PartedFile, target: Path) -> Path:
    """Return ``target``, assembling it from the installed parts unless it is already there and
    checks out. The check reads the whole file (a few seconds per GB), which is only needed
    before a conversion, once per cache."""
    target = Path(target)
    if target.is_file():
        size, digest = _digest(target)
        if (size, digest) == (what.size, what.sha256):
            return target
        target.unlink()  # a damaged cached copy: assemble it again from the parts
    parts = what.locate()
    h, size = hashlib.sha256(), 0
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
        # Raising here leaves no file behind: atomic_path removes the temporary one.
        _check(what, size, h.hexdigest(), f"the {what.count} parts {what.package}1-{what.count} assembled")
    return target
