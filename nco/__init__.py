"""nco: neural combinatorial optimization for vehicle routing.

The user-facing package: load instances, solve, train, benchmark and plot. The building blocks
live in the subpackages :mod:`nco.envs` (problems), :mod:`nco.policies` (networks),
:mod:`nco.baselines` (classical solvers) and :mod:`nco.kernels` (numba kernels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: The solver of ``nco.solve``, ``nco.solve_batch`` and ``nco solve`` when none is named: the
#: network's plan as PyVRP's warm start, in one time budget (the product's main job).
DEFAULT_SOLVER = "hybrid"
#: The time limit when none is given, for every solver (see :func:`nco.api.default_time_limit`):
#: this many seconds per 100 nodes, at least 1 s.
SECONDS_PER_100_NODES = 1.0

# Re-exports resolve on first use so that `nco --help` and `import nco` stay fast (torch and
# torchrl load only when a routing object is actually needed).
_EXPORTS: dict[str, str] = {
    "Instance": "nco.envs",
    "InstanceError": "nco.envs",
    "Solution": "nco.envs",
    "Violation": "nco.envs",
    "available": "nco.envs",
    "get_problem": "nco.envs",
    "load": "nco.envs",
    "make": "nco.envs",
    "read_solution": "nco.envs",
    "HybridSolver": "nco.solvers",
    "ModelCard": "nco.api",
    "NeuralSolver": "nco.solvers",
    "load_model": "nco.checkpoints",
    "models": "nco.api",
    "solve": "nco.api",
    "solve_batch": "nco.api",
}

if TYPE_CHECKING:
    from nco.api import ModelCard, load_model, models, solve, solve_batch
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
    from nco.solvers import HybridSolver, NeuralSolver


def __getattr__(name: str) -> Any:
    """Resolve a re-export on first use (see ``_EXPORTS``)."""
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nco' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (each once, resolved or not), the module's dunders and the
    subpackages loaded so far; not the helpers this file imports for itself."""
    loaded = {k for k, v in globals().items() if getattr(v, "__name__", None) == f"{__name__}.{k}"}
    dunders = {k for k in globals() if k.startswith("__") and k.endswith("__")}
    return sorted({*__all__, *dunders, *loaded})


__all__ = [
    "DEFAULT_SOLVER",
    "SECONDS_PER_100_NODES",
    "HybridSolver",
    "Instance",
    "InstanceError",
    "ModelCard",
    "NeuralSolver",
    "Solution",
    "Violation",
    "__version__",
    "available",
    "get_problem",
    "load",
    "load_model",
    "make",
    "models",
    "read_solution",
    "solve",
    "solve_batch",
]
