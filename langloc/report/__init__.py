"""The HTML report: reads the manifests and results that steps and studies wrote and makes one
self-contained page (:mod:`langloc.report.sections`). It sits on top: only the CLI and the demo
import it, and it runs no study. The figures it redraws are :mod:`langloc.plotting`'s."""
