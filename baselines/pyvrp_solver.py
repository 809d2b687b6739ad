"""PyVRP (iterated local search, PyVRP >= 0.14) for the TSP, CVRP and CVRPTW.

The `ProblemData` is built directly from integer matrices (see
:func:`~nco.baselines.protocol.integer_data` for the scaling rule and the safe rounding of
times). Node ``i`` of the instance is PyVRP location ``i``; location 0 is the depot and client
``c`` sits at location ``c + 1``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from nco.baselines.protocol import (
    SolverFailedError,
    check_supported,
    check_time_limit,
    fleet_bound,
    integer_data,
    require,
)
from nco.envs import Instance, Solution

__all__ = ["PyVRPSolver"]

_SUPPORTED = ("tsp", "cvrp", "cvrptw")

#: Share of the limit kept for converting and checking PyVRP's answer after it stops.
_FINISH_RESERVE = 0.01

#: Largest ratio (largest arc / capacity) left as is; see the load factor in :func:`_build`.
_LOAD_BALANCE = 1000


def _build(pyvrp: Any, instance: Instance, num_vehicles: int) -> tuple[Any, dict[str, Any]]:
    """ProblemData for ``instance`` and the integer conversion's metadata."""
    data = integer_data(instance)
    n = instance.num_nodes
    coords = instance.coords if instance.coords is not None else np.zeros((n, 2))
    locations = [pyvrp.Location(float(x), float(y)) for x, y in coords]
    big = np.iinfo(np.int64).max
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
    clients = []
    for i in range(1, n):
        kw: dict[str, Any] = {}
        if data.demand is not None:
            kw["delivery"] = [int(data.demand[i]) * load_factor]
        if data.tw is not None:
            assert data.service is not None
            kw.update(
                service_duration=int(data.service[i]),
                tw_early=int(data.tw[i, 0]),
                tw_late=int(data.tw[i, 1]),
            )
        clients.append(pyvrp.Client(location=i, **kw))
    if data.tw is not None:
        open_, close = int(data.tw[0, 0]), int(data.tw[0, 1])
        depots = [pyvrp.Depot(location=0, tw_early=open_, tw_late=close)]
        vtype = pyvrp.VehicleType(
            num_available=num_vehicles,
            capacity=[int(data.capacity or 0) * load_factor],
            tw_early=open_,
            tw_late=close,
        )
        durations = data.travel
    else:
        depots = [pyvrp.Depot(location=0)]
        cap = [int(data.capacity) * load_factor] if data.capacity is not None else []
        vtype = pyvrp.VehicleType(num_available=num_vehicles, capacity=cap, tw_early=0, tw_late=big)
        durations = np.zeros_like(data.distance)
    problem = pyvrp.ProblemData(locations, clients, depots, [vtype], [data.distance], [durations])
    return problem, {
        "scale": data.scale,
        "exact_integers": data.exact,
        "vehicles": num_vehicles,
        "load_factor": load_factor,
    }


def _to_visits(instance: Instance, routes: list[list[int]]) -> list[list[int]]:
    """Instance node ids -> PyVRP client indices (node - 1); the TSP tour starts at node 0."""
    if not instance.has_depot:
        tour = [int(v) for r in routes for v in r]
        if 0 not in tour:
            raise ValueError(
                f"pyvrp: the initial TSP tour for {instance.name!r} does not visit node 0"
            )
        i = tour.index(0)
        return [[v - 1 for v in tour[i + 1 :] + tour[:i]]]
    return [[int(v) - 1 for v in r] for r in routes if len(r)]


def _from_solution(instance: Instance, solution: Any) -> list[list[int]]:
    routes = []
    for route in solution.routes():
        nodes = [act.idx + 1 for act in route if act.is_client()]
        if nodes:
            routes.append(nodes)
    if not instance.has_depot:
        routes = [[0, *(routes[0] if routes else [])]]
    return routes


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
    """

    name = "pyvrp"

    def __init__(self) -> None:
        require(self.name, "pyvrp", "pyvrp")

    def __repr__(self) -> str:
        return "PyVRPSolver()"

    def supports(self, problem: str) -> bool:
        """TSP, CVRP and CVRPTW."""
        return problem in _SUPPORTED

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
    ) -> Solution:
        """Solve within ``time_limit`` seconds (wall clock, set-up included); see
        :class:`~nco.baselines.protocol.Solver`."""
        t0 = time.perf_counter()
        check_supported(self.name, instance.problem, _SUPPORTED)
        check_time_limit(self.name, time_limit)
        pyvrp = require(self.name, "pyvrp", "pyvrp")
        init_routes = (
            [list(map(int, r)) for r in initial_routes if len(r)] if initial_routes else None
        )
        num_vehicles = fleet_bound(instance, extra=len(init_routes or []))
        problem, meta = _build(pyvrp, instance, num_vehicles)
        init_sol = None
        if init_routes:
            try:
                init_sol = pyvrp.Solution(problem, _to_visits(instance, init_routes))
            except (ValueError, IndexError, RuntimeError) as err:
                raise ValueError(
                    f"pyvrp: initial routes for {instance.name!r} are not understood: {err}"
                ) from err
        result = pyvrp.solve(
            problem,
            _Deadline(t0 + time_limit * (1.0 - _FINISH_RESERVE)),
            seed=int(seed),
            collect_stats=False,
            display=False,
            initial_solution=init_sol,
        )
        best = result.best
        meta.update(
            seed=seed,
            time_limit=time_limit,
            iterations=int(result.num_iterations),
            warm_start=init_sol is not None,
            returned_initial=False,
        )
        routes = _from_solution(instance, best) if best.is_feasible() else None
        if init_routes is not None:
            first = Solution.from_routes(instance, init_routes, solver=self.name)
            if first.feasible:
                found = (
                    Solution.from_routes(instance, routes, solver=self.name)
                    if routes is not None
                    else None
                )
                # Compared in instance units: PyVRP's integer objective can differ by rounding.
                if found is None or not found.feasible or found.cost > first.cost:
                    routes = [list(r) for r in first.routes]
                    meta["returned_initial"] = True
        if routes is None:
            raise SolverFailedError(
                self.name, f"no feasible solution for {instance.name!r} within {time_limit:g} s"
            )
        return Solution.from_routes(
            instance, routes, solver=self.name, runtime=time.perf_counter() - t0, metadata=meta
        )
