"""Steering directions fitted on sampled residual states: a linear probe, LDA and PCA.

CLaS-Bench compares these with DiffMean. Here each is fitted per target language and layer on
``collect``'s residual sample (:mod:`langloc.stats.residual_sample`): the sampled states of the
target language (label 1) against those of the source language (label 0), at the output of
decoder layer ``l`` (the site DiffMean uses). Each gives a unit direction ``d_l``, oriented so
that it points from the source towards the target (``d_l · (mean_t − mean_s) > 0``, the means
of the two samples), and steers exactly as DiffMean does: ``alpha · n_l · d_l`` is added at the
chosen layers, ``n_l`` the residual stream's typical norm there, with the same grid, search and
random-direction control (:class:`~langloc.steer.evaluation.DiffMeanMethod`).

* ``probe``: L2-regularised logistic regression, fitted to convergence by full-batch L-BFGS in
  float64 on standardised features (each dimension centred and scaled by its pooled standard
  deviation); the penalty is scikit-learn's default, ``C = 1``: minimise
  ``sum_i logloss_i + |w|^2 / 2`` (here divided by n). The direction is the weight vector mapped
  back to the raw coordinates (``w / sd``), the normal of the decision boundary there.
* ``lda``: Fisher's discriminant ``Sigma_w^-1 (mean_t − mean_s)`` with ``Sigma_w`` the pooled
  within-class covariance, shrunk towards a multiple of the identity by the Ledoit–Wolf
  coefficient, computed on standardised features and mapped back (as scikit-learn's
  ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")`` does). With fewer samples
  than dimensions the unshrunk covariance is singular; the shrinkage makes it invertible.
* ``pca``: the first principal component of the two samples pooled (centred on their joint
  mean, raw coordinates), oriented towards the target. It is the language axis only where
  the difference between the languages is the largest variance of the pooled states.

All three are deterministic for a given sample (no random start, no minibatches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from langloc.errors import LanglocError
from langloc.intervene.intervention import Intervention
from langloc.steer.steering import DIRECTION_METHODS, DirectionSetting
from langloc.steer.evaluation import DiffMeanMethod

FITS = {
    "probe": "L2 logistic regression (C=1, sum of log-losses + |w|^2/2), full-batch L-BFGS to convergence in float64, "
             "on standardised features; the weights mapped back to raw coordinates",
    "lda": "Sigma_w^-1 (mean_t - mean_s), Sigma_w the pooled within-class covariance with Ledoit-Wolf shrinkage "
           "towards a multiple of the identity, on standardised features",
    "pca": "first principal component of the two samples pooled (centred, raw coordinates)",
}
FIT_VERSION = 1  # part of each cell's key: a change of a fit recomputes its cells


def _orient(d: torch.Tensor, xt: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """``d`` as a unit vector pointing from the source's mean towards the target's."""
    d = d / d.norm()
    gap = float(d @ (xt.mean(0) - xs.mean(0)))
    if gap == 0.0:  # no side is nearer: fix the sign by the largest component, for determinism
        gap = float(d[d.abs().argmax()])
    return d if gap > 0 else -d


def _scale(x: torch.Tensor) -> torch.Tensor:
    sd = x.std(0, unbiased=False)
    return torch.where(sd > 0, sd, torch.ones_like(sd))


def probe_direction(xt: torch.Tensor, xs: torch.Tensor, c: float = 1.0, max_iter: int = 500) -> torch.Tensor:
    """[H] float64 unit direction of an L2 logistic-regression probe, target (1) vs source (0)."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.cat([xt, xs]).double().clone()
        y = torch.cat([torch.ones(len(xt)), torch.zeros(len(xs))]).double()
        sd = _scale(x)
        z = ((x - x.mean(0)) / sd).clone()
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        lam = 1.0 / (c * len(x))  # sum of losses + |w|^2 / (2C), divided by n
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")

        def loss():
            opt.zero_grad()
            value = F.binary_cross_entropy_with_logits(z @ w + b, y) + 0.5 * lam * (w @ w)
            value.backward()
            return value

        opt.step(loss)
        d = (w.detach() / sd).clone()
    if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
        raise LanglocError("the probe found no direction (its weights are zero or not finite)")
    return _orient(d, xt.double(), xs.double())


