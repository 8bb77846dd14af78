"""DiffMean: residual-stream steering by the difference of two languages' mean states.

``v[l] = mean over target-language tokens of h_l - mean over source-language tokens of h_l``,
with ``h_l`` the output of decoder layer ``l`` (the residual stream after it). The means come
from ``collect``'s exact running sums (``resid_sum`` in the statistics files), over the same
text and tokens as the neuron counters. Steering adds ``alpha * v[l]`` to the output of each
chosen layer (:class:`langloc.intervene.intervention.ResidualEdit`).

The strength is in a unit that means the same on every model: at layer ``l`` the edit is
``alpha * n_l * v[l] / |v[l]|``, where ``n_l`` is the residual stream's typical norm there,
the median over tokens of ``|h_l|`` (:func:`residual_norms`). So alpha 0.5 moves the stream
by half its typical length, on a 270M model as on an 8B one, whatever the raw size of the
mean difference.

The random control is a random direction of the same norm at each steered layer (a Gaussian
vector drawn from the control's own seed, rescaled to ``|v[l]|``): it moves the residual
stream as far as the real vector, in a direction that carries no language.
"""

from __future__ import annotations

import torch

from langloc.errors import LanglocError


def diffmean_vectors(stats, target: str, source: str) -> torch.Tensor:
    """[L, H] float64: mean residual state on ``target`` minus that on ``source``, per layer."""
    if target == source:
        raise LanglocError(f"DiffMean needs two different languages, got {target!r} twice")
    return stats.mean_residual(target) - stats.mean_residual(source)


def random_directions(vectors: torch.Tensor, layers, seed: int) -> torch.Tensor:
    """[L, H]: at each of ``layers``, a random Gaussian direction with the norm of ``vectors[l]``
    (zero elsewhere); deterministic for ``seed``."""
    g = torch.Generator().manual_seed(int(seed) % (2**63))
    out = torch.zeros_like(vectors, dtype=torch.float64)
    for layer in layers:
        d = torch.randn(vectors.shape[-1], generator=g, dtype=torch.float64)
        out[layer] = d / d.norm() * vectors[layer].double().norm()
    return out


@torch.inference_mode()
def residual_norms(lm, prompts: list[str], batch_size: int = 16) -> list[float]:
    """Per layer, the residual stream's typical norm: the median over the prompts' tokens of
    ``|h_l|`` (the decoder layer's output), unsteered. Special tokens (BOS) and padding are
    left out: a model's first token often carries a norm many times the others' (an attention
    sink), which would say nothing about the text being steered."""
    from langloc.models.hooks import residual_hooks

    if not prompts:
        raise LanglocError("the residual norms need at least one prompt")
    tok = lm.tokenizer
    if getattr(tok, "pad_token_id", None) is None:
        tok.pad_token = tok.eos_token
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
    norms = [[] for _ in range(lm.num_layers)]
    keep = None

    def grab(layer):
        def fn(h):
            norms[layer].append(h.float().norm(dim=-1)[keep].cpu())
        return fn

    with residual_hooks(lm, {l: grab(l) for l in range(lm.num_layers)}):
        for s in range(0, len(prompts), batch_size):
            enc = tok(prompts[s:s + batch_size], return_tensors="pt", padding=True)
            keep = enc["attention_mask"].bool() & ~torch.isin(enc["input_ids"], special)
            lm.model(**enc.to(lm.device))
    return [float(torch.cat(n).median()) for n in norms]
