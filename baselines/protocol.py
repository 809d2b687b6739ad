"""The `Solver` protocol every way of solving an instance follows, its errors, and the
integer boundary shared by the solvers that need integer data (OR-Tools, PyVRP).

A solver takes an :class:`~nco.envs.Instance` in its own units and returns a checked
:class:`~nco.envs.Solution` (built with :meth:`Solution.from_routes`, so the cost is in
instance units and the independent checker's verdict travels with it). Solvers never fall
back silently: an unsupported problem, a missing package or a failed search raise the errors
below.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from nco.envs import Instance, Solution
from nco.envs.instance import FEAS_TOL

__all__ = [
    "ORTOOLS_SCALE",
    "TIME_TOLERANCE_S",
    "TIME_TOLERANCE_FRACTION",
    "IntegerData",
    "Solver",
    "SolverError",
    "SolverFailedError",
    "SolverUnavailableError",
    "UnsupportedProblemError",
    "fleet_bound",
    "integer_data",
    "require",
    "time_tolerance",
]


# ---------------------------------------------------------------------------------- errors
class SolverError(Exception):
    """Base class of the errors raised by solvers."""


class UnsupportedProblemError(SolverError, ValueError):
    """The solver does not handle this problem (e.g. HGS-CVRP and time windows)."""

    def __init__(self, solver: str, problem: str, supported: tuple[str, ...]) -> None:
        self.solver = solver
        self.problem = problem
        super().__init__(
            f"solver {solver!r} does not support problem {problem!r}; it supports {', '.join(supported)}"
        )


class SolverUnavailableError(SolverError, ImportError):
    """An optional package the solver needs is not installed; names the pip command."""

    def __init__(self, solver: str, module: str, pip_name: str) -> None:
        self.solver = solver
        self.install = f"pip install {pip_name}"
        super().__init__(
            f"solver {solver!r} needs the package {pip_name!r} (module {module!r}), which is not "
            f"installed; install it with: {self.install}  (or: pip install 'nco[solvers]')"
        )


class SolverFailedError(SolverError, RuntimeError):
    """The solver ran but returned no usable solution."""

    def __init__(self, solver: str, message: str) -> None:
        self.solver = solver
        super().__init__(f"solver {solver!r} failed: {message}")


def require(solver: str, module: str, pip_name: str) -> ModuleType:
    """Import an optional module or raise :class:`SolverUnavailableError` with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SolverUnavailableError(solver, module, pip_name) from err


# ---------------------------------------------------------------------------------- protocol
@runtime_checkable
class Solver(Protocol):
    """Anything that solves an instance within a time limit.

    Attributes
    ----------
    name : short registry name, also written as ``Solution.solver``.
    """

    name: str

    def supports(self, problem: str) -> bool:
        """Whether the solver handles the problem (``"tsp"``, ``"cvrp"``, ``"cvrptw"``)."""
        ...

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
    ) -> Solution:
        """Solve ``instance`` within ``time_limit`` seconds of wall clock (plus
        :func:`time_tolerance`), on one thread.

        ``initial_routes`` (node ids as in :class:`~nco.envs.Solution`) warm-start the search
        where the solver supports it. Returns a checked solution whose ``runtime`` is the wall
        time of the call.
        """
        ...


#: Every solver with ``time_limit=T`` returns within ``T + time_tolerance(T)``, that is
#: ``T + max(TIME_TOLERANCE_S, TIME_TOLERANCE_FRACTION * T)`` of wall time: the slack covers the
#: work that cannot be interrupted (building the model, checking and costing the answer, one
#: search iteration or a few decoding steps).
TIME_TOLERANCE_S = 0.05
TIME_TOLERANCE_FRACTION = 0.02


def time_tolerance(time_limit: float) -> float:
    """Seconds a solve with ``time_limit`` may run past it (see :data:`TIME_TOLERANCE_S`)."""
    return max(TIME_TOLERANCE_S, TIME_TOLERANCE_FRACTION * float(time_limit))


def check_supported(solver: str, problem: str, supported: tuple[str, ...]) -> None:
    """Raise :class:`UnsupportedProblemError` unless ``problem`` is in ``supported``."""
    if problem not in supported:
        raise UnsupportedProblemError(solver, problem, supported)


