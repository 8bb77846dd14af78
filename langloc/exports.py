"""``langloc export`` / ``langloc import``: neuron sets and DiffMean directions in a folder fit
to share on a model hub, and llama.cpp's control-vector GGUF.

The folder (docs/artefacts.md, "Sharing")::

    OUT/langloc.json                     the index: the manifest (kind langloc.export, the model's
                                         fingerprint, the run's corpus, ...), layout_version, and
                                         one entry per neuron set and direction
    OUT/README.md                        a short card for a hub page, written from the index
    OUT/neurons/<name>.safetensors       per language a tensor "<lang>" int64 [n, 2]: (layer, neuron)
    OUT/directions/<src>-<tgt>.safetensors  "vectors" float32 [L, H]: mean residual state after each
                                         decoder layer on <tgt> minus that on <src>
    OUT/directions/<src>-<tgt>.gguf      with --gguf: the same direction as a llama.cpp control vector

:mod:`langloc.hub` reads the folder without langloc's run folders; ``import`` turns it back into
a run folder that ``langloc ablate`` and ``langloc steer`` take.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from langloc.artefacts import atomic_path, write_json, write_text
from langloc.errors import LanglocError
from langloc.hub import INDEX, KIND, LAYOUT_VERSION, load_neurons, read_index
from langloc.manifest import check_same_model, content, make_manifest, stamp

# llama.cpp's control-vector GGUF (read by common_control_vector_load, written by its
# cvector-generator): general.architecture "controlvector", controlvector.model_hint,
# controlvector.layer_count, and one F32 tensor "direction.<il>" [n_embd] per layer il >= 1,
# added to the output of llama.cpp layer il (0-based, as langloc counts: HF model.layers[il]).
# llama.cpp has no slot for layer 0 (its buffer starts at layer 1), so layer 0 is not exported.
GGUF_ARCH = "controlvector"


def write_control_vector(path: str | Path, vectors: torch.Tensor, model_hint: str) -> Path:
    """``vectors`` [L, H] as a llama.cpp control vector (layers 1..L-1; see GGUF_ARCH)."""
    try:
        import gguf
    except ModuleNotFoundError:
        raise LanglocError("writing GGUF needs the gguf package: pip install 'langloc[gemma]'") from None
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), GGUF_ARCH)
        w.add_string(f"{GGUF_ARCH}.model_hint", model_hint)
        w.add_int32(f"{GGUF_ARCH}.layer_count", vectors.shape[0] - 1)
        for layer in range(1, vectors.shape[0]):
            w.add_tensor(f"direction.{layer}", vectors[layer].float().numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read_control_vector(path: str | Path) -> tuple[dict[int, torch.Tensor], dict]:
    """A llama.cpp control vector: ``({layer: vector}, {"model_hint", "layer_count"})``."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key):
        f = reader.get_field(key)
        if f is None:
            raise LanglocError(f"{path} is not a llama.cpp control vector (no {key})")
        return f.contents()

    if field("general.architecture") != GGUF_ARCH:
        raise LanglocError(f"{path} is not a llama.cpp control vector (architecture {field('general.architecture')!r})")
    vectors = {int(t.name.split(".", 1)[1]): torch.from_numpy(t.data.copy()).reshape(-1)
               for t in reader.tensors if t.name.startswith("direction.")}
    return vectors, {"model_hint": field(f"{GGUF_ARCH}.model_hint"), "layer_count": field(f"{GGUF_ARCH}.layer_count")}


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """``en-fr,en-zh`` -> ``[("en", "fr"), ("en", "zh")]``."""
    pairs = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        parts = item.split("-")
        if len(parts) != 2 or not all(parts):
            raise LanglocError(f"--diffmean takes source-target pairs such as en-fr, got {item!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def _save(path: Path, tensors: dict, meta: dict) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"langloc": json.dumps(meta, ensure_ascii=False)})


def _neuron_entry(out: Path, ns) -> dict:
    file = f"neurons/{ns.method}.safetensors"
    tensors = {}
    for lang in ns.languages:
        pairs = [(layer, int(i)) for layer, idx in enumerate(ns.layers(lang)) for i in idx]
        tensors[lang] = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    entry = {"file": file, "method": ns.method, "params": ns.params, "languages": ns.languages,
             "num_layers": ns.num_layers, "intermediate_size": ns.intermediate_size,
             "counts": {lang: ns.count(lang) for lang in ns.languages}}
    _save(out / file, tensors, entry)
    return entry


def _direction_entry(out: Path, stats, source: str, target: str, gguf: bool) -> tuple[str, dict]:
    from langloc.steer.diffmean import diffmean_vectors

    name = f"{source}-{target}"
    vectors = diffmean_vectors(stats, target, source).float()
    entry = {"file": f"directions/{name}.safetensors", "source": source, "target": target,
             "num_layers": vectors.shape[0], "hidden_size": vectors.shape[1],
             "definition": "vectors[l] = mean residual state after decoder layer l on target text "
                           "- the same on source text (the run's statistics)"}
    _save(out / entry["file"], {"vectors": vectors}, entry)
    if gguf:
        entry["gguf"] = f"directions/{name}.gguf"
        write_control_vector(out / entry["gguf"], vectors, stats.meta["model"].get("model_type") or "unknown")
    return name, entry


def export_run(run: str | Path, out: str | Path, *, neurons: list[Path] = (), directions: list[tuple[str, str]] = (),
               gguf: bool = False) -> Path:
    """Export neuron sets (default: all of ``RUN/neurons``) and DiffMean ``directions``
    (``(source, target)`` pairs, from the run's residual sums) of a run folder to ``out``."""
    from langloc.identify import NeuronSet
    from langloc.stats import ActivationStats, read_run

    started, run, out = time.time(), Path(run), Path(out)
    if (out / INDEX).exists():
        raise LanglocError(f"{out} already holds an export; choose another --out")
    meta = read_run(run)
    paths = list(neurons) or sorted((run / "neurons").glob("*.json"))
    if not paths and not directions:
        raise LanglocError(f"nothing to export: {run}/neurons has no neuron set and no --diffmean pair was given")
    doc = {"layout_version": LAYOUT_VERSION, "neuron_sets": {}, "directions": {}}
    for path in paths:
        ns = NeuronSet.load(path)
        check_same_model(ns.meta, meta["model"], f"neuron set {path}")
        doc["neuron_sets"][ns.method] = _neuron_entry(out, ns)
    if directions:
        stats = ActivationStats.load(run)
        for source, target in directions:
            name, entry = _direction_entry(out, stats, source, target, gguf)
            doc["directions"][name] = entry
    manifest = make_manifest(KIND, model=meta["model"], corpus=meta.get("corpus"), split="stats",
                             config={**{k: meta[k] for k in ("window", "tokens") if k in meta},
                                     "neurons": [str(p) for p in paths], "diffmean": [list(d) for d in directions],
                                     "gguf": gguf},
                             seeds={"data": meta["seed"]} if "seed" in meta else {}, started=started)
    write_json(out / INDEX, stamp(doc, manifest))
    write_text(out / "README.md", card(read_index(out)))
    return out


def card(doc: dict) -> str:
    """A short README for a hub page, from the export's index."""
    model = doc["model"] or {}
    lines = [f"# Language neurons and directions of {model.get('name', '?')}", "",
             f"Made by langloc {doc['langloc_version']} (`{' '.join(doc['command'])}`) on corpus "
             f"`{(doc.get('corpus') or {}).get('name', '?')}`; layout {doc['layout_version']} "
             "(langloc's docs/artefacts.md, \"Sharing\").", "",
             f"Model fingerprint: weights `{model.get('weights_fingerprint')}`, tokenizer "
             f"`{model.get('tokenizer_fingerprint')}`; {model.get('num_layers')} layers.", ""]
    for name, e in doc["neuron_sets"].items():
        lines.append(f"- neuron set `{name}` ({e['file']}): " + ", ".join(f"{k} {v}" for k, v in e["counts"].items()))
    for name, e in doc["directions"].items():
        lines.append(f"- DiffMean direction `{name}` ({e['file']}{', ' + e['gguf'] if 'gguf' in e else ''})")
    lines += ["", "Steer any Hugging Face model with a direction: `langloc.hub.steering` (see its docstring).", ""]
    return "\n".join(lines)


def import_export(folder: str | Path, out: str | Path, *, model_meta: dict | None = None) -> Path:
    """An export as a run folder: ``run.json`` (the exporting run's model, corpus and settings),
    ``neurons/<method>.json`` and ``directions/`` (copied). ``model_meta``: the model loaded to
    check the export against (``LoadedModel.meta``)."""
    from langloc.identify import NeuronSet
    from langloc.stats.activation_stats import RUN_FILE, write_run_meta

    started, folder, out = time.time(), Path(folder), Path(out)
    doc = read_index(folder)
    if model_meta is not None:
        check_same_model(doc, model_meta, f"export {folder}")
    if (out / RUN_FILE).exists():
        raise LanglocError(f"{out} already holds a run; choose another --out")
    languages = []
    for name, entry in doc["neuron_sets"].items():
        ns = NeuronSet(load_neurons(folder, name), entry["num_layers"], entry["intermediate_size"], entry["method"],
                       entry.get("params", {}), {"model": doc["model"], "corpus": doc.get("corpus")})
        ns.save(out / "neurons" / f"{entry['method']}.json", started=started)
        languages += [lang for lang in ns.languages if lang not in languages]
    for entry in doc["directions"].values():
        for key in ("file", "gguf"):
            if key in entry:
                (out / entry[key]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / entry[key], out / entry[key])
    meta = {**content(doc), "imported": True, "languages": languages}
    meta.update({k: v for k, v in (doc.get("config") or {}).items() if k in ("window", "tokens")})
    if "data" in (doc.get("seeds") or {}):
        meta["seed"] = doc["seeds"]["data"]
    for key in ("layout_version", "neuron_sets", "directions"):
        meta.pop(key, None)
    write_run_meta(out, meta, started)
    return out
