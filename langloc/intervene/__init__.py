from langloc.intervene.hooks import deactivate, set_neurons
from langloc.intervene.intervention import POSITIONS, RULES, Edit, Intervention

__all__ = ["Edit", "Intervention", "POSITIONS", "RULES", "deactivate", "set_neurons"]
