"""Faults: disk full while saving, Ctrl-C, binary files, artefacts of another model or tokenizer."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from langloc.identify import NeuronSet
from langloc.stats import ActivationStats
from test_cli import error_line, invoke
from tiny import save_tiny_llama, write_folder_corpus

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return save_tiny_llama(root / "tiny"), write_folder_corpus(root / "corpus", repeat=200)


def collect_args(model, corpus, out, tokens=512):
    return ["collect", "-m", model, "--corpus", corpus, "-l", "en,fr", "--tokens", tokens, "--window", "64",
            "--device", "cpu", "-o", out]


def test_disk_full_while_saving_leaves_no_corrupt_artefact(files, tmp_path, capsys, monkeypatch):
    import langloc.stats.activation_stats as mod

    real = mod.save_file

    def full_disk(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)  # the bytes land in the temporary file...
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device", path)  # ...then the disk is full

    monkeypatch.setattr(mod, "save_file", full_disk)
    model, corpus = files
    run = tmp_path / "run"
    assert invoke(*collect_args(model, corpus, run)) == 2
    assert "No space left on device" in error_line(capsys)
    leftovers = [p.name for p in run.rglob("*") if p.is_file()]
    assert not any(name.endswith(".safetensors") or name.endswith(".tmp") for name in leftovers), leftovers


def test_ctrl_c_exits_cleanly_and_the_run_resumes(files, tmp_path):
    # The run must outlast the signal by far: a fast CI machine once finished 2 x 50 batches of a
    # small corpus between the first checkpoint and the SIGINT (exit 0, not 130). Here 2 x 500
    # batches take seconds while the first checkpoint lands after 20.
    model, _ = files
    corpus = write_folder_corpus(tmp_path / "corpus", langs=("en", "fr"), repeat=2000)
    tokens = 128000
    args = collect_args(model, corpus, tmp_path / "run", tokens=tokens) + ["--checkpoint-every", "20"]
    proc = subprocess.Popen([sys.executable, "-m", "langloc.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "run" / "stats" / ".partial"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.is_dir() and any(partial.glob("*.safetensors"))):
        time.sleep(0.005)
    assert proc.poll() is None, "the collection ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "langloc.cli", *map(str, args), "--resume"], env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = subprocess.run([sys.executable, "-m", "langloc.cli",
                          *map(str, collect_args(model, corpus, tmp_path / "ref", tokens=tokens))],
                         env=ENV, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    a, b = ActivationStats.load(tmp_path / "run"), ActivationStats.load(tmp_path / "ref")
    assert (a.over_zero == b.over_zero).all() and (a.active_sum == b.active_sum).all()
    assert a.resid_sum is not None and torch.equal(a.resid_sum, b.resid_sum)  # DiffMean's sums survive Ctrl-C too


def test_binary_file_lines_are_skipped_and_counted(files, tmp_path, capsys):
    model, _ = files
    corpus = write_folder_corpus(tmp_path / "c", langs=("en",))
    (corpus / "en.txt").write_bytes(b"\x00\x01\x02binary\x00junk\n" * 4 + (corpus / "en.txt").read_bytes())
    assert invoke("collect", "-m", model, "--corpus", corpus, "-l", "en", "--tokens", "256", "--window", "64",
                  "--device", "cpu", "-o", tmp_path / "run") == 0
    assert "skipped 4 line(s) of en.txt" in capsys.readouterr().err


def test_a_run_of_another_model_is_refused(files, tmp_path, capsys):
    model, corpus = files
    run = tmp_path / "run"
    assert invoke(*collect_args(model, corpus, run)) == 0
    other = save_tiny_llama(tmp_path / "other", seed=7)
    assert invoke("collect", "-m", other, "--corpus", corpus, "-l", "ru", "--tokens", "512", "--window", "64",
                  "--device", "cpu", "-o", run) == 2
    assert "was made for model" in error_line(capsys)
    assert not (run / "stats" / "ru.safetensors").exists()


def test_a_neuron_set_of_another_tokenizer_is_refused(files, tmp_path, capsys):
    model, corpus = files
    run = tmp_path / "run"
    assert invoke(*collect_args(model, corpus, run)) == 0
    assert invoke("identify", run, "--top-rate", "0.05") == 0
    path = run / "neurons" / "lape.json"
    d = json.loads(path.read_text())
    d["model"]["tokenizer_fingerprint"] = "0123456789abcdef"
    path.write_text(json.dumps(d))
    assert invoke("ablate", run, "--eval-tokens", "128", "--device", "cpu") == 2
    assert "tokenizer_fingerprint" in error_line(capsys)
    assert not (run / "ablation.csv").exists()


def test_a_foreign_file_is_not_taken_for_a_neuron_set(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(Exception, match="not a langloc neuron set"):
        NeuronSet.load(tmp_path / "x.json")
