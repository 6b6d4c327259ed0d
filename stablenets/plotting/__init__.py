from .figures import save_figure, plot_curves, plot_decision_boundary, plot_jacobian_norms, plot_point_sets

__all__ = ["save_figure", "plot_curves", "plot_decision_boundary", "plot_jacobian_norms", "plot_point_sets"]
