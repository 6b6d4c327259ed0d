from .figures import plot_curves, plot_decision_boundary, plot_jacobian_norms, plot_point_sets

__all__ = ["plot_curves", "plot_decision_boundary", "plot_jacobian_norms", "plot_point_sets"]
