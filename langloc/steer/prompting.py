"""The prompting baseline: no intervention, an instruction to continue in the target language.

Each prompt is wrapped in :data:`INSTRUCTION`, naming the target language in English
(``Continue the following text in French:``, a blank line, then the prompt). Where the
tokenizer has a chat template, the wrapped prompt is the user's turn, rendered by
``tokenizer.apply_chat_template(..., add_generation_prompt=True)`` (the rendered text carries
its own special tokens, so it is tokenised without adding more); otherwise it is plain text,
tokenised like any prompt. The model's weights and activations are untouched.

What is judged is the continuation alone: :func:`~langloc.steer.steering.generate` returns the
generated tokens only, and the records keep the prompt as given, so the relevance criterion
(PMI between prompt and output) and the per-prompt intervals see the same prompt as for every
other method.

Its control: the same instruction naming another language, drawn at random (from the control's
own seed) among the language identifier's candidates other than the target. It is matched to
the method in everything but the language named (the same template, the same instruction, the
same place): the difference between the two is what naming the target does. The unsteered
model (the unwrapped prompt) is reported in every row already (``unsteered_*``).

It has one setting, so nothing is searched: ``at_grid_edge`` is empty for it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from langloc import kinds
from langloc.artefacts import write_json
from langloc.data.bible import LANGUAGE_NAMES
from langloc.errors import LanglocError
from langloc.manifest import make_manifest, stamp

INSTRUCTION = "Continue the following text in {language}:\n\n{prompt}"
FORMATS = ("chat", "plain")


def language_name(code: str) -> str:
    """The English name the instruction uses (the code itself for a language langloc cannot name)."""
    return LANGUAGE_NAMES.get(code, code)


def prompt_format(tokenizer) -> str:
    """``chat`` where the tokenizer has a chat template, else ``plain``."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


@dataclass(frozen=True)
class PromptSetting:
    """The prompting baseline's one setting: how the instruction reaches the model."""

    format: str = "plain"  # chat | plain
    rule_label = "instruction"  # methods.csv's rules_chosen (a class attribute, not a field)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise LanglocError(f"a prompt format is one of {', '.join(FORMATS)}, got {self.format!r}")

    def label(self) -> str:
        return f"prompt({self.format})"


@dataclass
class PromptIntervention:
    """An instruction naming ``language``, put around each prompt (see the module). It has the
    interface :func:`~langloc.steer.steering.generate` and the study use: :meth:`wrap`,
    :meth:`apply` (nothing to hook) and :meth:`save`."""

    language: str
    format: str = "plain"
    meta: dict = field(default_factory=dict)
    positions: str = "all"

    def instruction(self, prompt: str) -> str:
        return INSTRUCTION.format(language=language_name(self.language), prompt=prompt)

    def wrap(self, tokenizer, prompts: list[str]) -> tuple[list[str], bool]:
        """The texts the model reads, and whether the tokenizer should add its special tokens."""
        if self.format == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise LanglocError("the prompting setting asks for the chat template, but the tokenizer has none")
            return [tokenizer.apply_chat_template([{"role": "user", "content": self.instruction(p)}], tokenize=False,
                                                  add_generation_prompt=True) for p in prompts], False
        return [self.instruction(p) for p in prompts], True

    @contextlib.contextmanager
    def apply(self, lm, prompt_length: int | None = None):
        yield self  # no hook: the model is left as it is

    def to_dict(self) -> dict:
        # kind langloc.intervention with no edits, so that it sits with the other methods' files;
        # Intervention.load refuses it (it is not something a model can be hooked with)
        manifest = make_manifest(kinds.INTERVENTION, model=self.meta.get("model"),
                                 config={k: v for k, v in self.meta.items() if k != "model"})
        return stamp({"positions": self.positions, **self.meta, "edits": [],
                      "prompting": {"language": self.language, "format": self.format,
                                    "instruction": INSTRUCTION.replace("{language}", language_name(self.language))}},
                     manifest)

    def save(self, path: str | Path) -> Path:
        write_json(path, self.to_dict())
        return Path(path)


@dataclass
class PromptingMethod:
    """The prompting baseline as a method of the steering study (the interface of
    :class:`~langloc.steer.evaluation.NeuronMethod`); ``format``: :func:`prompt_format` of the model's
    tokenizer."""

    format: str = "plain"
    name: str = "prompting"

    @property
    def only_setting(self) -> PromptSetting:  # one setting: the study searches nothing
        return PromptSetting(self.format)

    def grid(self, spec, source: str | None) -> list:
        return [self.only_setting]

    def intervention(self, steerer, setting: PromptSetting, target, source, meta=None) -> PromptIntervention:
        return PromptIntervention(target, setting.format, {"model": steerer.lm.meta, **(meta or {})})

    def control_language(self, candidates, target: str, seed: int, draw: int) -> str:
        """The language the control's instruction names: one of ``candidates`` other than the
        target, drawn from the control's seed (the same for the same seed, target and draw)."""
        from langloc.controls import derive_seed

        pool = sorted(set(candidates) - {target})
        if not pool:
            raise LanglocError("the prompting control needs a language other than the target among the candidates")
        return pool[derive_seed(seed, f"random:{self.name}:{target}", draw) % len(pool)]

    def control(self, steerer, setting: PromptSetting, target, source, seed: int, draw: int) -> PromptIntervention:
        lang = self.control_language(steerer.identify.candidates, target, seed, draw)
        return PromptIntervention(lang, setting.format, {"model": steerer.lm.meta, "description": "random control",
                                                         "named": lang})

    def size(self, target) -> int:
        return 0

    def setting(self, d: dict) -> PromptSetting:
        return PromptSetting(**d)

    def fingerprint(self, target) -> dict:
        return {"instruction": INSTRUCTION, "format": self.format, "control": "the instruction naming a random other "
                                                                              "candidate language"}
