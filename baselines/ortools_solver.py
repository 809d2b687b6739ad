"""OR-Tools routing (``pywrapcp``) for the TSP, CVRP, CVRPTW and the variants.

Arc costs, demands, times and limits are converted to integers by
:func:`~nco.baselines.protocol.integer_data` (rule and constant: :data:`ORTOOLS_SCALE`); the
returned solution is re-costed in instance units by :meth:`Solution.from_routes`. The routing
search is single-threaded and deterministic, so ``seed`` is recorded but has no effect.

Variants (``problem == "mtvrp"``), every attribute of :class:`~nco.envs.Instance`:

* backhauls: unary dimensions ``Linehaul`` and ``Backhaul`` (each total fits the capacity).
  VRPB's precedence: the ``Backhaul`` cumul (pickups made so far) is 0 at every linehaul, so
  no linehaul follows a backhaul; routes of backhauls only stay allowed (as in nco's checker).
  Mixed backhauls: a ``Load`` dimension (transit pickup - delivery, start free in
  ``[0, capacity]``) whose end equals the ``Backhaul`` end, which pins the start load to the
  route's linehaul total: the load on board fits at every point.
* open routes: every arc into a depot has cost, length and travel time 0 (OR-Tools' route
  end is the depot node), and the route end's time is free up to a loose horizon.
* distance limit: a ``Distance`` dimension over the distances rounded up, capacity = limit.
* duration limit: the ``Time`` dimension's span per vehicle (its start may be delayed, so
  waiting is minimal as in PyVRP's duration).
* several depots: ``RoutingIndexManager`` with per-vehicle start = end depot, as many
  vehicles per depot as the file bases there (one per customer when it does not say).
* time windows: a ``Time`` dimension, transit i -> j = service at i + travel i -> j.

Whenever a constraint can make the first-solution heuristic fail (windows, limits,
backhauls), customers sit in disjunctions with a penalty above any complete plan's cost; a
plan still missing customers at the end is a failure, never returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nco.baselines.protocol import (
    ORTOOLS_SCALE,
    SolverFailedError,
    UnsupportedProblemError,
    check_supported,
    check_time_limit,
    fleet_per_depot,
    initial_plan,
    integer_data,
    require,
)
from nco.envs import Instance, Solution, get_problem

__all__ = ["ORTOOLS_SCALE", "ORToolsSolver"]

_SUPPORTED = ("tsp", "cvrp", "cvrptw", "mtvrp")
#: Share of the limit kept for the search's overshoot, and seconds per node kept for reading
#: and checking the answer (measured on Gehring-Homberger 1000 files, see ``solve``).
_SEARCH_OVERSHOOT, _FINISH_PER_NODE = 0.05, 2.5e-4


def _modules() -> tuple[Any, Any]:
    pywrapcp = require("ortools", "ortools.constraint_solver.pywrapcp", "ortools")
    enums = require("ortools", "ortools.constraint_solver.routing_enums_pb2", "ortools")
    return pywrapcp, enums


def _tsp_order(instance: Instance, routes: list[list[int]]) -> list[list[int]]:
    """A TSP tour rotated to start at node 0 (OR-Tools' depot) and without it."""
    tour = [int(v) for r in routes for v in r]
    if 0 not in tour:
        raise ValueError(
            f"ortools: the initial TSP tour for {instance.name!r} does not visit node 0"
        )
    i = tour.index(0)
    return [tour[i + 1 :] + tour[:i]]


class ORToolsSolver:
    """OR-Tools' routing solver: a first-solution heuristic, then a local-search metaheuristic.

    Parameters
    ----------
    first_solution : name of a ``FirstSolutionStrategy`` (e.g. ``"PATH_CHEAPEST_ARC"``,
        ``"SAVINGS"``, ``"PARALLEL_CHEAPEST_INSERTION"``).
    metaheuristic : name of a ``LocalSearchMetaheuristic`` (``"GUIDED_LOCAL_SEARCH"``,
        ``"SIMULATED_ANNEALING"``, ``"TABU_SEARCH"``, ``"GREEDY_DESCENT"``).
    """

    name = "ortools"

    def __init__(
        self, first_solution: str = "PATH_CHEAPEST_ARC", metaheuristic: str = "GUIDED_LOCAL_SEARCH"
    ) -> None:
        _, enums = _modules()
        firsts = set(enums.FirstSolutionStrategy.Value.keys()) - {"UNSET"}
        metas = set(enums.LocalSearchMetaheuristic.Value.keys()) - {"UNSET"}
        if first_solution not in firsts:
            raise ValueError(
                f"ortools: unknown first_solution {first_solution!r}; expected one of {', '.join(sorted(firsts))}"
            )
        if metaheuristic not in metas:
            raise ValueError(
                f"ortools: unknown metaheuristic {metaheuristic!r}; expected one of {', '.join(sorted(metas))}"
            )
        self.first_solution = first_solution
        self.metaheuristic = metaheuristic

    def __repr__(self) -> str:
        return f"ORToolsSolver(first_solution={self.first_solution!r}, metaheuristic={self.metaheuristic!r})"

    def supports(self, problem: str) -> bool:
        """TSP, CVRP, CVRPTW and the variants (``"mtvrp"``: backhauls strict or mixed, open
        routes, distance and duration limits, several depots with their vehicles)."""
        return problem in _SUPPORTED

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
        initial_depots: Sequence[int] | None = None,
    ) -> Solution:
        """Solve within ``time_limit`` seconds (model building included); see :class:`Solver`.
        ``initial_depots[k]`` is initial route k's depot (required with ``initial_routes`` on
        a multi-depot instance).

        Raises
        ------
        UnsupportedProblemError, SolverFailedError (no solution within the limit, or initial
        routes the model rejects).
        """
        t0 = time.perf_counter()
        check_supported(self.name, instance.problem, _SUPPORTED)
        check_time_limit(self.name, time_limit)
        pywrapcp, enums = _modules()
        init_routes, init_depots = initial_plan(self.name, instance, initial_routes, initial_depots)
        data = integer_data(instance)
        n, nd = instance.num_nodes, instance.num_depots
        if not instance.has_depot:
            per_depot = [1]
        else:
            deps = init_depots if init_depots is not None else [0] * len(init_routes or [])
            try:
                per_depot = fleet_per_depot(instance, np.bincount(deps, minlength=nd).tolist())
            except ValueError as err:
                raise UnsupportedProblemError(
                    self.name, instance.problem, _SUPPORTED, f"{err} (a vehicle has one depot)"
                ) from None
        depot_of = [d for d, k in enumerate(per_depot) for _ in range(k)]
        num_vehicles = len(depot_of)
        if nd == 1:
            manager = pywrapcp.RoutingIndexManager(n, num_vehicles, 0)
        else:
            manager = pywrapcp.RoutingIndexManager(n, num_vehicles, depot_of, depot_of)
        routing = pywrapcp.RoutingModel(manager)
        opened = instance.open_routes
        cost_matrix = data.distance.copy()
        travel = data.travel.copy()
        if opened:
            # the route's end is its depot node: arcs into it cost and take nothing
            cost_matrix[:, :nd] = 0
            travel[:, :nd] = 0
        # Matrices registered natively: a Python callback per arc evaluation is far slower.
        arc = routing.RegisterTransitMatrix(cost_matrix.tolist())
        routing.SetArcCostEvaluatorOfAllVehicles(arc)
        caps = [int(data.capacity or 0)] * num_vehicles
        if data.demand is not None:
            load = routing.RegisterUnaryTransitVector(data.demand.tolist())
            routing.AddDimensionWithVehicleCapacity(
                load, 0, caps, True, "Load" if data.backhaul is None else "Linehaul"
            )
        if data.backhaul is not None:
            self._backhauls(routing, manager, instance, data, caps, num_vehicles)
        if data.max_distance is not None:
            length = routing.RegisterTransitMatrix(travel.tolist())
            routing.AddDimension(length, 0, int(data.max_distance), True, "Distance")
        if data.tw is not None or data.max_duration is not None:
            self._time(routing, manager, instance, data, travel, depot_of)
        if data.tw is not None or get_problem(instance.problem).has_variants:
            # With tight windows or limits the first-solution heuristics often cannot place
            # every customer and the search would end with nothing. Dropping a customer is
            # allowed at a penalty larger than any complete solution's cost, so the search
            # starts from a partial plan and refills it; a plan still missing customers at
            # the end is reported as a failure below, never returned.
            penalty = int(data.distance.max()) * 2 * n + 1
            for node in range(nd, n):
                routing.AddDisjunction([manager.NodeToIndex(node)], penalty)

        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = getattr(enums.FirstSolutionStrategy, self.first_solution)
        params.local_search_metaheuristic = getattr(
            enums.LocalSearchMetaheuristic, self.metaheuristic
        )
        params.log_search = False
        # OR-Tools checks its limit between neighbourhood explorations and overshoots it (at
        # 1000 windowed customers by 1.3% idle, up to 5% with the cores shared), and reading the
        # routes back and checking them takes ~0.1 ms per node: both come out of the limit.
        remaining = max(
            time_limit * (1.0 - _SEARCH_OVERSHOOT)
            - (time.perf_counter() - t0)
            - _FINISH_PER_NODE * instance.num_nodes,
            0.01,
        )
        params.time_limit.FromMilliseconds(max(int(remaining * 1000), 10))

        if init_routes:
            routing.CloseModelWithParameters(params)
            init: list[list[int]] = [[] for _ in range(num_vehicles)]
            if not instance.has_depot:
                init[0] = _tsp_order(instance, init_routes)[0]
            else:
                free = list(range(num_vehicles))
                for k, r in enumerate(init_routes):
                    d = init_depots[k] if init_depots is not None else 0
                    v = next(v for v in free if depot_of[v] == d)
                    free.remove(v)
                    init[v] = r
            assignment = routing.ReadAssignmentFromRoutes(init, True)
            if assignment is None:
                raise SolverFailedError(
                    self.name,
                    f"the initial routes for {instance.name!r} are not feasible for the OR-Tools model (they must visit every customer once within capacity and time windows)",
                )
            result = routing.SolveFromAssignmentWithParameters(assignment, params)
        else:
            result = routing.SolveWithParameters(params)
        if result is None:
            raise SolverFailedError(
                self.name,
                f"no solution for {instance.name!r} within {time_limit:g} s (routing status {routing.status()})",
            )

        dropped = [
            manager.IndexToNode(i)
            for i in range(routing.Size())
            if not routing.IsStart(i)
            and not routing.IsEnd(i)
            and result.Value(routing.NextVar(i)) == i
        ]
        if dropped:
            raise SolverFailedError(
                self.name,
                f"no complete solution for {instance.name!r} within {time_limit:g} s ({len(dropped)} customers left unrouted)",
            )
        routes: list[list[int]] = []
        depots: list[int] = []
        for v in range(num_vehicles):
            index = routing.Start(v)
            route = [] if instance.has_depot else [0]
            index = result.Value(routing.NextVar(index))
            while not routing.IsEnd(index):
                route.append(manager.IndexToNode(index))
                index = result.Value(routing.NextVar(index))
            if route:
                routes.append(route)
                depots.append(depot_of[v])
        meta = {
            "scale": data.scale,
            "exact_integers": data.exact,
            "vehicles": num_vehicles,
            "objective_int": int(result.ObjectiveValue()),
            "first_solution": self.first_solution,
            "metaheuristic": self.metaheuristic,
            "warm_start": bool(init_routes),
            "seed": seed,  # recorded only: the routing search is deterministic
            "time_limit": time_limit,
        }
        return Solution.from_routes(
            instance,
            routes,
            depots=depots if nd > 1 else None,
            solver=self.name,
            runtime=time.perf_counter() - t0,
            metadata=meta,
        )

    @staticmethod
    def _backhauls(
        routing: Any, manager: Any, instance: Instance, data: Any, caps: list[int], vehicles: int
    ) -> None:
        """Backhaul totals, and VRPB's precedence or the mixed load on board."""
        nd = instance.num_depots
        pick = routing.RegisterUnaryTransitVector(data.backhaul.tolist())
        routing.AddDimensionWithVehicleCapacity(pick, 0, caps, True, "Backhaul")
        picked = routing.GetDimensionOrDie("Backhaul")
        if not instance.mixed_backhaul:
            # pickups made before a linehaul must be none: linehauls come first
            for node in range(nd, instance.num_nodes):
                if data.backhaul[node] <= 0:
                    picked.CumulVar(manager.NodeToIndex(node)).SetMax(0)
            return
        # load on board: starts free, pinned to the route's linehaul total by its end value
        net = routing.RegisterUnaryTransitVector((data.backhaul - data.demand).tolist())
        routing.AddDimensionWithVehicleCapacity(net, 0, caps, False, "OnBoard")
        board = routing.GetDimensionOrDie("OnBoard")
        solver = routing.solver()
        for v in range(vehicles):
            solver.Add(board.CumulVar(routing.End(v)) == picked.CumulVar(routing.End(v)))

    @staticmethod
    def _time(
        routing: Any,
        manager: Any,
        instance: Instance,
        data: Any,
        travel: np.ndarray,
        depot_of: list[int],
    ) -> None:
        """The Time dimension: windows, the depots' hours and the duration limit (span)."""
        assert data.service is not None
        n, nd = instance.num_nodes, instance.num_depots
        # Transit i -> j = service at i + travel i -> j, so the cumul at j is the start of
        # service at j; slack lets a vehicle wait for a window to open.
        transit = travel + data.service[:, None]
        tcb = routing.RegisterTransitMatrix(transit.tolist())
        if data.tw is not None:
            tw = data.tw
            horizon = int(tw[:, 1].max()) + int(data.service.max()) + 1
        else:
            horizon = int(data.max_duration) + 1
            tw = np.array([[0, horizon]] * n, dtype=np.int64)
        routing.AddDimension(tcb, horizon, horizon, False, "Time")
        tdim = routing.GetDimensionOrDie("Time")
        if data.tw is not None:
            for node in range(nd, n):
                tdim.CumulVar(manager.NodeToIndex(node)).SetRange(
                    int(tw[node, 0]), int(tw[node, 1])
                )
        for v, d in enumerate(depot_of):
            open_, close = int(tw[d, 0]), int(tw[d, 1])
            tdim.CumulVar(routing.Start(v)).SetRange(open_, close)
            # an open route need not be back before its depot closes
            tdim.CumulVar(routing.End(v)).SetRange(
                open_, horizon if instance.open_routes else close
            )
            if data.max_duration is not None:
                tdim.SetSpanUpperBoundForVehicle(int(data.max_duration), v)
