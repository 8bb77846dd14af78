"""Every experiment is a study: one module per study in this package, all of the same shape.

=================  ======================================  ==================================
command            module                                  main output (manifest kind)
=================  ======================================  ==================================
``ablate``         :mod:`langloc.studies.ablate`            ``ablation.csv`` (langloc.ablation)
``steer``          :mod:`langloc.studies.steer`             ``steer.json`` (langloc.steer)
``compare``        :mod:`langloc.studies.compare`           ``compare.csv`` (langloc.compare)
``region-ablate``  :mod:`langloc.studies.region_ablate`     ``region_ablation.csv``
``perturb``        :mod:`langloc.studies.perturb`           ``perturb.csv`` (langloc.perturb)
``train``          :mod:`langloc.studies.train`             ``forgetting.csv`` (langloc.forgetting)
``transfer``       :mod:`langloc.studies.transfer`          the CSV given (langloc.transfer)
``share``          :mod:`langloc.studies.share`             ``share.json`` (langloc.share)
``harness``        :mod:`langloc.studies.harness`           ``results.json`` (langloc.harness)
``validate``       :mod:`langloc.studies.validate`          ``validation.csv`` (langloc.validation)
``spread``         :mod:`langloc.studies.spread`            the CSV given (langloc.spread)
=================  ======================================  ==================================

Each module has ``Config`` (a dataclass whose fields are the settings; it round-trips through
JSON), ``KIND`` and ``run(lm, config, out) -> Manifest`` (see :mod:`langloc.studies.base`)::

    from langloc.studies import ablate
    manifest = ablate.run(None, ablate.Config(run="runs/gemma", eval_tokens=4096), "runs/gemma")
    rows = manifest.result

The CLI command of each study parses its options, builds the config, runs it and prints.
docs/studies.md says how to add one.
"""

from __future__ import annotations

from types import ModuleType

from langloc.studies import ablate, compare, harness, perturb, region_ablate, share, steer, train, transfer
from langloc.studies import spread, validate
from langloc.studies.base import Manifest, StudyConfig

# CLI name -> study module.
STUDIES: dict[str, ModuleType] = {
    "ablate": ablate,
    "steer": steer,
    "compare": compare,
    "region-ablate": region_ablate,
    "perturb": perturb,
    "train": train,
    "transfer": transfer,
    "share": share,
    "harness": harness,
    "validate": validate,
    "spread": spread,
}

__all__ = ["STUDIES", "Manifest", "StudyConfig"]
