"""Compare neuron sets made by different methods: per language and layer, counts and Jaccard."""

from __future__ import annotations

from itertools import combinations

from langloc.errors import LanglocError


def compare_sets(sets: dict) -> list[dict]:
    """Rows ``{a, b, language, layer, size_a, size_b, shared, jaccard}`` for every pair of
    sets, every language both cover, every layer and ``layer="all"``. Jaccard of two empty
    sets is undefined (None)."""
    if len(sets) < 2:
        raise LanglocError("compare needs at least two neuron sets")
    shapes = {(ns.num_layers, ns.intermediate_size) for ns in sets.values()}
    if len(shapes) != 1:
        raise LanglocError(f"the neuron sets are for different model shapes: {sorted(shapes)}")
    rows = []
    for (na, a), (nb, b) in combinations(sets.items(), 2):
        langs = [lang for lang in a.languages if lang in b.languages]
        if not langs:
            raise LanglocError(f"{na} and {nb} have no language in common")
        for lang in langs:
            ma, mb = a.mask(lang), b.mask(lang)
            for layer in list(range(a.num_layers)) + ["all"]:
                x, y = (ma, mb) if layer == "all" else (ma[layer], mb[layer])
                inter, union = int((x & y).sum()), int((x | y).sum())
                rows.append({"a": na, "b": nb, "language": lang, "layer": layer, "size_a": int(x.sum()),
                             "size_b": int(y.sum()), "shared": inter,
                             "jaccard": inter / union if union else None})
    return rows
