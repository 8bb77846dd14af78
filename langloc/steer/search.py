"""The setting search: score the first grid, then go outward past any edge the best sits on.

Every setting of the first grid is scored (on the tuning prompts: the caller's ``score``) and
the best taken; ties go to the earlier, gentler setting. The best *sits at an edge* when, along
one of its axes, nothing beyond it in that direction was tried with its other coordinates
equal. The axes:

* DiffMean's ``alpha`` (same layers and positions): outward is alpha halved, or doubled;
* DiffMean's ``layers`` (same alpha, positions and shape of group): outward is the whole group
  shifted one layer earlier, or later;
* a neuron rule's ``strength`` (same mode, rule, value and positions): halved or doubled; for
  ``scale`` its excess over 1 is halved or doubled (scale 1 changes nothing).

While the best sits at an edge, the next setting outward is scored; it becomes the best only
if it scores strictly higher. The search ends when, on every axis, the best has a tried, no
better, neighbour beyond it in both directions (the optimum is inside what was tried), or a
:class:`Bounds` stops it: alpha down to its floor or up to its cap, layers out to the first
or last, strength between its bounds, or the extra-settings budget spent. Then the best
still sits at an edge, and :attr:`Search.at_grid_edge` says so.

Nothing here reads the held-out prompts: ``score`` is the only measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from langloc.steer.steering import ResidualSetting, SteerSetting

DIRECTIONS = {-1: "down", 1: "up"}


@dataclass(frozen=True)
class Bounds:
    """How far the search may go past the first grid (see the module)."""

    num_layers: int | None = None  # DiffMean layers stay in 0..num_layers - 1
    alpha: tuple[float, float] = (1 / 64, 8.0)  # floor, cap
    strength: tuple[float, float] = (1 / 8, 16.0)  # floor, cap (scale: of its excess over 1)
    extra: int = 32  # at most this many settings beyond the first grid, per search


def axes(setting) -> dict[str, tuple]:
    """Each axis of ``setting``: (the line it moves on, its coordinate on that line)."""
    if isinstance(setting, ResidualSetting):
        first = setting.layers[0]
        return {"alpha": ((setting.layers, setting.positions), setting.alpha),
                "layers": ((tuple(l - first for l in setting.layers), setting.alpha, setting.positions), first)}
    if isinstance(setting, SteerSetting) and "on" in setting.mode:
        return {"strength": ((setting.mode, setting.rule, setting.value, setting.positions), setting.strength)}
    return {}


def _scaled(value: float, factor: float, floor: float, cap: float, offset: float = 0.0) -> float | None:
    new = offset + (value - offset) * factor
    return new if floor - 1e-12 <= new - offset <= cap + 1e-12 else None


def outward(setting, axis: str, direction: int, bounds: Bounds):
    """The next setting beyond ``setting`` along ``axis`` (``direction`` -1: down or earlier,
    +1: up or later); None where a bound stops it."""
    factor = 2.0 if direction > 0 else 0.5
    if axis == "alpha":
        a = _scaled(setting.alpha, factor, *bounds.alpha)
        return None if a is None else replace(setting, alpha=a)
    if axis == "layers":
        layers = tuple(l + direction for l in setting.layers)
        if layers[0] < 0 or (bounds.num_layers is not None and layers[-1] >= bounds.num_layers):
            return None
        return replace(setting, layers=layers)
    s = _scaled(setting.strength, factor, *bounds.strength, offset=1.0 if setting.rule == "scale" else 0.0)
    return None if s is None else replace(setting, strength=s)


def _edges(best, tried) -> list[tuple[str, int]]:
    """The (axis, direction) pairs along which nothing beyond ``best`` was tried."""
    out = []
    for axis, (line, coord) in axes(best).items():
        on_line = [axes(s)[axis][1] for s in tried if axis in axes(s) and axes(s)[axis][0] == line]
        out += [(axis, d) for d in (-1, 1) if coord == (min(on_line) if d < 0 else max(on_line))]
    return out


def _where(setting, axis: str) -> str:
    return setting.where() if axis == "layers" else f"{getattr(setting, axis):g}"


@dataclass
class Search:
    """What the search tried (``scores``, in order: the first grid, then the extension) and chose."""

    best: object
    scores: dict
    first: int  # how many of ``scores`` were the first grid
    steps: list = field(default_factory=list)  # (axis, direction, setting) of each setting beyond it
    stops: list = field(default_factory=list)  # why the best still sits at an edge, in words

    @property
    def at_grid_edge(self) -> bool:
        return bool(self.stops)

    def extension(self) -> str:
        """The settings beyond the first grid, in words: ``3 more: alpha down to 0.0625, layers up to L7``."""
        if not self.steps:
            return ""
        reach = {}
        for axis, d, s in self.steps:
            reach[(axis, d)] = s
        return f"{len(self.steps)} more: " + ", ".join(f"{axis} {DIRECTIONS[d]} to {_where(s, axis)}"
                                                      for (axis, d), s in reach.items())


def flat(scores: list) -> bool:
    """Whether more than one setting was scored and all scored the same: the tuning prompts could
    not tell them apart, so the best is the tie-break (the first, gentlest setting), not an
    optimum, and "not at a grid edge" says nothing about where an optimum lies. The study applies
    it to a cell's recorded trials (:func:`langloc.steer.evaluation.search_flat`)."""
    return len(scores) > 1 and len(set(scores)) == 1


def edge_search(grid: list, score: Callable, bounds: Bounds = Bounds()) -> Search:
    """Search ``grid``, then outward from the best while it sits at an edge (see the module).
    ``score(setting)`` returns something comparable, higher is better."""
    grid = list(dict.fromkeys(grid))
    scores = {s: score(s) for s in grid}
    best = max(range(len(grid)), key=lambda i: (scores[grid[i]], -i))
    result = Search(grid[best], scores, len(grid))
    while len(result.steps) < bounds.extra:
        step = next(((axis, d, n) for axis, d in _edges(result.best, scores)
                     if (n := outward(result.best, axis, d, bounds)) is not None and n not in scores), None)
        if step is None:
            break
        result.steps.append(step)
        scores[step[2]] = score(step[2])
        if scores[step[2]] > scores[result.best]:
            result.best = step[2]
    for axis, d in _edges(result.best, scores):
        bound = outward(result.best, axis, d, bounds) is None
        result.stops.append(f"{axis} {DIRECTIONS[d]}: " + (f"at its bound ({_where(result.best, axis)})" if bound
                                                          else f"the budget of {bounds.extra} more settings is spent"))
    return result
