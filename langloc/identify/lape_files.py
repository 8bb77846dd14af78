"""Files of the LAPE reference implementation (Tang et al.), for interoperability.

``OUTDIR/activation.<lang>.pt``: ``{"n": int, "over_zero": tensor[L, I]}`` per language (the
reference stored int32 counters, which overflow past 2**31 tokens; langloc writes int64).
``OUTDIR/language_mask.pt``: a list over languages of lists over layers of LongTensors.
``OUTDIR/languages.txt``: the language order, one code per line.
"""

from __future__ import annotations

from pathlib import Path

import torch

from langloc.artefacts import atomic_path, write_text
from langloc.errors import LanglocError
from langloc.identify.neuron_set import NeuronSet


def _save_pt(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def export_lape(stats, neuron_set: NeuronSet | None, outdir: str | Path) -> list[Path]:
    outdir = Path(outdir)
    written = []
    for k, lang in enumerate(stats.languages):
        path = outdir / f"activation.{lang}.pt"
        _save_pt({"n": int(stats.n[k]), "over_zero": stats.over_zero[k].clone()}, path)
        written.append(path)
    if neuron_set is not None:
        mask = [[idx.clone() for idx in neuron_set.layers(lang)] for lang in stats.languages]
        _save_pt(mask, outdir / "language_mask.pt")
        written.append(outdir / "language_mask.pt")
    write_text(outdir / "languages.txt", "".join(f"{lang}\n" for lang in stats.languages))
    written.append(outdir / "languages.txt")
    return written


def _load_pt(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a readable file"
        raise LanglocError(f"cannot read {path} as a torch file: {type(exc).__name__}: {exc}") from None


def import_lape(indir: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor, NeuronSet | None]:
    """Read reference-format files: (languages, n [K], over_zero [K, L, I] int64, neuron set or None)."""
    indir = Path(indir)
    if not indir.is_dir():
        raise LanglocError(f"folder not found: {indir}")
    order = indir / "languages.txt"
    if order.is_file():
        langs = [line.strip() for line in order.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        langs = sorted(p.name[len("activation."):-len(".pt")] for p in indir.glob("activation.*.pt"))
    if not langs:
        raise LanglocError(f"{indir} has no activation.<lang>.pt files")
    ns, counts = [], []
    for lang in langs:
        d = _load_pt(indir / f"activation.{lang}.pt")
        if not isinstance(d, dict) or "n" not in d or "over_zero" not in d:
            raise LanglocError(f"activation.{lang}.pt is not a dict with 'n' and 'over_zero'")
        ns.append(int(d["n"]))
        counts.append(torch.as_tensor(d["over_zero"]).long())
    shapes = {tuple(c.shape) for c in counts}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise LanglocError(f"over_zero tensors must all be [L, I]; got shapes {sorted(shapes)}")
    over_zero = torch.stack(counts)
    L, I = over_zero.shape[1:]
    neuron_set = None
    mask_path = indir / "language_mask.pt"
    if mask_path.is_file():
        mask = _load_pt(mask_path)
        if not isinstance(mask, (list, tuple)) or len(mask) != len(langs):
            raise LanglocError(f"language_mask.pt must be a list of {len(langs)} languages of per-layer index tensors")
        neuron_set = NeuronSet({lang: [torch.as_tensor(i).long().sort().values for i in layers]
                                for lang, layers in zip(langs, mask)}, L, I, method="lape",
                               params={"imported_from": str(indir)})
    return langs, torch.tensor(ns, dtype=torch.long), over_zero, neuron_set
