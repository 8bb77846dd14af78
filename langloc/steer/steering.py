"""Steer the output language: build the intervention, generate, judge, search the strength.

A neuron steering *setting* says what to do with the target language's neurons (``on``), the
source language's neurons (``off``: zero them) or both (``on+off``). ``on`` applies one of
three rules ("language arithmetic", Gurgurov et al. 2025, next to the LAPE recipe):

* ``set``: activation := ``strength`` × value (the value: e.g. the mean active value);
* ``add``: activation := activation + ``strength`` × value;
* ``scale``: activation := activation × ``strength``.

A :class:`ResidualSetting` steers the residual stream instead (DiffMean,
:mod:`langloc.steer.diffmean`): ``alpha`` × (mean[target] − mean[source]) is added to the
output of each of ``layers``; a :class:`DirectionSetting` does the same along a direction
fitted on sampled residual states (a probe, LDA or PCA, :mod:`langloc.steer.directions`). The
controls apply the same setting to random neurons with the same count per layer, or a random
direction of the same norm. The prompting baseline (:mod:`langloc.steer.prompting`) edits no
activation: it wraps each prompt in an instruction.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from langloc.errors import LanglocError, check_range
from langloc.intervene.intervention import Edit, Intervention
from langloc.intervene.values import neuron_values
from langloc.steer.judge import FluencyRule, LanguageIdentifier, StrictRule, judge, summarise
from langloc.steer.relevance import Relevance

STEER_MODES = ("on", "off", "on+off")
STEER_RULES = ("set", "add", "scale")


@dataclass(frozen=True)
class SteerSetting:
    mode: str = "on"  # on | off | on+off
    strength: float = 1.0
    value: str = "mean_active"  # value source of the target neurons (see langloc.intervene.values)
    positions: str = "all"
    rule: str = "set"  # set | add | scale (see the module)

    def __post_init__(self):
        if self.mode not in STEER_MODES:
            raise LanglocError(f"steering mode must be one of {', '.join(STEER_MODES)}, got {self.mode!r}")
        if self.rule not in STEER_RULES:
            raise LanglocError(f"steering rule must be one of {', '.join(STEER_RULES)}, got {self.rule!r}")

    def label(self) -> str:
        on = {"set": f"{self.value}x{self.strength:g}", "add": f"+{self.value}x{self.strength:g}",
              "scale": f"x{self.strength:g}"}[self.rule] if "on" in self.mode else ""
        label = {"on": f"on({on})", "off": "off", "on+off": f"on({on})+off"}[self.mode]
        return label if self.positions == "all" else f"{label}@{self.positions}"


@dataclass(frozen=True)
class ResidualSetting:
    """DiffMean: add ``alpha`` × (mean[target] − mean[source]) to the output of ``layers``."""

    layers: tuple[int, ...] = (6,)
    alpha: float = 1.0
    positions: str = "all"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        if not self.layers:
            raise LanglocError("a residual setting needs at least one layer")

    def where(self) -> str:
        """The layers as labels write them: ``L6``, ``L5-7``, ``L4,6``."""
        ls = self.layers
        return f"L{ls[0]}" if len(ls) == 1 else (f"L{ls[0]}-{ls[-1]}" if list(ls) == list(range(ls[0], ls[-1] + 1))
                                                 else "L" + ",".join(map(str, ls)))

    def label(self) -> str:
        label = f"diffmean({self.where()}x{self.alpha:g})"
        return label if self.positions == "all" else f"{label}@{self.positions}"


DIRECTION_METHODS = ("probe", "lda", "pca")  # residual directions fitted on a run's residual sample


@dataclass(frozen=True)
class DirectionSetting(ResidualSetting):
    """A residual setting along a direction fitted on sampled residual states by ``method``
    (``probe``, ``lda`` or ``pca``, :mod:`langloc.steer.directions`) instead of DiffMean's:
    ``alpha`` typical norms along the unit direction, at ``layers``."""

    method: str = "probe"

    def __post_init__(self):
        super().__post_init__()
        if self.method not in DIRECTION_METHODS:
            raise LanglocError(f"a direction method is one of {', '.join(DIRECTION_METHODS)}, got {self.method!r}")

    def label(self) -> str:
        label = f"{self.method}({self.where()}x{self.alpha:g})"
        return label if self.positions == "all" else f"{label}@{self.positions}"


def depth_layer(fraction: float, num_layers: int) -> int:
    """The layer at ``fraction`` of a model's depth: ``fraction`` × (L − 1) rounded to the
    nearest layer, halves up, so 0.0 is the first layer and 1.0 the last."""
    return math.floor(fraction * (num_layers - 1) + 0.5)


LAYER_GROUP_RULE = ("an integer is a layer index (6, a band 5-7, a list 4,6); a number with a decimal point is a "
                    "fraction of the depth (0.5, a band 0.4-0.6), 0.0 the first layer and 1.0 the last")


class LayerGroupError(ValueError):
    """A layer group that names no layers, with why ("SPEC: reason")."""


def layer_group(spec: str, num_layers: int | None = None) -> tuple[int, ...]:
    """The layers a group names (:class:`LayerGroupError` otherwise): absolute layers as
    ``ResidualSetting.label`` writes them, ``6``, a band ``5-7`` or a list ``4,6``; or fractions
    of the depth, ``0.5``, a band ``0.4-0.6`` or a list ``0.25,0.75`` (one kind per group),
    resolved for a model of ``num_layers`` layers by :func:`depth_layer`."""
    spec = str(spec).strip()
    band = "-" in spec
    parts = [p.strip() for p in (spec.split("-") if band else spec.split(","))]
    fractional = {"." in p for p in parts}

    def error(why: str = LAYER_GROUP_RULE) -> LayerGroupError:
        return LayerGroupError(f"{spec}: {why}")

    if not all(parts) or (band and len(parts) != 2):
        raise error()
    if len(fractional) > 1:
        raise error("layers and fractions mixed")
    try:
        values = [float(p) if "." in p else int(p) for p in parts]
    except ValueError:
        raise error() from None
    if band and values[0] > values[1]:
        raise error("a band runs from its lower end to its upper end")
    if fractional.pop():
        if not all(0.0 <= f <= 1.0 for f in values):
            raise error("fractions of the depth lie in 0.0..1.0")
        if num_layers is None:
            raise error("a fraction of the depth needs the model's number of layers")
        values = [depth_layer(f, num_layers) for f in values]
    elif any(v < 0 for v in values):
        raise error()
    if band:
        return tuple(range(values[0], values[1] + 1))
    return tuple(sorted(set(values)))


def parse_setting(label: str, num_layers: int | None = None) -> SteerSetting | ResidualSetting:
    """The setting a label names: the inverse of ``label()``, so a setting the study chose (as
    ``summary.csv`` prints it) can be given back, e.g. ``on(mean_activex2)+off@generated``,
    ``on(+p90x1)``, ``on(x4)``, ``off``, ``diffmean(L6x4)``, ``diffmean(L5-7x2)@generated``,
    ``probe(L6x0.5)``, ``lda(L5-7x1)``, ``pca(L9x0.25)``.
    The value ``auto`` stands for each neuron method's own (see ``langloc steer --help``).
    A residual setting's layers follow :data:`LAYER_GROUP_RULE`, as ``--residual-layers`` does:
    ``diffmean(L0.5x0.25)`` is the layer at half the depth of a model of ``num_layers`` layers."""
    from langloc.intervene.intervention import POSITIONS

    text = str(label).strip()
    body, _, positions = text.partition("@")
    positions = positions or "all"
    usage = ("give a setting as the study labels it: on(VALUExS), on(+VALUExS), on(xS), each optionally "
             "+off, or off, or diffmean(L6xA) / diffmean(L5-7xA) / diffmean(L0.5xA) (a fraction of the depth; "
             "likewise probe, lda, pca); then optionally @prompt or @generated")
    if positions not in POSITIONS:
        raise LanglocError(f"setting {text!r}: positions must be one of {', '.join(POSITIONS)}")
    try:
        m = re.fullmatch(r"(diffmean|probe|lda|pca)\(L([\d,.\-]+)x([^)]+)\)", body)
        if m:
            kind, layers, alpha = m.groups()
            try:
                group = layer_group(layers, num_layers)
            except LayerGroupError as exc:
                raise LanglocError(f"setting {text!r}: {exc}") from None
            if kind == "diffmean":
                return ResidualSetting(group, float(alpha), positions)
            return DirectionSetting(group, float(alpha), positions, kind)
        if body == "off":
            return SteerSetting("off", positions=positions)
        m = re.fullmatch(r"on\(([^()]*)\)(\+off)?", body)
        if not m:
            raise ValueError
        on, off = m.groups()
        mode = "on+off" if off else "on"
        if on.startswith("x"):
            return SteerSetting(mode, float(on[1:]), positions=positions, rule="scale")
        rule, on = ("add", on[1:]) if on.startswith("+") else ("set", on)
        value, sep, strength = on.rpartition("x")
        if not sep or not value:
            raise ValueError
        return SteerSetting(mode, float(strength), value, positions, rule)
    except ValueError:
        raise LanglocError(f"setting {text!r}: {usage}") from None


@dataclass
class Generation:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off. Passed to generate always, so Hugging Face's own default (50) never applies unseen
    seed: int = 0
    batch_size: int = 16
    repetition_penalty: float = 1.0  # Hugging Face generate's names; 1.0 and 0 switch them off
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.no_repeat_ngram_size < 0 or self.top_k < 0:
            raise LanglocError("max_new_tokens and batch_size must be positive, no_repeat_ngram_size and top_k not negative")
        if self.temperature <= 0 or self.repetition_penalty <= 0:
            raise LanglocError("temperature and repetition_penalty must be positive")
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)


def describe_decoding(gen: dict) -> str:
    """How the continuations were decoded, in words (``gen``: a :class:`Generation` as a dict,
    as ``steer.json`` records it), e.g. ``greedy, repetition penalty 1.3``."""
    if gen.get("do_sample"):
        shape = [f"temperature {gen.get('temperature', 1.0):g}"]
        shape += [f"top-p {gen['top_p']:g}"] if gen.get("top_p", 1.0) < 1.0 else []
        shape += [f"top-k {gen['top_k']}"] if gen.get("top_k") else []
        parts = [f"sampled ({', '.join(shape)}; seed {gen.get('seed', 0)})"]
    else:
        parts = ["greedy"]
    if gen.get("repetition_penalty", 1.0) != 1.0:
        parts.append(f"repetition penalty {gen['repetition_penalty']:g}")
    if gen.get("no_repeat_ngram_size"):
        parts.append(f"no repeated {gen['no_repeat_ngram_size']}-gram")
    return ", ".join(parts) + f"; {gen.get('max_new_tokens', '?')} new tokens"


@dataclass
class ValueContext:
    """What value sources need: statistics, expert-unit medians, the model and text batches."""

    stats: object = None
    medians: dict | None = None
    batches: Callable[[str], object] | None = None  # lang -> iterable of windows
    cache: dict = field(default_factory=dict)

    def values(self, source: str, layers, lang: str, lm) -> list[torch.Tensor]:
        key = (source, lang, tuple(tuple(i.tolist()) for i in layers))
        if key not in self.cache:
            batches = (lambda: self.batches(lang)) if self.batches else None
            self.cache[key] = neuron_values(source, layers, lang, stats=self.stats, medians=self.medians,
                                            batches=batches, lm=lm)
        return self.cache[key]


def steering_intervention(lm, setting: SteerSetting, target: str, target_layers, source: str | None,
                          source_layers, values: ValueContext, meta: dict | None = None) -> Intervention:
    edits = []
    if "off" in setting.mode:
        if source_layers is None:
            raise LanglocError(f"steering mode {setting.mode!r} needs a source language (--source)")
        edits.append(Edit.uniform("zero", source_layers, source={"language": source}))
    if "on" in setting.mode:
        src = {"value": setting.value, "language": target, "strength": setting.strength, "rule": setting.rule}
        if setting.rule == "scale":
            edits.append(Edit.uniform("scale", list(target_layers), setting.strength, src))
        else:
            base = values.values(setting.value, target_layers, target, lm)
            edits.append(Edit(setting.rule, list(target_layers), [v * setting.strength for v in base], src))
    return Intervention(edits, setting.positions, {"model": lm.meta, **(meta or {})})


@torch.inference_mode()
def generate(lm, prompts: list[str], gen: Generation, intervention: Intervention | None = None) -> list[dict]:
    """Generate a continuation of every prompt; returns dicts with prompt, text, tokens (the
    generated tokens only, never the prompt). An ``intervention`` with a ``wrap`` method (the
    prompting baseline, :mod:`langloc.steer.prompting`) rewrites what the model reads; the
    records keep the prompt as given."""
    tok = lm.tokenizer
    if getattr(tok, "pad_token_id", None) is None:
        tok.pad_token = tok.eos_token
    side, tok.padding_side = tok.padding_side, "left"  # decoder-only batches are left-padded
    stop = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    wrap = getattr(intervention, "wrap", None)
    gen_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    stop.update([gen_eos] if isinstance(gen_eos, int) else gen_eos or [])  # e.g. Gemma's <end_of_turn>
    out = []
    try:
        for s in range(0, len(prompts), gen.batch_size):
            chunk = prompts[s:s + gen.batch_size]
            # a prompting "intervention" rewrites the prompts instead (an instruction, through the
            # chat template where there is one: its text then carries the special tokens itself)
            texts, specials = wrap(tok, chunk) if wrap is not None else (chunk, True)
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=specials).to(lm.device)
            kwargs = dict(max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample, pad_token_id=tok.pad_token_id,
                          repetition_penalty=gen.repetition_penalty, no_repeat_ngram_size=gen.no_repeat_ngram_size)
            if gen.do_sample:
                torch.manual_seed(gen.seed + s)
                kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if intervention is not None:
                with intervention.apply(lm):
                    ids = lm.model.generate(**enc, **kwargs)
            else:
                ids = lm.model.generate(**enc, **kwargs)
            for prompt, row in zip(chunk, ids[:, enc["input_ids"].shape[1]:].tolist()):
                new = []
                for t in row:
                    if t in stop:
                        break
                    new.append(t)
                out.append({"prompt": prompt, "text": tok.decode(new, skip_special_tokens=True), "tokens": new})
    finally:
        tok.padding_side = side
    return out


@dataclass
class Steerer:
    """Everything fixed across one steering study: model, judge, generation settings."""

    lm: object
    values: ValueContext
    gen: Generation = field(default_factory=Generation)
    rule: FluencyRule = field(default_factory=FluencyRule)
    identify: LanguageIdentifier = field(default_factory=LanguageIdentifier)
    strict: StrictRule | None = None  # set once the native references are measured
    relevance: Relevance = field(default_factory=Relevance)  # the strict judge's relevance criterion

    def run(self, prompts, target, intervention, lazy: bool = False) -> tuple[list[dict], dict]:
        """Generate and judge; ``lazy``: relevance only where it can change the strict verdict
        (:func:`~langloc.steer.judge.judge`)."""
        recs = judge(generate(self.lm, prompts, self.gen, intervention), self.lm, self.identify, target, self.rule,
                     self.strict, self.relevance, lazy=lazy)
        return recs, summarise(recs, target)

    def intervention(self, setting, target, t_layers, source, s_layers, meta=None) -> Intervention:
        return steering_intervention(self.lm, setting, target, t_layers, source, s_layers, self.values, meta)
