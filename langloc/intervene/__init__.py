from langloc.intervene.hooks import deactivate, set_neurons
from langloc.intervene.intervention import POSITIONS, RULES, Edit, Intervention, ResidualEdit

__all__ = ["Edit", "Intervention", "POSITIONS", "RULES", "ResidualEdit", "deactivate", "set_neurons"]
