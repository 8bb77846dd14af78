"""Steer the output language: build the intervention, generate, judge, search the strength.

A steering *setting* says what to do with the target language's neurons (``on``: set them to
``strength`` × their value), the source language's neurons (``off``: zero them) or both
(``on+off``). The control applies the same setting to random neurons with the same count per
layer as each real set (values from the same source, for the same language).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from langloc.errors import LanglocError, check_range
from langloc.intervene.intervention import Edit, Intervention
from langloc.intervene.values import neuron_values
from langloc.steer.judge import FluencyRule, LanguageIdentifier, judge, summarise

STEER_MODES = ("on", "off", "on+off")
DEFAULT_STRENGTHS = (1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass(frozen=True)
class SteerSetting:
    mode: str = "on"  # on | off | on+off
    strength: float = 1.0
    value: str = "mean_active"  # value source of the target neurons (see langloc.intervene.values)
    positions: str = "all"

    def __post_init__(self):
        if self.mode not in STEER_MODES:
            raise LanglocError(f"steering mode must be one of {', '.join(STEER_MODES)}, got {self.mode!r}")

    def label(self) -> str:
        on = f"{self.value}x{self.strength:g}" if "on" in self.mode else ""
        label = {"on": f"on({on})", "off": "off", "on+off": f"on({on})+off"}[self.mode]
        return label if self.positions == "all" else f"{label}@{self.positions}"


@dataclass
class Generation:
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16
    repetition_penalty: float = 1.0  # Hugging Face generate's names; 1.0 and 0 switch them off
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.no_repeat_ngram_size < 0:
            raise LanglocError("max_new_tokens and batch_size must be positive, no_repeat_ngram_size not negative")
        if self.temperature <= 0 or self.repetition_penalty <= 0:
            raise LanglocError("temperature and repetition_penalty must be positive")
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)


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
        base = values.values(setting.value, target_layers, target, lm)
        edits.append(Edit("set", list(target_layers), [v * setting.strength for v in base],
                          {"value": setting.value, "language": target, "strength": setting.strength}))
    return Intervention(edits, setting.positions, {"model": lm.meta, **(meta or {})})


@torch.inference_mode()
def generate(lm, prompts: list[str], gen: Generation, intervention: Intervention | None = None) -> list[dict]:
    """Generate a continuation of every prompt; returns dicts with prompt, text, tokens."""
    tok = lm.tokenizer
    if getattr(tok, "pad_token_id", None) is None:
        tok.pad_token = tok.eos_token
    side, tok.padding_side = tok.padding_side, "left"  # decoder-only batches are left-padded
    stop = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    gen_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    stop.update([gen_eos] if isinstance(gen_eos, int) else gen_eos or [])  # e.g. Gemma's <end_of_turn>
    out = []
    try:
        for s in range(0, len(prompts), gen.batch_size):
            chunk = prompts[s:s + gen.batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True).to(lm.device)
            kwargs = dict(max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample, pad_token_id=tok.pad_token_id,
                          repetition_penalty=gen.repetition_penalty, no_repeat_ngram_size=gen.no_repeat_ngram_size)
            if gen.do_sample:
                torch.manual_seed(gen.seed + s)
                kwargs.update(temperature=gen.temperature, top_p=gen.top_p)
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

    def run(self, prompts, target, intervention) -> tuple[list[dict], dict]:
        recs = judge(generate(self.lm, prompts, self.gen, intervention), self.lm, self.identify, target, self.rule)
        return recs, summarise(recs, target)

    def intervention(self, setting, target, t_layers, source, s_layers, meta=None) -> Intervention:
        return steering_intervention(self.lm, setting, target, t_layers, source, s_layers, self.values, meta)

    def search(self, prompts, target, t_layers, source, s_layers, settings, progress=True) -> tuple[SteerSetting, list]:
        """Evaluate ``settings`` on (tuning) ``prompts``; pick the highest fluent target rate
        (ties: the earlier setting in the list, i.e. the gentler one)."""
        trials = []
        for st in tqdm(settings, desc=f"search {target}", unit="setting", disable=not progress, leave=False):
            _, summ = self.run(prompts, target, self.intervention(st, target, t_layers, source, s_layers))
            trials.append({"setting": asdict(st), "label": st.label(), **summ})
        best = max(range(len(settings)), key=lambda i: (trials[i]["fluent_target_rate"], -i))
        return settings[best], trials


def search_grid(value: str, strengths=DEFAULT_STRENGTHS, with_source: bool = True,
                positions: str | tuple[str, ...] = "all") -> list[SteerSetting]:
    """For each position mode in turn: on x strengths, then on+off x strengths, then off
    (gentle before strong, and the first position mode before the others, so that ties go to
    the earlier, gentler setting)."""
    grid = []
    for pos in (positions,) if isinstance(positions, str) else positions:
        grid += [SteerSetting("on", s, value, pos) for s in strengths]
        if with_source:
            grid += [SteerSetting("on+off", s, value, pos) for s in strengths]
            grid.append(SteerSetting("off", 1.0, value, pos))
    return grid
