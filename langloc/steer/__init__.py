"""Steering the output language: prompts, judges, settings, methods (neurons, DiffMean), studies."""

from langloc.steer.judge import FluencyRule, LanguageIdentifier, StrictRule
from langloc.steer.prompts import builtin_prompts, load_prompts
from langloc.steer.steering import Generation, ResidualSetting, SteerSetting, Steerer, generate

__all__ = ["FluencyRule", "Generation", "LanguageIdentifier", "ResidualSetting", "SteerSetting", "Steerer", "StrictRule",
           "builtin_prompts", "generate", "load_prompts"]
