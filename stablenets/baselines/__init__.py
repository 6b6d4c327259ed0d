from .tikhonov import grid_search, lipschitz_of_tau, reconstruct, reconstruction_matrix, tau_for_lipschitz

__all__ = ["grid_search", "lipschitz_of_tau", "reconstruct", "reconstruction_matrix", "tau_for_lipschitz"]
