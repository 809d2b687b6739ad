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
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from nco.envs import Instance, Solution, get_problem
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
    "fleet_per_depot",
    "initial_plan",
    "integer_data",
    "require",
    "time_tolerance",
    "variant_attributes",
]


# ---------------------------------------------------------------------------------- errors
class SolverError(Exception):
    """Base class of the errors raised by solvers."""


class UnsupportedProblemError(SolverError, ValueError):
    """The solver does not handle this problem (e.g. HGS-CVRP and time windows)."""

    def __init__(
        self, solver: str, problem: str, supported: tuple[str, ...], reason: str | None = None
    ) -> None:
        self.solver = solver
        self.problem = problem
        self.reason = reason
        message = f"solver {solver!r} does not support problem {problem!r}"
        super().__init__(
            f"{message}: {reason}" if reason else f"{message}; it supports {', '.join(supported)}"
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
        """Whether the solver handles the problem (``"tsp"``, ``"cvrp"``, ``"cvrptw"``,
        ``"mtvrp"`` for the variants). A solver that supports a problem may still refuse an
        instance whose attributes it cannot model, with an :class:`UnsupportedProblemError`
        naming them."""
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

        ``time_limit`` is a float for every solver: positive, and ``math.inf`` for no limit
        where the solver stops on its own (the neural construction). The metaheuristics run
        until stopped and raise ValueError unless it is finite (:func:`check_time_limit`).
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


def variant_attributes(instance: Instance) -> list[str]:
    """The variant attributes an instance has, each named with its VRPLIB field, in the
    order of the variant grammar (used by solvers to say what they cannot model)."""
    out = []
    if instance.num_depots > 1:
        out.append(f"several depots ({instance.num_depots}, DEPOT_SECTION)")
    if instance.vehicle_depots is not None:
        out.append("vehicles per depot (VEHICLES_DEPOT_SECTION)")
    if instance.open_routes:
        out.append("open routes (an O TYPE, e.g. OVRP)")
    if instance.backhaul is not None:
        kind = (
            "mixed backhauls (an MB TYPE, e.g. VRPMB)" if instance.mixed_backhaul else "backhauls"
        )
        out.append(f"{kind} (BACKHAUL_SECTION)")
    if instance.max_distance is not None:
        out.append("a distance limit (VEHICLES_MAX_DISTANCE)")
    if instance.max_duration is not None:
        out.append("a duration limit (VEHICLES_MAX_DURATION)")
    if instance.time_windows is not None:
        out.append("time windows (TIME_WINDOW_SECTION)")
    return out


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
    demand : [N] int64 demands (linehauls), rounded UP when not integral.
    capacity : int capacity, rounded DOWN (plus half the checker's tolerance).
    backhaul : [N] int64 backhaul (pickup) amounts in the demands' units, rounded UP, or None.
    max_distance : int route length limit, rounded DOWN (plus half the checker's tolerance),
        to be compared with sums of ``travel`` (rounded up), or None.
    max_duration : int route duration limit, rounded like ``max_distance``, or None.

    Service times (0 at every depot) are given with time windows or a duration limit.
    """

    scale: float
    exact: bool
    distance: np.ndarray
    travel: np.ndarray
    service: np.ndarray | None
    tw: np.ndarray | None
    demand: np.ndarray | None
    capacity: int | None
    backhaul: np.ndarray | None = None
    max_distance: int | None = None
    max_duration: int | None = None


def _is_integral(x: np.ndarray, atol: float = 1e-6) -> bool:
    return bool(np.all(np.abs(x - np.rint(x)) <= atol))


def integer_data(instance: Instance) -> IntegerData:
    """Convert an instance to integers under the rule documented at :data:`ORTOOLS_SCALE`.

    Rounding never lets a solver accept what the float checker rejects: when the conversion is
    not exact, travel and service times and window starts round up, window ends, route limits
    and the capacity round down (each allowed half the checker's relative tolerance), so
    integer times and lengths are upper bounds of the true ones along any route, and a plan
    within every integer bound is within the float ones. Linehaul and backhaul amounts share
    one factor (rounded up) against the one capacity.
    """
    d = instance.distance
    nd = instance.num_depots
    timed = instance.time_windows is not None or instance.max_duration is not None
    parts = [d]
    if instance.time_windows is not None:
        parts.append(instance.time_windows.ravel())
    if timed and instance.service_time is not None:
        parts.append(instance.service_time)
    for lim in (instance.max_distance, instance.max_duration):
        if lim is not None:
            parts.append(np.array([lim]))
    values = np.concatenate([np.ravel(p) for p in parts])
    dmax = float(d.max()) or 1.0
    scale, exact = ORTOOLS_SCALE / dmax, False
    for f in _EXACT_FACTORS:
        if float(np.abs(values).max()) * f <= 1e12 and _is_integral(values * f):
            scale, exact = f, True
            break

    def up(x: np.ndarray) -> np.ndarray:
        return np.rint(x * scale) if exact else np.ceil(x * scale - 1e-9)

    def down(bound: float) -> int:
        if exact:
            return int(np.rint(bound * scale))
        return int(math.floor((bound + 0.5 * FEAS_TOL * max(1.0, abs(bound))) * scale))

    dist_i = np.rint(d * scale).astype(np.int64)
    travel = up(d).astype(np.int64)
    service = tw = None
    if timed:
        st = instance.service_time if instance.service_time is not None else np.zeros(len(d))
        st = st.copy()
        st[:nd] = 0.0  # the checker leaves a depot at its window start without service
        service = up(st).astype(np.int64)
    if instance.time_windows is not None:
        tws = instance.time_windows
        if exact:
            tw = np.rint(tws * scale).astype(np.int64)
        else:
            tol = 0.5 * FEAS_TOL * max(1.0, abs(float(tws[0, 1])))
            tw = np.stack(
                [np.ceil(tws[:, 0] * scale - 1e-9), np.floor((tws[:, 1] + tol) * scale)], 1
            ).astype(np.int64)
    demand = capacity = backhaul = None
    if instance.demand is not None:
        assert instance.capacity is not None
        dem, cap = instance.demand, float(instance.capacity)
        bh = instance.backhaul
        loads = dem if bh is None else np.concatenate([dem, bh])
        if _is_integral(loads, 1e-9) and float(cap).is_integer():
            demand, capacity = np.rint(dem).astype(np.int64), int(cap)
            backhaul = None if bh is None else np.rint(bh).astype(np.int64)
        else:
            f = 1e6 / cap
            demand = np.ceil(dem * f - 1e-9).astype(np.int64)
            # every backhaul keeps a positive amount (precedence rules tell them by it)
            backhaul = (
                None
                if bh is None
                else np.where(bh > 0, np.maximum(np.ceil(bh * f - 1e-9), 1), 0).astype(np.int64)
            )
            capacity = int(math.floor(cap * (1.0 + 0.5 * FEAS_TOL) * f))
    max_distance = None if instance.max_distance is None else down(instance.max_distance)
    max_duration = None if instance.max_duration is None else down(instance.max_duration)
    return IntegerData(
        scale,
        exact,
        dist_i,
        travel,
        service,
        tw,
        demand,
        capacity,
        backhaul,
        max_distance,
        max_duration,
    )


def fleet_bound(instance: Instance, extra: int = 0) -> int:
    """A safe number of vehicles to offer a solver.

    TSP: 1. CVRP: ``min(n, ceil(2 * total_demand / capacity) + 1)``: first-fit bin packing never
    leaves two bins that fit together, so a feasible solution with that many routes exists, and
    under the triangle inequality an optimal one does too (merging two routes whose loads fit
    in one vehicle never adds distance). CVRPTW and the variant family
    (:attr:`~nco.envs.Problem.has_variants`: two loads, route limits and open routes break the
    argument): ``n``. The instance's own ``num_vehicles`` caps
    the result; ``extra`` (e.g. the number of initial routes) raises it so a warm start always
    fits. Multi-depot instances: see :func:`fleet_per_depot`.
    """
    if not instance.has_depot:
        return 1
    n = instance.num_customers
    k = n
    if instance.time_windows is None and not get_problem(instance.problem).has_variants:
        assert instance.demand is not None and instance.capacity is not None
        k = min(n, math.ceil(2.0 * float(instance.demand.sum()) / float(instance.capacity)) + 1)
    if instance.num_vehicles is not None:
        k = min(k, int(instance.num_vehicles))
    return max(k, extra, 1)


def fleet_per_depot(instance: Instance, extra: Sequence[int] = ()) -> list[int]:
    """Vehicles to offer at each depot, ``[num_depots]``.

    The vehicles the file bases there (``vehicle_depots``) when stated, otherwise
    :func:`fleet_bound` at a single depot and one vehicle per customer at each of several
    depots. ``extra[d]`` (e.g. initial routes from depot d) raises depot d's count so a warm
    start always fits. A global ``num_vehicles`` shared by several depots without
    ``vehicle_depots`` cannot be split among them: ValueError.
    """
    nd = instance.num_depots
    more = list(extra) + [0] * (nd - len(extra))
    per = instance.vehicles_per_depot
    if per is not None:
        counts = [int(c) for c in per]
    elif nd == 1:
        counts = [fleet_bound(instance)]
    else:
        if instance.num_vehicles is not None:
            raise ValueError(
                f"{instance.name!r}: {instance.num_vehicles} vehicles (VEHICLES) shared by "
                f"{nd} depots without VEHICLES_DEPOT_SECTION cannot be split among the depots"
            )
        counts = [max(instance.num_customers, 1)] * nd
    return [max(c, int(e)) for c, e in zip(counts, more, strict=True)]


def initial_plan(
    solver: str,
    instance: Instance,
    initial_routes: list[list[int]] | None,
    initial_depots: Sequence[int] | None,
) -> tuple[list[list[int]] | None, list[int] | None]:
    """Non-empty initial routes (a warm start) and their depots (None for a single depot).

    A multi-depot warm start without depots is refused (a route's depot cannot be guessed),
    as are depots other than node 0 on a single-depot instance.
    """
    if not initial_routes:
        return None, None
    pairs = (
        list(zip(initial_routes, initial_depots, strict=True))
        if initial_depots is not None
        else None
    )
    if instance.num_depots > 1 and pairs is None:
        raise ValueError(
            f"{solver}: {instance.name!r} has {instance.num_depots} depots; initial_routes need "
            "their depots too (initial_depots=[the depot node of each route])"
        )
    if pairs is None:
        return [list(map(int, r)) for r in initial_routes if len(r)], None
    keep = [(list(map(int, r)), int(d)) for r, d in pairs if len(r)]
    routes, depots = [r for r, _ in keep], [d for _, d in keep]
    if instance.num_depots == 1:
        if any(d != 0 for d in depots):
            raise ValueError(
                f"{solver}: {instance.name!r} has one depot (node 0); got initial depots {sorted(set(depots))}"
            )
        return routes, None
    return routes, depots
