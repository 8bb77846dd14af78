from langloc.models.architectures import ARCHITECTURES, NeuronSite, site_for
from langloc.models.loading import ALIASES, LoadedModel, load_model, resolve_dtype

__all__ = ["ARCHITECTURES", "NeuronSite", "site_for", "ALIASES", "LoadedModel", "load_model", "resolve_dtype"]
