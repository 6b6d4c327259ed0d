from .figures import plot_curves, plot_decision_boundary, plot_jacobian_norms, plot_point_sets, save_figure

__all__ = ["save_figure", "plot_curves", "plot_decision_boundary", "plot_jacobian_norms", "plot_point_sets"]
