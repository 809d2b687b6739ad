"""PyVRP (iterated local search, PyVRP >= 0.14) for the TSP, CVRP, CVRPTW and the variants.

The `ProblemData` is built directly from integer matrices (see
:func:`~nco.baselines.protocol.integer_data` for the scaling rule and the safe rounding of
times and limits). Node ``i`` of the instance is PyVRP location ``i``; the depots are the
first ``num_depots`` locations (PyVRP depot ``d`` is node ``d``) and client ``c`` sits at
location ``num_depots + c``.

Variants (``problem == "mtvrp"``), mapped as PyVRP's own VRPLIB reader (``pyvrp.read``) builds
them where it reads the field:

* backhauls: one load dimension, linehauls as ``Client(delivery=...)`` and backhauls as
  ``pickup``. PyVRP's vehicle leaves with all of its route's deliveries and the load on board
  must fit everywhere, which is exactly the mixed rule (MB); with linehauls first (VRPB) it is
  each total fitting the capacity. PyVRP has no precedence constraint; its reader (TYPE
  VRPB) makes every arc backhaul -> linehaul prohibitively long, and so do we: a route serves
  a linehaul after a backhaul if and only if it uses such an arc. The reader also lengthens
  depot -> backhaul arcs (no routes of backhauls only); nco allows such routes (README,
  "Variant files"), so those arcs stay. So that PyVRP's own ``is_feasible()`` sees the
  precedence too, VRPB vehicles get a ``max_distance`` below the prohibitive length (the
  instance's limit, or a bound no legal route reaches).
* open routes: PyVRP 0.14 has no vehicle without a return; every arc INTO a depot gets
  distance and duration 0, so the return leg costs nothing, counts neither towards
  ``max_distance`` nor ``shift_duration``, and the vehicle's ``tw_late`` is left open (its
  ``start_late`` stays the depot's closing time: a vehicle leaves while the depot is open).
* distance limit: ``VehicleType(max_distance=...)`` over the distances rounded up.
* duration limit: ``VehicleType(shift_duration=...)`` (the reader's field for
  VEHICLES_MAX_DURATION; no overtime), durations = travel times, with service times.
* several depots: one ``Depot`` per depot and one ``VehicleType`` per depot with vehicles
  (``start_depot = end_depot``, ``num_available`` = the vehicles based there, or one per
  customer when the file does not say), the depot's window on the vehicle as the reader does.
* time windows and service times: as for the CVRPTW.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nco.baselines.protocol import (
    IntegerData,
    SolverFailedError,
    UnsupportedProblemError,
    check_supported,
    check_time_limit,
    fleet_per_depot,
    initial_plan,
    integer_data,
    require,
)
from nco.envs import Instance, Solution

__all__ = ["PyVRPSolver", "build_problem_data"]

_SUPPORTED = ("tsp", "cvrp", "cvrptw", "mtvrp")

#: Time kept for converting and checking PyVRP's answer after it stops: this share of the limit
#: plus this many seconds per node (20 ms at 1000 customers; on a loaded machine the last
#: iteration and the checker run several times slower).
_FINISH_RESERVE, _FINISH_PER_NODE = 0.01, 2e-5

#: Largest ratio (largest arc / capacity) left as is; see the load factor in :func:`_build`.
_LOAD_BALANCE = 1000

_BIG = int(np.iinfo(np.int64).max)


def _forbid_backhaul_to_linehaul(
    instance: Instance, data: IntegerData, distance: np.ndarray, max_distance: int | None
) -> tuple[np.ndarray, int | None, int]:
    """VRPB's precedence as PyVRP's reader states it (arcs backhaul -> linehaul made too long
    to use), plus a vehicle distance limit every such route exceeds. Returns the matrix, the
    limit and the prohibitive arc length (0 when nothing is forbidden)."""
    assert instance.backhaul is not None
    nd = instance.num_depots
    is_back = instance.backhaul > 0
    is_back[:nd] = False
    is_line = ~is_back
    is_line[:nd] = False  # every customer that is not a backhaul is a linehaul (the checker)
    if not is_back.any() or not is_line.any():
        return distance, max_distance, 0
    legal = (instance.num_customers + 1) * int(distance.max())  # no legal route is longer
    guard = max_distance if max_distance is not None else legal
    big = 2 * max(guard, legal) + 1
    distance = distance.copy()
    distance[np.ix_(is_back, is_line)] = big
    return distance, guard, big


def build_problem_data(
    pyvrp: Any, instance: Instance, vehicles: Sequence[int]
) -> tuple[Any, dict[str, Any]]:
    """PyVRP ``ProblemData`` for ``instance`` with ``vehicles[d]`` vehicles at depot ``d``
    (see the module docstring) and the integer conversion's metadata (``depot_of_type``: the
    depot of each vehicle type)."""
    data = integer_data(instance)
    n, nd = instance.num_nodes, instance.num_depots
    coords = instance.coords if instance.coords is not None else np.zeros((n, 2))
    locations = [pyvrp.Location(float(x), float(y)) for x, y in coords]
    # PyVRP balances distance against excess load with a penalty per load unit bounded by
    # PenaltyParams.max_penalty (1e5). With distances scaled to ~1e6 and demands of a few units
    # the bound is too small to reach feasibility, so loads and capacity are multiplied by one
    # integer factor (the constraint is unchanged) that brings the ratio largest arc /
    # capacity down to about _LOAD_BALANCE; CVRPLib/Solomon data (ratio ~10) are left as is.
    load_factor = 1
    if data.capacity is not None:
        load_factor = max(
            1, round(float(data.distance.max()) / (_LOAD_BALANCE * max(data.capacity, 1)))
        )
    limited = data.max_distance is not None or instance.backhaul is not None
    # A route limit is judged on the distances rounded up (`travel`, equal to the rounded
    # ones when the conversion is exact), so integer lengths bound the float ones.
    distance = (data.travel if limited else data.distance).copy()
    timed = data.tw is not None or data.max_duration is not None
    durations = data.travel.copy() if timed else np.zeros_like(distance)
    if instance.open_routes:
        distance[:, :nd] = 0
        durations[:, :nd] = 0
    max_distance, big = data.max_distance, 0
    if instance.backhaul is not None and not instance.mixed_backhaul:
        distance, max_distance, big = _forbid_backhaul_to_linehaul(
            instance, data, distance, max_distance
        )
    clients = []
    for i in range(nd, n):
        kw: dict[str, Any] = {}
        if data.demand is not None:
            kw["delivery"] = [int(data.demand[i]) * load_factor]
            if data.backhaul is not None:
                kw["pickup"] = [int(data.backhaul[i]) * load_factor]
        if data.service is not None:
            kw["service_duration"] = int(data.service[i])
        if data.tw is not None:
            kw.update(tw_early=int(data.tw[i, 0]), tw_late=int(data.tw[i, 1]))
        clients.append(pyvrp.Client(location=i, **kw))
    cap = [int(data.capacity) * load_factor] if data.capacity is not None else []
    depots, vehicle_types, depot_of_type = [], [], []
    for dep in range(nd):
        vkw: dict[str, Any] = {"capacity": cap, "start_depot": dep, "end_depot": dep}
        if data.tw is not None:
            open_, close = int(data.tw[dep, 0]), int(data.tw[dep, 1])
            if instance.open_routes:
                # leaves while the depot is open, need not be back before it closes
                depots.append(pyvrp.Depot(location=dep))
                vkw.update(tw_early=open_, tw_late=_BIG, start_late=close)
            else:
                depots.append(pyvrp.Depot(location=dep, tw_early=open_, tw_late=close))
                vkw.update(tw_early=open_, tw_late=close)
        else:
            depots.append(pyvrp.Depot(location=dep))
            vkw.update(tw_early=0, tw_late=_BIG)
        if max_distance is not None:
            vkw["max_distance"] = int(max_distance)
        if data.max_duration is not None:
            vkw["shift_duration"] = int(data.max_duration)
        if int(vehicles[dep]) > 0:
            vehicle_types.append(pyvrp.VehicleType(num_available=int(vehicles[dep]), **vkw))
            depot_of_type.append(dep)
    problem = pyvrp.ProblemData(locations, clients, depots, vehicle_types, [distance], [durations])
    return problem, {
        "scale": data.scale,
        "exact_integers": data.exact,
        "vehicles": int(sum(vehicles)),
        "load_factor": load_factor,
        "forbidden_arc_distance": big,
        "depot_of_type": depot_of_type,
    }


def _build(pyvrp: Any, instance: Instance, num_vehicles: int) -> tuple[Any, dict[str, Any]]:
    """:func:`build_problem_data` with ``num_vehicles`` vehicles at each depot (kept for
    callers of the former single-depot builder, e.g. tests/envs/test_io_fuzz.py)."""
    return build_problem_data(pyvrp, instance, [num_vehicles] * instance.num_depots)


def _to_routes(
    pyvrp: Any,
    problem: Any,
    instance: Instance,
    routes: list[list[int]],
    depots: list[int] | None,
    depot_of_type: list[int],
) -> Any:
    """Instance routes -> a PyVRP solution (client index = node - num_depots); the TSP tour
    starts at node 0; multi-depot routes go to their depot's vehicle type."""
    if not instance.has_depot:
        tour = [int(v) for r in routes for v in r]
        if 0 not in tour:
            raise ValueError(
                f"pyvrp: the initial TSP tour for {instance.name!r} does not visit node 0"
            )
        i = tour.index(0)
        return pyvrp.Solution(problem, [[v - 1 for v in tour[i + 1 :] + tour[:i]]])
    nd = instance.num_depots
    visits = [[int(v) - nd for v in r] for r in routes]
    if depots is None:
        return pyvrp.Solution(problem, visits)
    pv = []
    for r, d in zip(visits, depots, strict=True):
        if d not in depot_of_type:
            raise ValueError(
                f"pyvrp: initial route from node {d}, which is not a depot with vehicles"
            )
        pv.append(pyvrp.Route(problem, r, depot_of_type.index(d)))
    return pyvrp.Solution(problem, pv)


