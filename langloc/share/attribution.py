"""Per-neuron attribution at the last prompt token (docs/methods.md §4), aggregated by category.

For neuron i of a layer with output weight column ``W_out[:, i]`` (the column of the MLP's
down projection that neuron i's coefficient multiplies) and coefficient ``m_i`` at the last
prompt token:

* contribution ``c_i = |m_i| * ||W_out[:, i]||_2``: the size of what the neuron writes;
* effective score ``e_i = E[y]^T (m_i * W_out[:, i])`` with ``E[y]`` the unembedding row
  (``lm.model.get_output_embeddings()``) of the first token of the gold continuation: how much
  the write pushes the gold token's logit, directly (norms after the MLP, e.g. Gemma's
  post-feed-forward norm and the final norm, are ignored, as in the paper);
* gradient x activation ``g_i * a_i``: ``a_i`` the neuron's activation, ``g_i`` the gradient of
  ``log p(gold first token | prompt)`` with respect to it (through all later layers).

``m_i`` is the input of the down projection. For plain MLPs (GPT-2, OPT, ...) that is the
neuron's activation itself; for gated MLPs (Llama, Gemma, ...) it is ``act(gate)_i * up_i``,
the number that actually multiplies ``W_out[:, i]``, so the effective scores of a layer sum to
the gold logit's direct share of the MLP output. Gradient x activation is the same whether
taken at ``act(gate)_i`` or at ``act(gate)_i * up_i`` (the product is linear in the activation).

``W_out`` is taken as ``[hidden, neurons]`` (:meth:`LoadedModel.down_weight`, which reads GPT-2's
``Conv1D`` layout from the architecture table).
"""

from __future__ import annotations

import torch

from langloc.share.categories import CATEGORIES


@torch.no_grad()
def column_norms(lm) -> torch.Tensor:
    """``[L, I]`` float32: ``||W_out[:, i]||_2`` for every neuron."""
    return torch.stack([lm.down_weight(layer).float().norm(dim=0).cpu() for layer in range(lm.num_layers)])


@torch.no_grad()
def gold_directions(lm, token_ids: torch.Tensor) -> torch.Tensor:
    """``[B, L, I]`` float32: ``E[y_b]^T W_out[:, i]`` for each gold token ``y_b`` and neuron."""
    E = lm.model.get_output_embeddings().weight  # [V, H]
    out = []
    for layer in range(lm.num_layers):
        W = lm.down_weight(layer)
        rows = E[token_ids.to(E.device)].to(W.device, torch.float32)  # [B, H]
        out.append((rows @ W.float()).cpu())  # [B, I]
    return torch.stack(out, 1)


