"""How far one perturbed parameter moves the residual stream, before and after a block's norms.

Zhang et al. report that multiplying one weight on a "massive activation" dimension by 4
breaks LLaMA-2. On gemma-3-270m it does not (docs/claims.md). The hypothesis tested here:
Gemma 2/3 decoder layers normalise the *output* of every attention and MLP block
(``post_attention_layernorm`` / ``post_feedforward_layernorm``, a "sandwich" norm) before it is
added to the residual stream, so a block whose output one weight has blown up still writes a
vector of bounded size; a Llama layer adds the block's raw output.

:func:`perturbation_spread` runs the same windows with and without the perturbation and reports,
at each site along the way, the relative change ``‖h' − h‖ / ‖h‖`` (Frobenius norms over all
tokens, float32):

- ``block_output``: the output of the block (MLP or attention) holding the parameter;
- ``after_output_norm``: that output after the block's output norm (absent: no such norm, the
  raw output is what reaches the residual stream);
- ``residual``: the residual stream after the perturbed layer;
- ``next_input_norm``: the next layer's normalised input (what its blocks read);
- ``final_hidden``: the last hidden state after the final norm (what the LM head reads).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from langloc.errors import LanglocError
from langloc.regions.dimensions import perturbed
from langloc.regions.params import layer_of

SITES = ("block_output", "after_output_norm", "residual", "next_input_norm", "final_hidden")
# A block's output norm, by block, in architectures that normalise block outputs (Gemma 2/3).
OUTPUT_NORMS = {"mlp": "post_feedforward_layernorm", "self_attn": "post_attention_layernorm"}


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _block_of(name: str, layer_module) -> str:
    for block in OUTPUT_NORMS:
        if f".{block}." in name and hasattr(layer_module, block):
            return block
    raise LanglocError(f"{name} is in neither the MLP nor the attention block of its layer")


def output_norm(layer_module, block: str):
    """The module that normalises ``block``'s output before the residual add, or None. Only
    layers with a post-feed-forward norm have output norms (in Llama, ``post_attention_layernorm``
    is the *input* norm of the MLP)."""
    if not hasattr(layer_module, "post_feedforward_layernorm"):
        return None
    return getattr(layer_module, OUTPUT_NORMS[block], None)


def _final_norm(lm):
    body = lm.body
    for name in ("norm", "final_layernorm", "ln_f"):
        if hasattr(body, name):
            return getattr(body, name)
    raise LanglocError("cannot find the model's final norm")


@torch.inference_mode()
def _capture(lm, windows, modules: dict, batch_size: int) -> dict[str, torch.Tensor]:
    got: dict[str, list] = {k: [] for k in modules}
    handles = [m.register_forward_hook(lambda _m, _i, o, k=k: got[k].append(_first(o).detach().float().cpu()))
               for k, m in modules.items()]
    try:
        for s in range(0, len(windows), batch_size):
            lm.body(input_ids=windows[s:s + batch_size].to(lm.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in got.items()}


def perturbation_spread(lm, name: str, windows: torch.Tensor, *, index: int | None = None, dim: int | None = None,
                        scale: float | None = None, value: float | None = None, batch_size: int = 2) -> dict:
    """Relative change at each of :data:`SITES` (None where the model has no such site) when
    parameter ``name``'s entry ``index`` (or its whole hidden dimension ``dim``) is scaled or set;
    plus the parameter's name, layer and block, and whether the block has an output norm."""
    layers = layer_of(lm)
    if name not in layers:
        raise LanglocError(f"{name} is not a decoder-layer matrix")
    L = layers[name]
    layer = lm.layers[L]
    block = _block_of(name, layer)
    modules = {"block_output": getattr(layer, block), "residual": layer, "final_hidden": _final_norm(lm)}
    norm = output_norm(layer, block)
    if norm is not None:
        modules["after_output_norm"] = norm
    if L + 1 < lm.num_layers and hasattr(lm.layers[L + 1], "input_layernorm"):
        modules["next_input_norm"] = lm.layers[L + 1].input_layernorm
    base = _capture(lm, windows, modules, batch_size)
    with perturbed(lm, name, index, dim=dim, scale=scale, value=value):
        new = _capture(lm, windows, modules, batch_size)
    out = {"parameter": name, "layer": L, "block": block, "has_output_norm": norm is not None}
    for site in SITES:
        if site in base:
            out[site] = float((new[site] - base[site]).norm() / base[site].norm().clamp_min(1e-30))
        else:
            out[site] = None
    return out


