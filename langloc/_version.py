"""The version of langloc, in a module of its own: lower modules import it from here, never
from the top-level package (which imports them: that would be an import cycle)."""

__version__ = "0.1.0"
