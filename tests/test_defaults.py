"""Each default is stated once: every option of a command defaults to the default of the setting
it sets, read from where that setting is defined (a study's Config, the demo's DemoConfig, or
the library function a step command calls). A difference fails, naming the command and option."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import typer.main

from langloc import cli
from langloc.demo import DemoConfig
from langloc.regions.importance import compute_importance
from langloc.regions.study import regions_step
from langloc.steer.evaluation import GridSpec
from langloc.studies import STUDIES, steer
from langloc.studies.base import _coerce
from langloc.workflows import collect_run, identify_run

# Where each command's settings are defined.
SOURCES = {**{name: study.Config for name, study in STUDIES.items()}, "demo": DemoConfig,
           "collect": collect_run, "identify": identify_run, "importance": compute_importance,
           "regions": regions_step}
# Commands whose options are no config's or library function's settings with defaults.
NO_SOURCE = {"export-lape", "import-lape", "export", "import", "report", "planted"}
# Options named otherwise than their setting.
RENAMED = {("identify", "units"): "n_units", ("identify", "output"): "out", ("region-ablate", "regions_"): "regions",
           ("demo", "out_dir"): "out"}
# Options with a default that the source has no default for, and why.
CLI_ONLY = {
    ("collect", "model"): "langloc.models.loading.DEFAULT_MODEL; collect_run takes the model's name",
    ("collect", "lid_filter"): "the switch (collect_run's lid_filter is the filter, built with --lid-threshold)",
    ("collect", "lid_threshold"): "the filter's threshold, given to collect_run as lid_filter",
    ("importance", "model"): "langloc.models.loading.DEFAULT_MODEL; compute_importance takes the model loaded",
    ("importance", "corpus"): "compute_importance takes the corpus loaded",
    ("importance", "seed"): "the corpus's document order; compute_importance takes the corpus loaded",
    ("importance", "dtype"): "the model's; compute_importance takes the model loaded",
    ("importance", "device"): "the model's",
    ("importance", "neuron_site"): "the model's",
    ("importance", "lid_filter"): "the corpus's",
    ("importance", "lid_threshold"): "the corpus's",
    ("regions", "model"): "regions_step takes the model loaded",
    ("regions", "dtype"): "the model's",
    ("regions", "device"): "the model's",
    ("spread", "out_path"): "where the study writes (run's out)",
    ("perturb", "out"): "where the study writes (run's out)",
    ("validate", "out_dir"): "where the study writes (run's out)",
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


def _where(source, name: str) -> str:
    return f"{source.__module__}.{source.__qualname__}" + ("." if dataclasses.is_dataclass(source) else "(") + name \
        + ("" if dataclasses.is_dataclass(source) else "=)")


def _differences(command: str) -> list[str]:
    source, bad = SOURCES[command], []
    for param in COMMANDS[command].params:
        if param.required or param.name == "help":
            continue
        flag = max(param.opts, key=len) if param.opts else param.name
        name = RENAMED.get((command, param.name), param.name)
        if (command, param.name) in CLI_ONLY:
            continue
        found, has_default, default, tp = _setting(source, name)
        if not found:
            bad.append(f"langloc {command} {flag}: no setting {name!r} in {_where(source, name)}; name the setting "
                       "(RENAMED) or say why the command has its own default (CLI_ONLY)")
        elif not has_default:
            bad.append(f"langloc {command} {flag}: defaults to {param.default!r}, {_where(source, name)} has no default")
        else:
            given = param.default
            if tp is not None:  # as the command hands it to the config: comma-separated text -> tuple, ...
                given = _coerce(tp, list(given) if isinstance(given, (list, tuple)) else given)
            if given != default or type(given) is not type(default):
                bad.append(f"langloc {command} {flag}: the option defaults to {param.default!r}, "
                           f"{_where(source, name)} to {default!r}")
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
