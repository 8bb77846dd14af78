"""The neuron sets validate zeroes besides a language's own set: its exclusive and shared
parts, and two kinds of random control.

* ``exclusive:<lang>``: the set's neurons in no other language's set; ``shared:<lang>``: those
  also in another language's set. Together they are the set.
* ``random:<lang>`` (the paper's control, as in ``langloc ablate``): random neurons with the
  set's count per layer (:func:`langloc.controls.random_control`).
* ``matched:<lang>``: random neurons from the same layers *and* the same activation-probability
  bins in ``lang`` (:func:`matched_control`). A count-matched control mostly draws neurons of
  middling activity; LAPE's neurons are active on most of their language's tokens, and
  zeroing a neuron that is active more often removes more of the signal. The matched control
  asks whether *any* equally active neurons of those layers would do as much.

Each control is drawn ``draws`` times, draw d from ``derive_seed(seed, "<condition>", d)``.
"""

from __future__ import annotations

import torch

from langloc.controls import derive_seed

BINS = 10  # activation-probability bins of width 0.1: [0, 0.1), ..., [0.8, 0.9), [0.9, 1.0]


def split_set(neuron_set, lang: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(exclusive, shared) parts of ``lang``'s set, per layer."""
    own = neuron_set.mask(lang)
    others = torch.zeros_like(own)
    for other in neuron_set.languages:
        if other != lang:
            others |= neuron_set.mask(other)
    excl, shared = own & ~others, own & others
    rows = range(neuron_set.num_layers)
    return ([torch.nonzero(excl[r]).flatten() for r in rows], [torch.nonzero(shared[r]).flatten() for r in rows])


def probability_bins(p: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Bin index of each activation probability: ``min(floor(p · bins), bins - 1)``."""
    return (p * bins).floor().clamp(0, bins - 1).long()


def matched_control(layers: list[torch.Tensor], p: torch.Tensor, seed: int, condition: str, draw: int = 0,
                    bins: int = BINS) -> tuple[list[torch.Tensor], int]:
    """Random neurons with the same count per layer *and per activation-probability bin* as
    ``layers`` (a set's per-layer indices), ``p [L, I]`` the probabilities in the evaluated
    language; never a neuron of the set itself.

    Where a layer's bin has fewer neurons outside the set than the set has in it, the rest are
    drawn from the nearest bins of that layer (one bin further at a time, the lower first).
    Returns the per-layer indices and how many neurons came from another bin than their match.
    """
    g = torch.Generator().manual_seed(derive_seed(seed, condition, draw))
    b = probability_bins(p, bins)
    out, off_bin = [], 0
    for layer, idx in enumerate(layers):
        taken = torch.zeros(p.shape[1], dtype=torch.bool)
        taken[idx] = True  # never the set's own neurons
        chosen = []
        want = torch.bincount(b[layer, idx], minlength=bins) if len(idx) else torch.zeros(bins, dtype=torch.long)
        for k in range(bins):
            need = int(want[k])
            for dist in range(bins):
                if need == 0:
                    break
                for kk in ([k - dist, k + dist] if dist else [k]):
                    if need == 0 or not 0 <= kk < bins:
                        continue
                    pool = torch.nonzero((b[layer] == kk) & ~taken).flatten()
                    pick = pool[torch.randperm(len(pool), generator=g)[:need]]
                    taken[pick] = True
                    chosen.append(pick)
                    need -= len(pick)
                    if dist:
                        off_bin += len(pick)
        out.append(torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long))
    return out, off_bin
