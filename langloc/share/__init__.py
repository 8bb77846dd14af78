"""Neuron sharing across languages (Wang et al. 2024, "Sharing Matters"): categories on
parallel inputs, attribution by category, and causal tests (deactivate / boost)."""

from langloc.share.attribution import (
    CategoryAttribution, ReferenceAggregation, TopContribution, column_norms, gold_directions, neuron_scores,
)
from langloc.share.capture import Capture, capture
from langloc.share.categories import (
    CATEGORIES, category_counts, category_shares, check_threshold, classify, modal_neurons, stability,
)
from langloc.share.causal import causal_sets, causal_study, conditions
from langloc.share.analysis import TaskSharing, analyse_task, share_study

__all__ = ["CategoryAttribution", "ReferenceAggregation", "TopContribution", "column_norms", "gold_directions", "neuron_scores", "Capture", "capture",
           "CATEGORIES", "category_counts", "category_shares", "check_threshold", "classify", "modal_neurons",
           "stability", "causal_sets", "causal_study", "conditions", "TaskSharing", "analyse_task", "share_study"]
