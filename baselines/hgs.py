"""HGS-CVRP (Vidal 2022) through the ``hygese`` bindings, for the CVRP and the TSP.

The full distance matrix is passed in instance units: with a matrix, HGS-CVRP works in doubles
and does not round (rounding applies only to its coordinate input), so its objective is our
cost. The TSP is solved as a CVRP with one vehicle, unit demands and capacity ``n``. Time windows
and asymmetric matrices are outside HGS-CVRP's model and are refused.
"""

from __future__ import annotations

import time

import numpy as np

from nco.baselines.protocol import (
    SolverFailedError,
    check_supported,
    check_time_limit,
    require,
)
from nco.envs import Instance, Solution

__all__ = ["HGSSolver"]

_SUPPORTED = ("tsp", "cvrp")


class HGSSolver:
    """Hybrid Genetic Search for the CVRP (HGS-CVRP), single-threaded.

    Parameters
    ----------
    max_iter_no_improvement : HGS-CVRP's ``nbIter``: iterations without improvement before it
        stops early (the time limit always applies too). Large by default so that a run uses
        its time budget.
    """

    name = "hgs"

    def __init__(self, max_iter_no_improvement: int = 1_000_000_000) -> None:
        require(self.name, "hygese", "hygese")
        if max_iter_no_improvement <= 0:
            raise ValueError(
                f"hgs: max_iter_no_improvement must be positive, got {max_iter_no_improvement}"
            )
        self.max_iter_no_improvement = int(max_iter_no_improvement)

    def __repr__(self) -> str:
        return f"HGSSolver(max_iter_no_improvement={self.max_iter_no_improvement})"

    def supports(self, problem: str) -> bool:
        """TSP and CVRP (no time windows)."""
        return problem in _SUPPORTED

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
    ) -> Solution:
        """Solve within ``time_limit`` seconds; see :class:`~nco.baselines.protocol.Solver`.

        HGS-CVRP has no warm start: passing ``initial_routes`` raises ``ValueError`` rather than
        being ignored. HGS-CVRP measures its limit in CPU time of its own thread.
        """
        t0 = time.perf_counter()
        check_supported(self.name, instance.problem, _SUPPORTED)
        check_time_limit(self.name, time_limit)
        if initial_routes:
            raise ValueError(
                "hgs: HGS-CVRP cannot start from initial routes; use 'pyvrp' or 'ortools' for warm starts"
            )
        if not instance.is_symmetric:
            # HGS-CVRP's moves (route reversal, SWAP*) assume d[i, j] == d[j, i]; on an
            # asymmetric matrix it would optimise the wrong objective.
            raise ValueError(
                f"hgs: HGS-CVRP assumes symmetric distances and {instance.name!r} is asymmetric; use 'pyvrp' or 'ortools'"
            )
        hgs = require(self.name, "hygese", "hygese")
        n = instance.num_nodes
        dist = np.ascontiguousarray(instance.distance, dtype=np.float64)
        data: dict[str, object] = {"distance_matrix": dist, "depot": 0}
        if instance.has_depot:
            assert instance.demand is not None and instance.capacity is not None
            data["demands"] = np.asarray(instance.demand, dtype=np.float64)
            data["vehicle_capacity"] = float(instance.capacity)
            if instance.num_vehicles is not None:
                data["num_vehicles"] = int(instance.num_vehicles)
        else:
            # One vehicle that can carry everything: HGS-CVRP's route is then the tour.
            data["demands"] = np.ones(n)
            data["vehicle_capacity"] = float(n)
            data["num_vehicles"] = 1
        remaining = max(time_limit - (time.perf_counter() - t0), 0.01)
        params = hgs.AlgorithmParameters(
            timeLimit=remaining, seed=int(seed), nbIter=self.max_iter_no_improvement
        )
        solver = hgs.Solver(parameters=params, verbose=False)
        try:
            result = solver.solve_cvrp(data)
        except Exception as err:  # the bindings raise TypeError on a null solution pointer
            raise SolverFailedError(self.name, f"{instance.name!r}: {err}") from err
        routes = [[int(v) for v in r] for r in result.routes if len(r)]
        if not routes:
            raise SolverFailedError(
                self.name, f"no feasible solution for {instance.name!r} within {time_limit:g} s"
            )
        if not instance.has_depot:
            routes = [[0, *routes[0]]]
        meta = {"hgs_cost": float(result.cost), "seed": seed, "time_limit": time_limit}
        return Solution.from_routes(
            instance, routes, solver=self.name, runtime=time.perf_counter() - t0, metadata=meta
        )
