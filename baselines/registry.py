"""Solvers by name: the built-in classical ones, plus a hook for solvers registered later
(the user-facing package registers ``"neural"`` and ``"hybrid"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nco.baselines.protocol import Solver

__all__ = ["available_solvers", "get_solver", "register_solver"]

SolverFactory = Callable[..., Solver]


def _ortools(**options: Any) -> Solver:
    from nco.baselines.ortools_solver import ORToolsSolver

    return ORToolsSolver(**options)


def _hgs(**options: Any) -> Solver:
    from nco.baselines.hgs import HGSSolver

    return HGSSolver(**options)


def _pyvrp(**options: Any) -> Solver:
    from nco.baselines.pyvrp_solver import PyVRPSolver

    return PyVRPSolver(**options)


_FACTORIES: dict[str, SolverFactory] = {"ortools": _ortools, "hgs": _hgs, "pyvrp": _pyvrp}


def register_solver(name: str, factory: SolverFactory, *, replace: bool = False) -> None:
    """Register ``factory(**options) -> Solver`` under ``name``.

    Raises ``ValueError`` if the name is taken and ``replace`` is False, so two packages cannot
    silently shadow each other.
    """
    if not name or not name.replace("-", "_").isidentifier():
        raise ValueError(f"solver name must be a simple identifier, got {name!r}")
    if name in _FACTORIES and not replace:
        raise ValueError(
            f"a solver named {name!r} is already registered (pass replace=True to override)"
        )
    _FACTORIES[name] = factory


def available_solvers() -> list[str]:
    """Registered solver names (whether their optional packages are installed or not)."""
    return list(_FACTORIES)


def get_solver(name: str, **options: Any) -> Solver:
    """Build the solver registered as ``name`` with its options.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered ones).
    SolverUnavailableError
        When the solver's optional package is missing (the message has the pip command).
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown solver {name!r}; expected one of {', '.join(_FACTORIES)}"
        ) from None
    return factory(**options)
