"""Moved: the region folder's readers are :mod:`langloc.regions.folder`, the ``regions`` build
step :func:`langloc.workflows.regions_run`. This name stays only for
:mod:`langloc.studies.train` (another branch changes its import); delete it after the merge."""

from langloc.regions.folder import folder_corpus, folder_info, folder_model  # noqa: F401
