"""Figures: solution routes, gap against time of a benchmark, training curves.

Importing this package is cheap: each function imports matplotlib when it is called.
"""

from nco.plotting.gap_vs_time import plot_gap_vs_time
from nco.plotting.routes import plot_solution, plot_solutions_side_by_side, save_route_plot
from nco.plotting.training import plot_training, read_metrics

__all__ = [
    "plot_gap_vs_time",
    "plot_solution",
    "plot_solutions_side_by_side",
    "plot_training",
    "read_metrics",
    "save_route_plot",
]