def neuron_scores(coef: torch.Tensor, norms: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Contribution and effective score, both shaped like ``coef`` (``[..., L, I]``)."""
    return coef.abs() * norms, coef * directions


class CategoryAttribution:
    """Running means of the scores per layer and category over (item, language) instances;
    each neuron of an instance counts in the category its item gave it."""

    FIELDS = ("contribution", "effective", "effective_abs", "grad_x_act", "grad_x_act_abs")

    def __init__(self, num_layers: int):
        self.n = torch.zeros(num_layers, len(CATEGORIES), dtype=torch.float64)
        self.sums = {f: torch.zeros(num_layers, len(CATEGORIES), dtype=torch.float64) for f in self.FIELDS}

    def add(self, codes: torch.Tensor, contribution: torch.Tensor, effective: torch.Tensor,
            grad_x_act: torch.Tensor | None = None) -> None:
        """``codes`` ``[L, I]`` for one instance; scores ``[L, I]``."""
        self.apply(self.increment(codes, contribution, effective, grad_x_act))

    @classmethod
    def increment(cls, codes: torch.Tensor, contribution: torch.Tensor, effective: torch.Tensor,
                  grad_x_act: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What one instance adds (``[L, 4]`` per field and ``"n"``): small, so that instances
        computed elsewhere (another process) can be added in their order, to the same bits."""
        values = {"contribution": contribution, "effective": effective, "effective_abs": effective.abs()}
        if grad_x_act is not None:
            values.update(grad_x_act=grad_x_act, grad_x_act_abs=grad_x_act.abs())
        inc = {k: torch.zeros(codes.shape[0], len(CATEGORIES), dtype=torch.float64) for k in ("n", *values)}
        for c in range(len(CATEGORIES)):
            mask = (codes == c).double()
            inc["n"][:, c] = mask.sum(-1)
            for f, v in values.items():
                inc[f][:, c] = (v.double() * mask).sum(-1)
        return inc

    def apply(self, inc: dict[str, torch.Tensor]) -> None:
        self.n += inc["n"]
        for f in self.FIELDS:
            if f in inc:
                self.sums[f] += inc[f]

    def means(self) -> dict[str, torch.Tensor]:
        """Per field ``[L, 4]``: the mean over instances of the category (NaN where none)."""
        return {f: s / self.n for f, s in self.sums.items()}

    def rows(self, task: str) -> list[dict]:
        means = self.means()
        out = []
        for layer in range(self.n.shape[0]):
            for c, name in enumerate(CATEGORIES):
                row = {"task": task, "layer": layer, "category": name, "n": int(self.n[layer, c])}
                row.update({f: float(means[f][layer, c]) for f in self.FIELDS})
                out.append(row)
        return out


AGGREGATES = ("max", "mean", "min", "sum")


class ReferenceAggregation:
    """The Sharing-Matters code's aggregation (docs/methods.md §4): for every (item, language)
    instance and layer, the max, mean, min and sum of a score over each category's neurons (0
    for all four when the category is empty in that item), then the mean over items, per
    language. The paper's effective-score figure plots the max; its contribution figures the
    mean and the sum."""

    FIELDS = CategoryAttribution.FIELDS

    def __init__(self, num_languages: int, num_layers: int):
        self.items = torch.zeros(num_languages, dtype=torch.float64)
        self.sums = {f: torch.zeros(num_languages, num_layers, len(CATEGORIES), len(AGGREGATES), dtype=torch.float64)
                     for f in self.FIELDS}

    @staticmethod
    def aggregate(codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[L, 4 categories, 4 aggregates]`` of scores ``v [L, I]`` over ``codes [L, I]``."""
        v = v.double()
        out = torch.zeros(v.shape[0], len(CATEGORIES), len(AGGREGATES), dtype=torch.float64)
        for c in range(len(CATEGORIES)):
            mask = codes == c
            n = mask.sum(-1)
            some = n > 0
            total = torch.where(mask, v, torch.zeros_like(v)).sum(-1)
            out[:, c, 0] = torch.where(some, torch.where(mask, v, torch.full_like(v, -torch.inf)).amax(-1), 0.0)
            out[:, c, 1] = torch.where(some, total / n.clamp(min=1), 0.0)
            out[:, c, 2] = torch.where(some, torch.where(mask, v, torch.full_like(v, torch.inf)).amin(-1), 0.0)
            out[:, c, 3] = total
        return out

    def add(self, language: int, codes: torch.Tensor, contribution: torch.Tensor, effective: torch.Tensor,
            grad_x_act: torch.Tensor | None = None) -> None:
        self.apply(language, self.increment(codes, contribution, effective, grad_x_act))

    @classmethod
    def increment(cls, codes: torch.Tensor, contribution: torch.Tensor, effective: torch.Tensor,
                  grad_x_act: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What one instance adds: ``[L, 4, 4]`` per field."""
        values = {"contribution": contribution, "effective": effective, "effective_abs": effective.abs()}
        if grad_x_act is not None:
            values.update(grad_x_act=grad_x_act, grad_x_act_abs=grad_x_act.abs())
        return {f: cls.aggregate(codes, v) for f, v in values.items()}

    def apply(self, language: int, inc: dict[str, torch.Tensor]) -> None:
        self.items[language] += 1
        for f, v in inc.items():
            self.sums[f][language] += v

    def means(self) -> dict[str, torch.Tensor]:
        """Per field ``[K, L, 4 categories, 4 aggregates]``: the mean over items."""
        return {f: s / self.items.clamp(min=1).view(-1, 1, 1, 1) for f, s in self.sums.items()}

    def rows(self, task: str, languages: list[str]) -> list[dict]:
        means = self.means()
        out = []
        for k, lang in enumerate(languages):
            for layer in range(means["contribution"].shape[1]):
                for c, name in enumerate(CATEGORIES):
                    for f in self.FIELDS:
                        row = {"task": task, "language": lang, "layer": layer, "category": name, "score": f,
                               "items": int(self.items[k])}
                        row.update({a: float(means[f][k, layer, c, i]) for i, a in enumerate(AGGREGATES)})
                        out.append(row)
        return out


class TopContribution:
    """The Sharing-Matters code's make-up of the ``top_k`` (800) neurons of largest contribution
    in every layer: per (item, language) instance the share of them in each category, then the
    mean over items, per language (with fewer than ``top_k`` neurons per layer, all of them)."""

    def __init__(self, num_languages: int, num_layers: int, top_k: int = 800):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k
        self.items = torch.zeros(num_languages, dtype=torch.float64)
        self.sums = torch.zeros(num_languages, num_layers, len(CATEGORIES), dtype=torch.float64)

    def add(self, language: int, codes: torch.Tensor, contribution: torch.Tensor) -> None:
        self.apply(language, self.increment(codes, contribution))

    def increment(self, codes: torch.Tensor, contribution: torch.Tensor) -> torch.Tensor:
        """What one instance adds: ``[L, 4]``, the share of each category among the top neurons."""
        k = min(self.top_k, contribution.shape[-1])
        # Ties at the cut go to the lower index (a stable sort), so the result is deterministic.
        top = torch.sort(contribution.double(), dim=-1, descending=True, stable=True).indices[:, :k]
        picked = codes.gather(-1, top)
        inc = torch.zeros(codes.shape[0], len(CATEGORIES), dtype=torch.float64)
        for c in range(len(CATEGORIES)):
            inc[:, c] = (picked == c).double().sum(-1) / k
        return inc

    def apply(self, language: int, inc: torch.Tensor) -> None:
        self.items[language] += 1
        self.sums[language] += inc

    def shares(self) -> torch.Tensor:
        """``[K, L, 4]``: mean share of each category among the layer's top neurons."""
        return self.sums / self.items.clamp(min=1).view(-1, 1, 1)

    def rows(self, task: str, languages: list[str]) -> list[dict]:
        s = self.shares()
        return [{"task": task, "language": lang, "layer": layer, "category": name, "top_k": self.top_k,
                 "share": float(s[k, layer, c])}
                for k, lang in enumerate(languages) for layer in range(s.shape[1]) for c, name in enumerate(CATEGORIES)]
