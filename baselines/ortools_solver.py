"""OR-Tools routing (``pywrapcp``) for the TSP, CVRP and CVRPTW.

Arc costs, demands and times are converted to integers by
:func:`~nco.baselines.protocol.integer_data` (rule and constant: :data:`ORTOOLS_SCALE`); the
returned solution is re-costed in instance units by :meth:`Solution.from_routes`. The routing
search is single-threaded and deterministic, so ``seed`` is recorded but has no effect.
"""

from __future__ import annotations

import time
from typing import Any

from nco.baselines.protocol import (
    ORTOOLS_SCALE,
    SolverFailedError,
    check_supported,
    check_time_limit,
    fleet_bound,
    integer_data,
    require,
)
from nco.envs import Instance, Solution

__all__ = ["ORTOOLS_SCALE", "ORToolsSolver"]

_SUPPORTED = ("tsp", "cvrp", "cvrptw")


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
        """Solve within ``time_limit`` seconds (model building included); see :class:`Solver`.

        Raises
        ------
        UnsupportedProblemError, SolverFailedError (no solution within the limit, or initial
        routes the model rejects).
        """
        t0 = time.perf_counter()
        check_supported(self.name, instance.problem, _SUPPORTED)
        check_time_limit(self.name, time_limit)
        pywrapcp, enums = _modules()
        data = integer_data(instance)
        n = instance.num_nodes
        num_vehicles = fleet_bound(instance, extra=len(initial_routes or []))

        manager = pywrapcp.RoutingIndexManager(n, num_vehicles, 0)
        routing = pywrapcp.RoutingModel(manager)
        # Matrices registered natively: a Python callback per arc evaluation is far slower.
        arc = routing.RegisterTransitMatrix(data.distance.tolist())
        routing.SetArcCostEvaluatorOfAllVehicles(arc)
        if data.demand is not None:
            load = routing.RegisterUnaryTransitVector(data.demand.tolist())
            routing.AddDimensionWithVehicleCapacity(
                load, 0, [int(data.capacity or 0)] * num_vehicles, True, "Load"
            )
        if data.tw is not None:
            assert data.service is not None
            # Transit i -> j = service at i + travel i -> j, so the cumul at j is the start of
            # service at j; slack lets a vehicle wait for a window to open.
            transit = data.travel + data.service[:, None]
            tcb = routing.RegisterTransitMatrix(transit.tolist())
            open_, close = int(data.tw[0, 0]), int(data.tw[0, 1])
            routing.AddDimension(tcb, close, close, False, "Time")
            tdim = routing.GetDimensionOrDie("Time")
            for node in range(1, n):
                tdim.CumulVar(manager.NodeToIndex(node)).SetRange(
                    int(data.tw[node, 0]), int(data.tw[node, 1])
                )
            for v in range(num_vehicles):
                tdim.CumulVar(routing.Start(v)).SetRange(open_, close)
                tdim.CumulVar(routing.End(v)).SetRange(open_, close)
            # With tight windows the first-solution heuristics often cannot place every
            # customer and the search would end with nothing. Dropping a customer is allowed
            # at a penalty larger than any complete solution's cost, so the search starts
            # from a partial plan and refills it; a plan still missing customers at the end
            # is reported as a failure below, never returned.
            penalty = int(data.distance.max()) * 2 * n + 1
            for node in range(1, n):
                routing.AddDisjunction([manager.NodeToIndex(node)], penalty)

        params = pywrapcp.DefaultRoutingSearchParameters()
        params.first_solution_strategy = getattr(enums.FirstSolutionStrategy, self.first_solution)
        params.local_search_metaheuristic = getattr(
            enums.LocalSearchMetaheuristic, self.metaheuristic
        )
        params.log_search = False
        remaining = max(time_limit - (time.perf_counter() - t0), 0.01)
        params.time_limit.FromMilliseconds(max(int(remaining * 1000), 10))

        if initial_routes:
            routing.CloseModelWithParameters(params)
            init = (
                _tsp_order(instance, initial_routes)
                if not instance.has_depot
                else [[int(v) for v in r] for r in initial_routes if r]
            )
            init = init + [[] for _ in range(num_vehicles - len(init))]
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
        for v in range(num_vehicles):
            index = routing.Start(v)
            route = [] if instance.has_depot else [0]
            index = result.Value(routing.NextVar(index))
            while not routing.IsEnd(index):
                route.append(manager.IndexToNode(index))
                index = result.Value(routing.NextVar(index))
            if route:
                routes.append(route)
        meta = {
            "scale": data.scale,
            "exact_integers": data.exact,
            "vehicles": num_vehicles,
            "objective_int": int(result.ObjectiveValue()),
            "first_solution": self.first_solution,
            "metaheuristic": self.metaheuristic,
            "warm_start": bool(initial_routes),
            "seed": seed,  # recorded only: the routing search is deterministic
            "time_limit": time_limit,
        }
        return Solution.from_routes(
            instance, routes, solver=self.name, runtime=time.perf_counter() - t0, metadata=meta
        )
