from langloc.intervene.hooks import deactivate, set_neurons

__all__ = ["deactivate", "set_neurons"]