def _change(case: dict) -> dict:
    """The keyword arguments of :func:`perturbed` (and :func:`perturbation_spread`) a case names."""
    return {k: case[k] for k in ("index", "dim", "scale", "value") if case.get(k) is not None}


def spread_table(lm, windows, cases: list[dict], *, batch_size: int = 2) -> list[dict]:
    """:func:`perturbation_spread` for each case (``{"label", "name", "index" | "dim", "scale" | "value"}``)."""
    return [{"model": lm.name, "case": case["label"],
             **perturbation_spread(lm, case["name"], windows, batch_size=batch_size, **_change(case))}
            for case in cases]


def default_cases(lm, windows, *, layer: int = 1, big: float = 100.0, batch_size: int = 2) -> list[dict]:
    """The cases of the dimension-dependence table, chosen by one rule on any model: in layer
    ``layer``'s MLP, the matrix that reads the residual stream (gate, else up/fc1) and the one that
    writes it (down/fc2); on the residual stream's loudest dimension (largest |activation| on
    ``windows``) and on an ordinary one (the median); one entry (the largest |θ| on the
    dimension) ×4, the same entry set to ``big``, and the whole column zeroed."""
    from langloc.adapters.masked_lora import mlp_modules
    from langloc.regions.dimensions import entry_on_dimension, massive_activations

    loud, _ = massive_activations(lm, windows, batch_size)
    order = torch.argsort(-loud, stable=True)
    dims = {"massive": int(order[0]), "ordinary": int(order[len(order) // 2])}
    names = {id(m): n for n, m in lm.model.named_modules()}
    inputs, _, down = mlp_modules(lm, layer, gate_only=True)
    matrices = {"reads": names[id(next(iter(inputs.values())))] + ".weight", "writes": names[id(down)] + ".weight"}
    cases = []
    for role, name in matrices.items():
        for kind, d in dims.items():
            index = entry_on_dimension(lm, name, d)
            short = name.split(".layers.")[-1].removesuffix(".weight")
            for op, kw in (("x4", {"index": index, "scale": 4.0}), (f"={big:g}", {"index": index, "value": big}),
                           ("column=0", {"dim": d, "value": 0.0})):
                cases.append({"label": f"{short} ({role}) dim {d} ({kind}) {op}", "name": name, "dimension": d,
                              "kind": kind, "operation": op, **kw})
    return cases


def spread_study(lm, windows, *, layer: int = 1, big: float = 100.0, batch_size: int = 2,
                 progress: bool = False) -> list[dict]:
    """:func:`spread_table` over :func:`default_cases`, with each case's perplexity ratio on
    ``windows`` (perturbed / unchanged); ``progress``: a bar over the cases."""
    import math

    from langloc.evaluate.perplexity import window_nll

    cases = default_cases(lm, windows, layer=layer, big=big, batch_size=batch_size)
    tokens = windows[:, 1:].numel()
    base = window_nll(lm, windows, batch_size).sum().item()
    rows = []
    for case in tqdm(cases, desc=f"spread {lm.name}", unit="case", disable=not progress, leave=False):
        row, = spread_table(lm, windows, [case], batch_size=batch_size)
        kw = _change(case)
        with perturbed(lm, case["name"], kw.pop("index", None), **kw):
            nll = window_nll(lm, windows, batch_size).sum().item()
        rows.append({**row, "dimension": case["dimension"], "kind": case["kind"], "operation": case["operation"],
                     "ppl_ratio": math.exp((nll - base) / tokens)})
    return rows


__all__ = ["SITES", "default_cases", "output_norm", "perturbation_spread", "spread_study", "spread_table"]
