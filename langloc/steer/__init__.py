"""Steering the output language through neurons: prompts, judging, settings, studies."""

from langloc.steer.judge import FluencyRule, LanguageIdentifier
from langloc.steer.prompts import builtin_prompts, load_prompts
from langloc.steer.steering import Generation, SteerSetting, Steerer, generate, search_grid

__all__ = ["FluencyRule", "Generation", "LanguageIdentifier", "SteerSetting", "Steerer", "builtin_prompts",
           "generate", "load_prompts", "search_grid"]
