"""Memory hygiene of the collection loop: mapped embedding pages are handed back, and only
when that cannot lose anything (pages written to are never dropped)."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from langloc.stats.counters import _PAGE_SIZE, MappedPages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc/self/pagemap")


def _resident_pages(pages: MappedPages) -> int:
    n = (pages.stop - pages.start) // _PAGE_SIZE
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        f.seek(pages.start // _PAGE_SIZE * 8)
        raw = f.read(n * 8)
    return sum(int.from_bytes(raw[i:i + 8], "little") >> 63 for i in range(0, len(raw), 8))


@pytest.fixture
def mapped(tmp_path):
    expected = torch.randn(512, 1024)
    save_file({"w": expected}, str(tmp_path / "w.safetensors"))
    return load_file(str(tmp_path / "w.safetensors"))["w"], expected


def test_read_pages_are_released_and_read_back_unchanged(mapped):
    table, expected = mapped
    pages = MappedPages.of(table)
    assert pages is not None
    assert torch.equal(table, expected)  # reads every page
    assert _resident_pages(pages) > 0
    assert pages.release()
    assert _resident_pages(pages) == 0
    assert torch.equal(table, expected)  # mapped again from the file, same values


def test_written_pages_are_never_dropped(mapped):
    table, expected = mapped
    pages = MappedPages.of(table)
    table[100, 5] = 7.0  # copy-on-write: this page is now the process's own
    assert not pages.unwritten()
    assert not pages.release()
    assert table[100, 5] == 7.0 and torch.equal(table[:100], expected[:100])


def test_tensors_not_in_a_file_mapping_get_no_pages():
    assert MappedPages.of(torch.randn(512, 1024)) is None
    assert MappedPages.of(None) is None


def test_counts_do_not_depend_on_releasing_embedding_pages(tmp_path):
    """The counter releases the embedding table's pages after every lookup; the counts are the
    same as with a table in ordinary memory."""
    from langloc.models import load_model
    from langloc.stats.counters import ActivationCounter
    from tiny import save_tiny_llama

    folder = save_tiny_llama(tmp_path / "tiny")
    ids = torch.randint(3, 260, (2, 64), generator=torch.Generator().manual_seed(0))
    states = []
    for copy in (False, True):
        lm = load_model(str(folder), dtype="float32", device="cpu")
        emb = lm.model.get_input_embeddings()
        if copy:
            emb.weight.data = emb.weight.data.clone()
        counter = ActivationCounter(lm, skip_first_position=True)
        assert (counter._embedding_pages is None) == copy
        with counter, torch.inference_mode():
            for _ in range(3):
                counter.run(ids)
        states.append(counter.state())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
