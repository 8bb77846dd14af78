from langloc.report.plots import plot_ablation, plot_neurons_per_layer, plot_overlap

__all__ = ["plot_ablation", "plot_neurons_per_layer", "plot_overlap"]
