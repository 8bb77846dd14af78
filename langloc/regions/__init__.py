"""Linguistic regions: parameter importance, core/monolingual regions, their ablation."""

from langloc.regions.params import Region, check_region, layer_of, region_parameters, region_size, zeroed

__all__ = ["Region", "check_region", "layer_of", "region_parameters", "region_size", "zeroed"]
