"""Further pre-training with a frozen region: exact freezing, resume, determinism, errors."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import CharTokenizer, tiny_model
from tiny import write_folder_corpus

from langloc.data import load_corpus
from langloc.errors import LanglocError
from langloc.models.loading import bind
from langloc.regions import region_parameters
from langloc.train import RegionFreezer, TrainSettings, forgetting, lr_at, optimizer_step, random_region_like, train
from langloc.train import trainer as trainer_module
from langloc.train.trainer import region_digest

S = TrainSettings(steps=4, batch_size=2, window=16, lr=1e-2, weight_decay=0.1, warmup=1, eval_languages=["en"],
                  eval_tokens=128, eval_every=2, checkpoint_every=2)  # 8 held-out windows
KW = dict(settings=S, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The models are tiny: with two threads on a busy 2-core machine every op waits for the
    # other thread (~20 ms per matmul instead of microseconds).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_corpus(str(write_folder_corpus(tmp_path_factory.mktemp("corpus"))))


def _lm(arch: str = "llama", seed: int = 0):
    return bind(tiny_model(arch, layers=2, width=32, seed=seed), CharTokenizer(), f"tiny-{arch}")


def _region(lm, share: float = 0.2, seed: int = 1, extra: tuple = ()) -> dict:
    """``share`` of the entries of every decoder matrix (and of the parameters ``extra``)."""
    g = torch.Generator().manual_seed(seed)
    named = dict(lm.model.named_parameters())
    params = {**region_parameters(lm), **{n: named[n] for n in extra}}
    return {n: torch.randperm(p.numel(), generator=g)[: max(1, int(p.numel() * share))].sort().values
            for n, p in params.items()}


def _snapshot(lm) -> dict:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _assert_frozen_exact(lm, before: dict, region: dict) -> None:
    named = dict(lm.model.named_parameters())
    for name, idx in region.items():
        now, was = named[name].detach().view(-1), before[name].view(-1)
        assert torch.equal(_bits(now[idx]), _bits(was[idx])), f"frozen entries of {name} changed"
        free = torch.ones(now.numel(), dtype=torch.bool)
        free[idx] = False
        moved = (now[free] != was[free]).float().mean().item()
        assert moved > 0.95, f"only {moved:.0%} of the trainable entries of {name} changed"


@pytest.mark.parametrize("arch,precision", [("llama", "bf16"), ("llama", "fp16"), ("llama", "fp32"),
                                            ("gpt2", "bf16")])
def test_frozen_entries_are_bit_identical_after_adamw_with_weight_decay(corpus, tmp_path, arch, precision):
    lm = _lm(arch)
    # Also a norm scale (1-D, no weight decay) besides the decoder matrices (GPT-2: Conv1D [in, out]).
    norm = "model.layers.0.input_layernorm.weight" if arch == "llama" else "transformer.h.0.ln_1.weight"
    region = _region(lm, extra=(norm,))
    before = _snapshot(lm)
    result = train(lm, corpus, "fr", frozen=region, out=tmp_path, settings=replace(S, precision=precision), progress=False)
    _assert_frozen_exact(lm, before, region)
    assert result.meta["frozen_verified_identical"] is True
    assert result.ppl(4, "fr") < result.ppl(0, "fr")  # it did learn the trained language
    assert {(r["step"], r["language"]) for r in result.rows} == {(s, lg) for s in (0, 2, 4) for lg in ("fr", "en")}
    assert [r["step"] for r in result.losses] == [1, 2, 3, 4]
    assert (tmp_path / "plots" / "training.png").stat().st_size > 0
    assert not (tmp_path / "checkpoint.pt").exists()


def _loss(lm, g: torch.Generator) -> torch.Tensor:
    ids = torch.randint(3, 120, (2, 12), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lm.model(input_ids=ids).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())


def test_freezer_cleans_optimizer_state_and_restore_is_needed():
    lm = _lm()
    params = list(lm.model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1, amsgrad=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # moments are non-zero everywhere before freezing starts
        opt.zero_grad()
        _loss(lm, g).backward()
        opt.step()
    region = _region(lm)
    before = _snapshot(lm)
    freezer = RegionFreezer(lm, region)
    assert freezer.size == sum(int(i.numel()) for i in region.values())
    for _ in range(3):
        opt.zero_grad()
        _loss(lm, g).backward()
        optimizer_step(opt, params, freezer=freezer, max_grad_norm=1.0)
    _assert_frozen_exact(lm, before, region)
    assert freezer.mismatches() == 0
    named = dict(lm.model.named_parameters())
    for name, idx in region.items():
        state = opt.state[named[name]]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.count_nonzero(state[key].view(-1)[idx]) == 0, (name, key)
            assert torch.count_nonzero(state[key]) > 0  # the trainable entries have moments

    # Masking the gradients alone is not freezing: weight decay and the old moments move them.
    opt.zero_grad()
    _loss(lm, g).backward()
    freezer.mask_gradients()
    opt.step()
    assert freezer.mismatches() > 0.9 * freezer.size


@pytest.mark.parametrize("arch,precision", [("gpt2", "bf16"), ("llama", "fp16")])
def test_resume_after_a_crash_is_bit_identical(corpus, tmp_path, monkeypatch, arch, precision):
    # GPT-2 has dropout, so the RNG state must survive the checkpoint; fp16 adds the GradScaler.
    kw = dict(settings=replace(S, steps=6, checkpoint_every=3, precision=precision), progress=False)
    straight = _lm(arch)
    region = _region(straight)
    before = _snapshot(straight)
    ref = train(straight, corpus, "fr", frozen=region, out=tmp_path / "straight", **kw)

    real_step, calls = trainer_module._step, []

    def crash_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return real_step(*args, **kwargs)

    crashed = _lm(arch)
    monkeypatch.setattr(trainer_module, "_step", crash_at_step_5)
    with pytest.raises(RuntimeError, match="killed"):
        train(crashed, corpus, "fr", frozen=region, out=tmp_path / "resumed", **kw)
    monkeypatch.setattr(trainer_module, "_step", real_step)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["next_sample"] == 6 and len(ckpt["optimizer"]["state"]) > 0
    assert bool(ckpt["scaler"]) == (precision == "fp16")
    with pytest.raises(LanglocError, match="resume"):
        train(_lm(arch), corpus, "fr", frozen=region, out=tmp_path / "resumed", **kw)
    with pytest.raises(LanglocError, match="model_weights"):  # the crashed model is not the original
        train(crashed, corpus, "fr", frozen=region, out=tmp_path / "resumed", resume=True, **kw)

    fresh = _lm(arch)
    got = train(fresh, corpus, "fr", frozen=region, out=tmp_path / "resumed", resume=True, **kw)
    for (name, p), q in zip(straight.model.named_parameters(), fresh.model.parameters()):
        assert torch.equal(_bits(p.detach()), _bits(q.detach())), name
    assert got.rows == ref.rows and got.losses == ref.losses
    assert got.windows == ref.windows and {w["step"] for w in got.windows} == {0, 2, 4, 6}  # per-window NLLs too
    _assert_frozen_exact(fresh, before, region)
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    again = train(_lm(arch), corpus, "fr", frozen=region, out=tmp_path / "resumed", **kw)
    assert again.reused and again.rows == ref.rows  # a finished run is returned, not retrained


def test_same_seed_same_result_other_seed_other_data(corpus, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 3)):
        lm = _lm()
        res = train(lm, corpus, "fr", frozen=_region(lm), out=tmp_path / name, settings=replace(S, seed=seed), progress=False)
        runs[name] = (res, _snapshot(lm))
    (ra, pa), (rb, pb), (rc, pc) = runs["a"], runs["b"], runs["c"]
    assert ra.rows == rb.rows and ra.losses == rb.losses
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert ra.losses != rc.losses  # another seed, another data order
    assert any(not torch.equal(pa[n], pc[n]) for n in pa)


def test_random_region_like_matches_counts_and_is_deterministic():
    lm = _lm()
    core = _region(lm, share=0.1)
    a, b, c = random_region_like(lm, core, 0), random_region_like(lm, core, 0), random_region_like(lm, core, 1)
    named = dict(lm.model.named_parameters())
    assert set(a) == set(core)
    for name, idx in core.items():
        assert a[name].numel() == idx.numel() == a[name].unique().numel()
        assert a[name].dtype == torch.int64 and torch.equal(a[name], a[name].sort().values)
        assert 0 <= int(a[name].min()) and int(a[name].max()) < named[name].numel()
        assert torch.equal(a[name], b[name])
    assert any(not torch.equal(a[n], c[n]) for n in core) and any(not torch.equal(a[n], core[n]) for n in core)


def _empty(v) -> bool:  # no interval: None (an empty cell in summary.csv) or nan
    return v is None or (isinstance(v, float) and math.isnan(v))


def test_forgetting_runs_three_modes_on_the_same_data_from_the_same_weights(corpus, tmp_path):
    lm = _lm()
    before = _snapshot(lm)
    core = _region(lm, share=0.05)
    kw = dict(settings=replace(S, steps=2, eval_every=1), progress=False)
    res = forgetting(lm, corpus, "fr", core, out=tmp_path, **kw)
    rows = res.rows
    assert [m for m in dict.fromkeys(r["mode"] for r in rows)] == ["core", "random", "none"]
    assert len(rows) == 3 * 3 * 2  # modes x steps 0..2 x languages
    for n, p in lm.model.named_parameters():  # the model is back at its original weights
        assert torch.equal(p.detach(), before[n]), n
    start = {(r["language"], r["ppl"]) for r in rows if r["step"] == 0}
    assert len(start) == 2 and all(r["ratio"] == 1.0 for r in rows if r["step"] == 0)
    first_loss = set()
    for mode in ("core", "random", "none"):
        with open(tmp_path / mode / "loss.csv") as fh:
            first_loss.add(next(csv.DictReader(fh))["loss"])  # same batch, same weights at step 1
    assert len(first_loss) == 1
    ends = {r["mode"]: r["ppl"] for r in rows if r["step"] == 2 and r["language"] == "en"}
    assert len(set(ends.values())) == 3  # the frozen regions did make a difference
    # each mode's own folder; forgetting.csv, summary.csv and the plot are the study's (test_regions_cli)
    assert (tmp_path / "none" / "window_nll.csv").stat().st_size > 0
    assert not (tmp_path / "forgetting.csv").exists()
    for row in res.summary:  # paired intervals over held-out windows around each ratio
        assert float(row["ratio_lo"]) < float(row["ratio"]) < float(row["ratio_hi"])
        if row["mode"] == "none":  # the same run on the same windows: no spread, so no interval
            assert float(row["vs_none"]) == 1.0 and _empty(row["vs_none_lo"]) and _empty(row["vs_none_hi"])
        else:  # frozen entries make the end perplexity differ from the nothing-frozen run's
            assert float(row["vs_none_lo"]) < float(row["vs_none"]) < float(row["vs_none_hi"])
            assert float(row["vs_none"]) != 1.0
    assert forgetting(lm, corpus, "fr", core, out=tmp_path, **kw).rows == rows  # finished modes are reused
    control = random_region_like(lm, core, seed=7)
    forgetting(lm, corpus, "fr", core, control=control, modes=["random"], out=tmp_path / "control", **kw)
    got = json.loads((tmp_path / "control" / "random" / "train.json").read_text())
    assert got["settings"]["frozen"]["digest"] == region_digest(control) != region_digest(core)


@pytest.mark.parametrize("bad,match", [
    ({"steps": 0}, "steps"), ({"lr": 0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"), ({"batch_size": 0}, "batch_size"), ({"window": 1}, "window"),
    ({"warmup": 5}, "warmup"), ({"eval_tokens": 8}, "eval_tokens"), ({"eval_every": 0}, "eval_every"),
    ({"checkpoint_every": 0}, "checkpoint_every"), ({"max_grad_norm": 0}, "max_grad_norm"),
    ({"precision": "fp8"}, "precision"), ({"steps": 2.5}, "steps"), ({"eval_languages": ["xx"]}, "xx"),
])
def test_bad_parameters_are_refused(corpus, tmp_path, bad, match):
    lm = _lm()
    with pytest.raises(LanglocError, match=match):
        train(lm, corpus, "fr", out=tmp_path, settings=replace(S, **bad), progress=False)
    assert not any(tmp_path.iterdir())


def test_bad_regions_models_and_runs_are_refused(corpus, tmp_path):
    lm = _lm()
    with pytest.raises(LanglocError, match="does not have"):
        train(lm, corpus, "fr", frozen={"transformer.h.0.mlp.c_fc.weight": torch.tensor([0])}, out=tmp_path, **KW)
    name = next(iter(region_parameters(lm)))
    with pytest.raises(LanglocError, match="outside"):
        train(lm, corpus, "fr", frozen={name: torch.tensor([10**6])}, out=tmp_path, **KW)
    with pytest.raises(LanglocError, match="1-D"):
        train(lm, corpus, "fr", frozen={name: torch.zeros(2, 2, dtype=torch.long)}, out=tmp_path, **KW)
    gpt2_region = _region(_lm("gpt2"))
    with pytest.raises(LanglocError, match="does not have"):  # a region made for another model
        forgetting(lm, corpus, "fr", gpt2_region, out=tmp_path, **KW)
    with pytest.raises(LanglocError, match="mode"):
        forgetting(lm, corpus, "fr", _region(lm), out=tmp_path, modes=["core", "frozen"], **KW)
    region = _region(lm)
    meta = {"model": dict(lm.meta), "shapes": {n: list(p.shape) for n, p in region_parameters(lm).items()}}
    with pytest.raises(LanglocError, match="shape"):
        train(lm, corpus, "fr", frozen=region, region_meta={**meta, "shapes": {name: [1, 2]}}, out=tmp_path, **KW)
    with pytest.raises(LanglocError, match="made for model"):
        other = {**meta, "model": {**lm.meta, "weights_fingerprint": "0123456789abcdef"}}
        forgetting(lm, corpus, "fr", region, region_meta=other, out=tmp_path, **KW)
    half = bind(tiny_model("llama", layers=2, width=32).to(torch.bfloat16), CharTokenizer(), "tiny-bf16")
    with pytest.raises(LanglocError, match="float32"):
        train(half, corpus, "fr", out=tmp_path, **KW)
    assert not any(tmp_path.iterdir())
    train(lm, corpus, "fr", out=tmp_path, settings=replace(S, steps=1, warmup=0), progress=False)
    with pytest.raises(LanglocError, match="finished training run with other settings"):
        train(_lm(), corpus, "fr", out=tmp_path, settings=replace(S, steps=2, warmup=0), progress=False)


def test_learning_rate_schedule():
    assert lr_at(1, lr=1.0, warmup=4, steps=10) == 0.25
    assert lr_at(4, lr=1.0, warmup=4, steps=10) == 1.0
    assert lr_at(5, lr=1.0, warmup=4, steps=10) == 1.0
    assert 0.1 < lr_at(10, lr=1.0, warmup=4, steps=10) < 0.2
    assert lr_at(1, lr=1.0, warmup=0, steps=1) == 1.0
    values = [lr_at(s, lr=1.0, warmup=4, steps=10) for s in range(4, 11)]
    assert values == sorted(values, reverse=True)
