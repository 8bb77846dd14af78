"""Many processes, one result; killed runs resume to the same bits."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from langloc.data import FolderCorpus
from langloc.errors import LanglocError
from langloc.models import load_model
from langloc.stats import ActivationCounter, ActivationStats, CollectConfig, collect
from tiny import save_tiny_llama, write_folder_corpus

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # same kernels in every process


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return save_tiny_llama(root / "tiny"), write_folder_corpus(root / "corpus", repeat=200)


def same_bits(a: ActivationStats, b: ActivationStats) -> bool:
    """Every counter equal bit for bit, the residual sums (DiffMean's means) included."""
    assert a.resid_sum is not None and b.resid_sum is not None  # collect keeps them: they are compared, not skipped
    return (a.languages == b.languages and torch.equal(a.n, b.n) and torch.equal(a.over_zero, b.over_zero)
            and torch.equal(a.active_sum, b.active_sum) and torch.equal(a.act_sum, b.act_sum)
            and torch.equal(a.resid_sum, b.resid_sum))


def cli(*args):
    return [sys.executable, "-m", "langloc.cli", *map(str, args)]


def collect_args(model, corpus, out, tokens=2048):
    return ["collect", "-m", model, "--corpus", corpus, "-l", "en,ru", "--tokens", tokens, "--window", "64",
            "--batch-size", "2", "--device", "cpu", "-o", out]


def test_two_gloo_processes_give_the_single_process_result_bit_for_bit(files, tmp_path):
    model, corpus = files
    single = subprocess.run(cli(*collect_args(model, corpus, tmp_path / "one")), env=ENV, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "langloc.cli", *map(str, collect_args(model, corpus, tmp_path / "two"))],
        env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = ActivationStats.load(tmp_path / "one"), ActivationStats.load(tmp_path / "two")
    assert same_bits(one, both)


def test_interrupted_at_any_batch_then_resumed_equals_uninterrupted(files, tmp_path, monkeypatch):
    model, corpus = files
    lm = load_model(str(model), device="cpu")
    c = FolderCorpus(corpus)
    kw = dict(tokens=1024, window=64, batch_size=2, checkpoint_every=1)
    reference = collect(lm, c, CollectConfig(out=tmp_path / "ref", languages=["en", "ru"], **kw), progress=False)
    real_run = ActivationCounter.run
    for stop_after in (1, 4, 8, 11):  # 8 batches per language: inside en, at its end, inside ru
        calls = {"n": 0}

        def dying_run(self, ids):
            if calls["n"] == stop_after:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real_run(self, ids)

        out = tmp_path / f"stop{stop_after}"
        monkeypatch.setattr(ActivationCounter, "run", dying_run)
        with pytest.raises(KeyboardInterrupt):
            collect(lm, c, CollectConfig(out=out, languages=["en", "ru"], **kw), progress=False)
        monkeypatch.setattr(ActivationCounter, "run", real_run)
        if any((out / "stats" / ".partial").glob("*")):  # a checkpoint is not silently discarded
            with pytest.raises(LanglocError, match="--resume"):
                collect(lm, c, CollectConfig(out=out, languages=["en", "ru"], **kw), progress=False)
        assert same_bits(collect(lm, c, CollectConfig(out=out, languages=["en", "ru"], resume=True, **kw),
                                 progress=False), reference)
        assert not list((out / "stats" / ".partial").glob("*"))


def test_sigkilled_process_resumes_to_the_same_bits(files, tmp_path):
    model, corpus = files
    args = collect_args(model, corpus, tmp_path / "run", tokens=12800) + ["--checkpoint-every", "3"]
    ref = subprocess.run(cli(*collect_args(model, corpus, tmp_path / "ref", tokens=12800)), env=ENV,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(cli(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "run" / "stats" / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.is_dir() and any(partial.glob("*.safetensors"))):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "stats" / "ru.safetensors").exists(), "the run finished before it was killed"
    resumed = subprocess.run(cli(*args, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert same_bits(ActivationStats.load(tmp_path / "run"), ActivationStats.load(tmp_path / "ref"))