def check_time_limit(solver: str, time_limit: float) -> None:
    """Metaheuristics run until stopped, so a positive finite limit is required."""
    if not (isinstance(time_limit, int | float) and math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(
            f"solver {solver!r}: time_limit must be a positive number of seconds, got {time_limit!r}"
        )


# ---------------------------------------------------------------------------------- integers
#: Integer resolution at the OR-Tools/PyVRP boundary. Both solvers need integer arc costs and
#: times. Instances whose data are already integers (TSPLIB/CVRPLib EUC_2D) or tenths (Solomon,
#: truncated to one decimal) are converted EXACTLY with the factor 1 or 10. Anything else
#: (generated instances in the unit square, exact Euclidean) is scaled so that the LARGEST
#: distance becomes ``ORTOOLS_SCALE`` integer units: 1e6 keeps the relative rounding error per
#: arc below 1e-6 (far under any gap we report) while a route of 1000 arcs stays around 1e9,
#: well inside int64 and OR-Tools' cumul bounds.
ORTOOLS_SCALE = 1_000_000

#: Factors tried, in order, for an exact integer conversion.
_EXACT_FACTORS = (1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class IntegerData:
    """Integer view of an instance for solvers that need integers.

    Attributes
    ----------
    scale : factor applied to distances and times (integer = value * scale).
    exact : True when every distance/time is an integer after scaling (no rounding at all).
    distance : [N, N] int64 arc costs, ``round(d * scale)`` (objective only).
    travel : [N, N] int64 travel times for time constraints, rounded UP when not exact.
    service : [N] int64 service times (0 at the depot, as in the checker), rounded UP.
    tw : [N, 2] int64 windows: start rounded UP, end rounded DOWN (plus half the checker's
        tolerance) when not exact, so every integer-feasible schedule is float-feasible.
    demand : [N] int64 demands, rounded UP when not integral.
    capacity : int capacity, rounded DOWN (plus half the checker's tolerance).
    """

    scale: float
    exact: bool
    distance: np.ndarray
    travel: np.ndarray
    service: np.ndarray | None
    tw: np.ndarray | None
    demand: np.ndarray | None
    capacity: int | None


def _is_integral(x: np.ndarray, atol: float = 1e-6) -> bool:
    return bool(np.all(np.abs(x - np.rint(x)) <= atol))


def integer_data(instance: Instance) -> IntegerData:
    """Convert an instance to integers under the rule documented at :data:`ORTOOLS_SCALE`.

    Rounding never lets a solver accept what the float checker rejects: when the conversion is
    not exact, travel and service times and window starts round up, window ends and the
    capacity round down (each allowed half the checker's relative tolerance), so integer times
    are upper bounds of the true times along any route.
    """
    d = instance.distance
    parts = [d]
    if instance.time_windows is not None:
        parts.append(instance.time_windows.ravel())
        if instance.service_time is not None:
            parts.append(instance.service_time)
    values = np.concatenate([np.ravel(p) for p in parts])
    dmax = float(d.max()) or 1.0
    scale, exact = ORTOOLS_SCALE / dmax, False
    for f in _EXACT_FACTORS:
        if float(np.abs(values).max()) * f <= 1e12 and _is_integral(values * f):
            scale, exact = f, True
            break

    def up(x: np.ndarray) -> np.ndarray:
        return np.rint(x * scale) if exact else np.ceil(x * scale - 1e-9)

    dist_i = np.rint(d * scale).astype(np.int64)
    travel = up(d).astype(np.int64)
    service = tw = None
    if instance.time_windows is not None:
        tws = instance.time_windows
        st = instance.service_time if instance.service_time is not None else np.zeros(len(tws))
        st = st.copy()
        st[0] = 0.0  # the checker leaves the depot at its window start without service
        service = up(st).astype(np.int64)
        if exact:
            tw = np.rint(tws * scale).astype(np.int64)
        else:
            tol = 0.5 * FEAS_TOL * max(1.0, abs(float(tws[0, 1])))
            tw = np.stack(
                [np.ceil(tws[:, 0] * scale - 1e-9), np.floor((tws[:, 1] + tol) * scale)], 1
            ).astype(np.int64)
    demand = capacity = None
    if instance.demand is not None:
        assert instance.capacity is not None
        dem, cap = instance.demand, float(instance.capacity)
        if _is_integral(dem, 1e-9) and float(cap).is_integer():
            demand, capacity = np.rint(dem).astype(np.int64), int(cap)
        else:
            f = 1e6 / cap
            demand = np.ceil(dem * f - 1e-9).astype(np.int64)
            capacity = int(math.floor(cap * (1.0 + 0.5 * FEAS_TOL) * f))
    return IntegerData(scale, exact, dist_i, travel, service, tw, demand, capacity)


def fleet_bound(instance: Instance, extra: int = 0) -> int:
    """A safe number of vehicles to offer a solver.

    TSP: 1. CVRP: ``min(n, ceil(2 * total_demand / capacity) + 1)``: first-fit bin packing never
    leaves two bins that fit together, so a feasible solution with that many routes exists, and
    under the triangle inequality an optimal one does too (merging two routes whose loads fit
    in one vehicle never adds distance). CVRPTW: ``n`` (time windows break the merge argument).
    The instance's own ``num_vehicles`` caps the result; ``extra`` (e.g. the number of initial
    routes) raises it so a warm start always fits.
    """
    if not instance.has_depot:
        return 1
    n = instance.num_customers
    k = n
    if instance.time_windows is None:
        assert instance.demand is not None and instance.capacity is not None
        k = min(n, math.ceil(2.0 * float(instance.demand.sum()) / float(instance.capacity)) + 1)
    if instance.num_vehicles is not None:
        k = min(k, int(instance.num_vehicles))
    return max(k, extra, 1)
