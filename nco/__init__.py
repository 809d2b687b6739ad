"""nco: neural combinatorial optimization for vehicle routing.

The user-facing package: load instances, solve, train, benchmark and plot. The building blocks
live in the subpackages :mod:`nco.envs` (problems), :mod:`nco.policies` (networks),
:mod:`nco.baselines` (classical solvers) and :mod:`nco.kernels` (numba kernels).
"""

__version__ = "0.1.0"

from nco.envs import (
    Instance,
    InstanceError,
    Solution,
    Violation,
    available,
    get_problem,
    load,
    make,
    read_solution,
)

__all__ = [
    "Instance",
    "InstanceError",
    "Solution",
    "Violation",
    "__version__",
    "available",
    "get_problem",
    "load",
    "make",
    "read_solution",
]