def lda_direction(xt: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """[H] float64 unit direction of Fisher's discriminant with Ledoit–Wolf shrinkage."""
    xt, xs = xt.double(), xs.double()
    gap = xt.mean(0) - xs.mean(0)
    r = torch.cat([xt - xt.mean(0), xs - xs.mean(0)])  # within-class deviations
    n, p = r.shape
    sd = _scale(r)
    z = r / sd
    s = z.T @ z / n
    mu = float(torch.trace(s)) / p
    target = mu * torch.eye(p, dtype=torch.float64)
    d2 = float(((s - target) ** 2).sum())
    b2 = float(((z ** 2).sum(1) ** 2).sum() / n - (s ** 2).sum()) / n  # mean |z z^T - S|^2 over samples, / n
    shrink = 1.0 if d2 == 0 else min(max(b2, 0.0), d2) / d2
    sigma = (1 - shrink) * s + shrink * target
    d = torch.linalg.solve(sigma, gap / sd) / sd
    return _orient(d, xt, xs)


def pca_direction(xt: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """[H] float64 unit direction: the pooled samples' first principal component, towards the target."""
    xt, xs = xt.double(), xs.double()
    x = torch.cat([xt, xs])
    _, _, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return _orient(vh[0], xt, xs)


FIT = {"probe": probe_direction, "lda": lda_direction, "pca": pca_direction}


class _Directions:
    """``[l]``: the unit direction at layer ``l``, fitted when first asked for (a search steers a
    few layer groups, not every layer)."""

    def __init__(self, method: "DirectionMethod", target: str, source: str):
        self.method, self.target, self.source = method, target, source

    def __getitem__(self, layer: int) -> torch.Tensor:
        key = (self.target, self.source, int(layer))
        cache = self.method._fitted
        if key not in cache:
            samples = self.method.samples
            cache[key] = FIT[self.method.name](samples.layer(self.target, layer), samples.layer(self.source, layer))
        return cache[key]


@dataclass
class DirectionMethod(DiffMeanMethod):
    """``probe``, ``lda`` or ``pca`` (see the module): DiffMean's grid, unit of alpha, edit and
    control, along a direction fitted on the run's residual sample (``samples``, a
    :class:`~langloc.stats.residual_sample.ResidualSamples`) instead of the difference of means."""

    name: str = "probe"
    samples: object = None
    _fitted: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.name not in DIRECTION_METHODS:
            raise LanglocError(f"a direction method is one of {', '.join(DIRECTION_METHODS)}, got {self.name!r}")

    def grid(self, spec, source: str | None) -> list:
        return [DirectionSetting(s.layers, s.alpha, s.positions, self.name) for s in spec.residual_grid(len(self.norms))]

    def setting(self, d: dict) -> DirectionSetting:
        return DirectionSetting(**{"method": self.name, **d})

    def unit(self) -> dict:
        return {**super().unit(), "alpha": "a multiple of the residual stream's typical norm at the steered layer "
                                           f"(median |h_l| over tokens), along the unit {self.name} direction"}

    def vectors(self, target, source) -> _Directions:
        if not source:
            raise LanglocError(f"{self.name} steering needs a source language (the other class of the fit)")
        if target == source:
            raise LanglocError(f"{self.name} needs two different languages, got {target!r} twice")
        return _Directions(self, target, source)

    def intervention(self, steerer, setting, target, source, meta=None) -> Intervention:
        edit = self._edit(steerer.lm, setting, self.vectors(target, source),
                          {"method": self.name, "target": target, "source": source, "alpha": setting.alpha,
                           "fit": FITS[self.name]})
        return Intervention([edit], setting.positions, {"model": steerer.lm.meta, **(meta or {})})

    def control(self, steerer, setting, target, source, seed: int, draw: int) -> Intervention:
        """A random direction at each steered layer (Gaussian, from the control's own seed),
        with the same alpha in typical norms and positions: DiffMean's control."""
        from langloc.controls import derive_seed
        from langloc.stats.counters import hidden_size
        from langloc.steer.diffmean import random_directions

        like = torch.ones(steerer.lm.num_layers, hidden_size(steerer.lm), dtype=torch.float64)
        r = random_directions(like, setting.layers, derive_seed(seed, f"random:{self.name}:{target}:{source}", draw))
        edit = self._edit(steerer.lm, setting, r, {"method": "random direction", "target": target,
                                                   "alpha": setting.alpha})
        return Intervention([edit], setting.positions, {"model": steerer.lm.meta, "description": "random control"})

    def fingerprint(self, target) -> dict:
        return {"fit": FITS[self.name], "version": FIT_VERSION, "sample": self.samples.describe([target]),
                "unit": "alpha in typical norms"}
