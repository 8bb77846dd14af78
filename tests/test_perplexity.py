"""Perplexity runs the decoder body once and the LM head a slice of positions at a time; for
every architecture of the table that must give the NLL of the model's own full forward."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CharTokenizer, tiny_model
from langloc.evaluate.perplexity import perplexity, window_nll
from langloc.models.architectures import ARCHITECTURES
from langloc.models.loading import bind

# langloc.evaluate re-exports the function perplexity, which hides the module of that name.
ppl_module = importlib.import_module("langloc.evaluate.perplexity")


def _reference_nll(model, windows: torch.Tensor) -> torch.Tensor:
    """Per-window NLL sums straight from the model's forward (logits of every position)."""
    with torch.no_grad():
        logits = model(input_ids=windows).logits[:, :-1].double()
    losses = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
    return losses.view(len(windows), -1).sum(1)


def _windows(n=3, length=11) -> torch.Tensor:
    return torch.randint(3, CharTokenizer().vocab_size, (n, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_sliced_head_gives_the_full_forward_nll_on_every_architecture(model_type, monkeypatch):
    model = tiny_model(model_type)
    if hasattr(model.config, "final_logit_softcapping"):
        # Gemma 2 caps at 30 by default, where tiny logits hardly feel it; make the cap bind.
        model.config.final_logit_softcapping = 0.5
    lm = bind(model, CharTokenizer(), f"tiny-{model_type}")
    assert lm.head_is_known
    monkeypatch.setattr(ppl_module, "HEAD_CHUNK", 4)  # 10 predicted positions: slices of 4, 4, 2
    windows = _windows()
    got = window_nll(lm, windows, batch_size=2)
    torch.testing.assert_close(got, _reference_nll(model, windows), rtol=1e-5, atol=1e-5)


def test_softcapping_is_applied_not_skipped():
    """Without the cap the NLL differs: the comparison above would catch a head that ignores it."""
    model = tiny_model("gemma2")
    model.config.final_logit_softcapping = 0.5
    lm = bind(model, CharTokenizer(), "tiny-gemma2")
    windows = _windows()
    capped = window_nll(lm, windows)
    model.config.final_logit_softcapping = None
    # 100x the tolerance of the comparison with the full forward
    assert (capped - window_nll(lm, windows)).abs().max() > 100 * 1e-5


def test_architecture_outside_the_table_uses_its_own_forward(monkeypatch):
    model = tiny_model("llama")
    lm = bind(model, CharTokenizer(), "tiny-llama")
    monkeypatch.setattr(type(model.config), "model_type", "somebody_elses_llama", raising=False)
    model.config.model_type = "somebody_elses_llama"
    assert not lm.head_is_known
    windows = _windows()
    torch.testing.assert_close(window_nll(lm, windows), _reference_nll(model, windows), rtol=1e-5, atol=1e-5)


def test_perplexity_is_exp_of_the_mean_token_nll():
    model = tiny_model("llama")
    lm = bind(model, CharTokenizer(), "tiny-llama")
    windows = _windows()
    mean = _reference_nll(model, windows).sum().item() / windows[:, 1:].numel()
    assert perplexity(lm, windows) == pytest.approx(math.exp(mean), rel=1e-6)