def _from_solution(instance: Instance, solution: Any) -> tuple[list[list[int]], list[int]]:
    nd = instance.num_depots if instance.has_depot else 1
    routes, depots = [], []
    for route in solution.routes():
        nodes = [act.idx + nd for act in route if act.is_client()]
        if nodes:
            routes.append(nodes)
            depots.append(int(route.start_depot()))
    if not instance.has_depot:
        routes, depots = [[0, *(routes[0] if routes else [])]], [0]
    return routes, depots


class _Deadline:
    """PyVRP stopping criterion on an absolute wall-clock deadline.

    ``pyvrp.stop.MaxRuntime`` starts its clock at its first call, after PyVRP has built its
    neighbourhoods and locally optimised its random start (about 0.25 s at 1000 customers), so
    that time would come on top of the limit; this one counts from the start of the solve.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, best_cost: float) -> bool:
        return time.perf_counter() >= self.deadline


class PyVRPSolver:
    """PyVRP's iterated local search, single-threaded, stopped at a wall-clock deadline
    that counts from the start of the call (set-up and PyVRP's initial local search included).

    Warm starts (``initial_routes``) never return a worse solution than the one given: if
    PyVRP's best is worse in instance units (or infeasible) while the initial routes are
    feasible, the initial routes are returned (``metadata["returned_initial"] = True``).
    Multi-depot instances need each initial route's depot (``initial_depots``).
    ``metadata["pyvrp_feasible"]`` is PyVRP's own verdict on the plan it returned.
    """

    name = "pyvrp"

    def __init__(self) -> None:
        require(self.name, "pyvrp", "pyvrp")

    def __repr__(self) -> str:
        return "PyVRPSolver()"

    def supports(self, problem: str) -> bool:
        """TSP, CVRP, CVRPTW and the variants (``"mtvrp"``: backhauls strict or mixed, open
        routes, distance and duration limits, several depots with their vehicles)."""
        return problem in _SUPPORTED

    def problem_data(
        self, instance: Instance, *, extra: Sequence[int] = ()
    ) -> tuple[Any, dict[str, Any]]:
        """The PyVRP ``ProblemData`` this solver builds for ``instance`` and its metadata
        (``extra[d]``: vehicles to add at depot d); e.g. to ask PyVRP's own ``is_feasible()``
        about a plan."""
        check_supported(self.name, instance.problem, _SUPPORTED)
        pyvrp = require(self.name, "pyvrp", "pyvrp")
        if not instance.has_depot:
            return build_problem_data(pyvrp, instance, [1])
        try:
            vehicles = fleet_per_depot(instance, extra)
        except ValueError as err:
            raise UnsupportedProblemError(
                self.name, instance.problem, _SUPPORTED, f"{err} (PyVRP's fleets are per depot)"
            ) from None
        return build_problem_data(pyvrp, instance, vehicles)

    def pyvrp_solution(
        self,
        problem: Any,
        meta: dict[str, Any],
        instance: Instance,
        routes: list[list[int]],
        depots: list[int] | None = None,
    ) -> Any:
        """Routes (nodes as in :class:`~nco.envs.Solution`) as a PyVRP ``Solution`` of
        ``problem`` (built by :meth:`problem_data`)."""
        pyvrp = require(self.name, "pyvrp", "pyvrp")
        return _to_routes(pyvrp, problem, instance, routes, depots, meta["depot_of_type"])

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
        initial_depots: Sequence[int] | None = None,
    ) -> Solution:
        """Solve within ``time_limit`` seconds (wall clock, set-up included); see
        :class:`~nco.baselines.protocol.Solver`. ``initial_depots[k]`` is initial route k's
        depot (required with ``initial_routes`` on a multi-depot instance)."""
        t0 = time.perf_counter()
        check_supported(self.name, instance.problem, _SUPPORTED)
        check_time_limit(self.name, time_limit)
        pyvrp = require(self.name, "pyvrp", "pyvrp")
        init_routes, init_depots = initial_plan(self.name, instance, initial_routes, initial_depots)
        extra: list[int] = []
        if init_routes is not None and instance.has_depot:
            deps = init_depots if init_depots is not None else [0] * len(init_routes)
            extra = [int(c) for c in np.bincount(deps, minlength=instance.num_depots)]
        problem, meta = self.problem_data(instance, extra=extra)
        init_sol = None
        if init_routes:
            try:
                init_sol = _to_routes(
                    pyvrp, problem, instance, init_routes, init_depots, meta["depot_of_type"]
                )
            except (ValueError, IndexError, RuntimeError) as err:
                raise ValueError(
                    f"pyvrp: initial routes for {instance.name!r} are not understood: {err}"
                ) from err
        result = pyvrp.solve(
            problem,
            _Deadline(
                t0 + time_limit * (1.0 - _FINISH_RESERVE) - _FINISH_PER_NODE * instance.num_nodes
            ),
            seed=int(seed),
            collect_stats=False,
            display=False,
            initial_solution=init_sol,
        )
        best = result.best
        meta.pop("depot_of_type")
        meta.update(
            seed=seed,
            time_limit=time_limit,
            iterations=int(result.num_iterations),
            warm_start=init_sol is not None,
            returned_initial=False,
            pyvrp_feasible=bool(best.is_feasible()),
        )
        routes, depots = _from_solution(instance, best) if best.is_feasible() else (None, None)
        if init_routes is not None:
            first = Solution.from_routes(
                instance, init_routes, depots=init_depots, solver=self.name
            )
            if first.feasible:
                found = (
                    Solution.from_routes(instance, routes, depots=depots, solver=self.name)
                    if routes is not None
                    else None
                )
                # Compared in instance units: PyVRP's integer objective can differ by rounding.
                if found is None or not found.feasible or found.cost > first.cost:
                    routes = [list(r) for r in first.routes]
                    depots = None if first.route_depots is None else list(first.route_depots)
                    meta["returned_initial"] = True
        if routes is None:
            raise SolverFailedError(
                self.name, f"no feasible solution for {instance.name!r} within {time_limit:g} s"
            )
        return Solution.from_routes(
            instance,
            routes,
            depots=depots if instance.num_depots > 1 else None,
            solver=self.name,
            runtime=time.perf_counter() - t0,
            metadata=meta,
        )
