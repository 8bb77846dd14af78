from langloc.report.plots import plot_ablation, plot_comparison, plot_neurons_per_layer, plot_overlap, plot_steering

__all__ = ["plot_ablation", "plot_comparison", "plot_neurons_per_layer", "plot_overlap", "plot_steering"]
