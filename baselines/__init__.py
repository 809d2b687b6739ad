"""Classical solvers (OR-Tools, HGS-CVRP, PyVRP) behind one :class:`Solver` protocol.

Optional packages (``hygese``, ``pyvrp``) are imported only when their solver is built, and a
missing one raises :class:`SolverUnavailableError` naming the pip command.
"""

from nco.baselines.protocol import (
    ORTOOLS_SCALE,
    Solver,
    SolverError,
    SolverFailedError,
    SolverUnavailableError,
    UnsupportedProblemError,
    time_tolerance,
)
from nco.baselines.registry import available_solvers, get_solver, register_solver

__all__ = [
    "ORTOOLS_SCALE",
    "Solver",
    "SolverError",
    "SolverFailedError",
    "SolverUnavailableError",
    "UnsupportedProblemError",
    "available_solvers",
    "get_solver",
    "register_solver",
    "time_tolerance",
]
