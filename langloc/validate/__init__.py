"""``langloc validate``: are a run's language neurons real? (docs/validate.md)

=================  ===============================================================
module             holds
=================  ===============================================================
``shards``         per-shard statistics of the run's windows (resumable run folders)
``stability``      shard Jaccard and the stable core over bootstrap resamples of shards
``conditions``     exclusive / shared parts of a set, the activation-matched control
``domain``         the gsm-symbolic word problems as a second-domain folder corpus
``verdicts``       a language's row of validation.csv and its verdict line
``budget``         the budget curve: the set found on prefixes of the shards (``--budget-curve``)
``validation``     what the study computes (:func:`compute_validation`); it writes no output file
``plots``          validation.png, stability.png
=================  ===============================================================

The study's ``Config`` and ``run``, which writes every output file and the manifest, are
:mod:`langloc.studies.validate`; the planted ground
truth it is tested on is :mod:`langloc.planted`.
"""
