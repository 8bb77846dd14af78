"""Each default is stated once: every option of a command defaults to the default of the setting
it sets, read from where that setting is defined (a study's Config, the demo's DemoConfig, a
build step's config in langloc.workflows, an identification method's settings class). A
difference fails, naming the command and option."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import typer.main

from langloc import cli
from langloc.demo import DemoConfig
from langloc.identify.methods import METHODS
from langloc.regions.importance import ImportanceConfig, compute_importance
from langloc.steer.evaluation import GridSpec
from langloc.studies import STUDIES, steer
from langloc.studies.base import _coerce
from langloc.workflows import CollectConfig, IdentifyConfig, RegionsConfig

SETTINGS = tuple(m.Settings for m in METHODS.values())  # every identification method's settings
COUNTER_SETTINGS = tuple(m.Settings for m in METHODS.values() if m.counters)
# Where each command's settings are defined (several: the first that has the setting).
SOURCES = {**{name: (study.Config,) for name, study in STUDIES.items()}, "demo": (DemoConfig,),
           "collect": (CollectConfig,), "identify": (IdentifyConfig, *SETTINGS), "importance": (ImportanceConfig,),
           "regions": (RegionsConfig,)}
# Commands whose options are no config's or library function's settings with defaults.
NO_SOURCE = {"export-lape", "import-lape", "export", "import", "report", "planted"}
# Options named otherwise than their setting.
RENAMED = {("region-ablate", "regions_"): "regions", ("demo", "out_dir"): "out"}
# Options with a default that the source has no default for, and why.
CLI_ONLY = {
    ("collect", "lid_filter"): "the switch (CollectConfig.lid_filter is the filter, built with --lid-threshold)",
    ("collect", "lid_threshold"): "the filter's threshold, given to CollectConfig as lid_filter",
    ("importance", "model"): "langloc.models.loading.DEFAULT_MODEL, the default model of every command",
    ("importance", "lid_filter"): "the switch (ImportanceConfig.lid_filter is the filter, built with --lid-threshold)",
    ("importance", "lid_threshold"): "the filter's threshold, given to ImportanceConfig as lid_filter",
    ("spread", "out_path"): "where the study writes (run's out)",
    ("perturb", "out"): "where the study writes (run's out)",
    ("validate", "out_dir"): "where the study writes (run's out)",
    # validate's stability-check settings default to None: the set's recorded settings, else identify's
    **{("validate", f.name): "None: the set's recorded setting, else identify's default (Config.identify)"
       for cls in COUNTER_SETTINGS for f in dataclasses.fields(cls)},
}

COMMANDS = typer.main.get_command(cli.app).commands


def _setting(source, name: str):
    """(found, has_default, default, type) of setting ``name`` of ``source``."""
    if dataclasses.is_dataclass(source):
        fields = {f.name: f for f in dataclasses.fields(source)}
        if name not in fields:
            return False, False, None, None
        f = fields[name]
        tp = typing.get_type_hints(source)[name]
        if f.default is not dataclasses.MISSING:
            return True, True, f.default, tp
        if f.default_factory is not dataclasses.MISSING:
            return True, True, f.default_factory(), tp
        return True, False, None, tp
    params = inspect.signature(source).parameters
    if name not in params:
        return False, False, None, None
    default = params[name].default
    return True, default is not inspect.Parameter.empty, default, None


def _where(sources, name: str) -> str:
    return " or ".join(f"{source.__module__}.{source.__qualname__}.{name}" for source in sources)


def _differences(command: str) -> list[str]:
    sources, bad = SOURCES[command], []
    for param in COMMANDS[command].params:
        if param.required or param.name == "help":
            continue
        flag = max(param.opts, key=len) if param.opts else param.name
        name = RENAMED.get((command, param.name), param.name)
        if (command, param.name) in CLI_ONLY:
            continue
        found = False
        for source in sources:
            found, has_default, default, tp = _setting(source, name)
            if found:
                break
        if not found:
            bad.append(f"langloc {command} {flag}: no setting {name!r} in {_where(sources, name)}; name the setting "
                       "(RENAMED) or say why the command has its own default (CLI_ONLY)")
        elif not has_default:
            bad.append(f"langloc {command} {flag}: defaults to {param.default!r}, {_where([source], name)} has no default")
        else:
            given = param.default
            if tp is not None:  # as the command hands it to the config: comma-separated text -> tuple, ...
                given = _coerce(tp, list(given) if isinstance(given, (list, tuple)) else given)
            if given != default or type(given) is not type(default):
                bad.append(f"langloc {command} {flag}: the option defaults to {param.default!r}, "
                           f"{_where([source], name)} to {default!r}")
    return bad


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_every_option_defaults_to_its_setting(command):
    assert _differences(command) == []


def test_every_command_is_checked():
    assert set(STUDIES) <= set(COMMANDS)
    assert set(COMMANDS) == set(SOURCES) | NO_SOURCE, "add the new command to SOURCES (or NO_SOURCE)"
    # the tables name options that exist
    for command, param in [*RENAMED, *CLI_ONLY]:
        assert param in {p.name for p in COMMANDS[command].params}, (command, param)


def test_the_check_fails_on_a_changed_default(monkeypatch):
    """A default that differs is named, with the command and option (here: a field changed)."""
    from langloc.studies import train

    monkeypatch.setattr(train.Config.__dataclass_fields__["resume"], "default", False)
    assert _differences("train") == ["langloc train --resume: the option defaults to True, "
                                     "langloc.studies.train.Config.resume to False"]
    monkeypatch.setattr(DemoConfig.__dataclass_fields__["languages"], "default", ("en", "fr"))
    assert [d.split(":")[0] for d in _differences("demo")] == ["langloc demo --languages"]
    # a build step's config and an identification method's settings class, the same
    monkeypatch.setattr(CollectConfig.__dataclass_fields__["tokens"], "default", 5)
    assert [d.split(":")[0] for d in _differences("collect")] == ["langloc collect --tokens"]
    monkeypatch.setattr(METHODS["thresholding"].Settings.__dataclass_fields__["rate"], "default", 0.5)
    assert [d.split(":")[0] for d in _differences("identify")] == ["langloc identify --rate"]


def test_the_core_functions_take_the_configs_defaults():
    """compute_importance's defaults are ImportanceConfig's (read from it, not copied); stats.collect
    takes its CollectConfig."""
    import inspect

    from langloc.stats import collect

    params = inspect.signature(compute_importance).parameters
    for name in ("tokens", "window", "batch_size", "precision", "resume", "checkpoint_every"):
        assert params[name].default == getattr(ImportanceConfig, name), name
    assert list(inspect.signature(collect).parameters) == ["lm", "corpus", "config", "progress", "on_batch"]


def test_the_steering_grid_defaults_are_gridspecs():
    """The study's default search grid is GridSpec's, the command line's is the study's."""
    assert steer._spec(steer.Config()) == GridSpec()
    options = {p.name: p.default for p in COMMANDS["steer"].params}
    spec = GridSpec()
    assert steer._rules(options["rules"]) == spec.rules
    assert tuple(options["modes"].split(",")) == spec.modes
    assert tuple(options["positions"].split(",")) == spec.positions
    assert tuple(options["residual_layers"].split(",")) == spec.residual_layers
    assert tuple(float(a) for a in options["alphas"].split(",")) == spec.alphas
