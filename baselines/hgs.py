"""HGS-CVRP (Vidal 2022) through the ``hygese`` bindings, for the CVRP and the TSP.

The full distance matrix is passed in instance units: with a matrix, HGS-CVRP works in doubles
and does not round (rounding applies only to its coordinate input), so its objective is our
cost. The TSP is solved as a CVRP with one vehicle, unit demands and capacity ``n``. Time windows,
asymmetric matrices and every variant attribute (backhauls, open routes, route limits, several
depots) are outside HGS-CVRP's model and are refused, naming them.
"""

from __future__ import annotations

import os
import time

import numpy as np

from nco.baselines.protocol import (
    SolverFailedError,
    UnsupportedProblemError,
    check_supported,
    check_time_limit,
    require,
    variant_attributes,
)
from nco.envs import Instance, Solution, available, get_problem

__all__ = ["HGSSolver"]

_SUPPORTED = ("tsp", "cvrp")


def cpu_share(window: float) -> float:
    """The share of one core this process can expect for the next seconds: the smaller of

    * CPU time over wall time of a busy loop of ``window`` seconds, and
    * cores / the larger of the 1-minute load average and the processes runnable right now
      (Unix; of the whole machine).

    The loop alone reads too high: the kernel's scheduler lets a process that has just been
    waiting run ahead of its fair share for a while (measured: 1.0 on a machine with four busy
    processes on two cores, where the search then got 0.4). The load average alone lags a load
    that has just started (parallel solves starting together: measured 0.72 s for a 0.5 s
    limit), hence the count of runnable processes at this instant too. 1.0 on an idle machine,
    about 0.5 with four busy processes on two cores."""
    w0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < window:
        pass
    wall = time.perf_counter() - w0
    share = min(1.0, (time.process_time() - c0) / wall) if wall > 0 else 1.0
    try:
        load = max(os.getloadavg()[0], _runnable_now())
        cores = len(os.sched_getaffinity(0))
    except (OSError, AttributeError):
        load, cores = 0.0, 1
    if load > cores:
        share = min(share, cores / load)
    return max(share, 0.05)


def _runnable_now() -> float:
    """Processes runnable at this instant, this one included (Linux ``/proc/loadavg``; 0 where
    it does not exist)."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return 0.0


#: The busy loop of :func:`cpu_share` lasts this share of the limit, within the bounds below
#: (shorter loops mostly measure one scheduler time slice).
_PROBE_SHARE, _PROBE_MIN, _PROBE_MAX = 0.02, 0.005, 0.05


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
        """TSP and CVRP (no time windows). Not ``"mtvrp"``: of its variants only the plain
        CVRP (an mtvrp instance without attributes) is solved; the others are refused."""
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
        being ignored.

        The limit is wall clock, converted: HGS-CVRP stops on the CPU time of the process
        (C ``clock()``) and offers no callback or interruption, so on a machine with more
        runnable threads than cores its wall time would exceed its limit by the inverse of the
        share of a core it gets. The CPU limit handed to it is the wall time left times the
        share :func:`cpu_share` measures just before it starts (``metadata["cpu_share"]``; the
        measurement takes 2% of the limit, 5-50 ms); a load that grows during the search can
        still make it overrun by that much.
        """
        t0 = time.perf_counter()
        # an unknown problem is refused by check_supported below, naming what is supported
        family = instance.problem in available() and get_problem(instance.problem).has_variants
        attrs = variant_attributes(instance) if family else []
        if attrs:
            raise UnsupportedProblemError(
                self.name,
                instance.problem,
                _SUPPORTED,
                f"HGS-CVRP solves the CVRP only, and {instance.name!r} ({instance.variant}) has "
                f"{', '.join(attrs)}; use 'pyvrp' or 'ortools'",
            )
        if not family:  # a variant instance without any attribute (the family's "CVRP") is a CVRP
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
        share = cpu_share(min(max(_PROBE_SHARE * time_limit, _PROBE_MIN), _PROBE_MAX))
        # kept for passing the matrix in and the routes out (about 30 ms at 1000 customers)
        # and for checking the answer
        reserve = 0.01 * time_limit + 2e-8 * n * n
        remaining = max(time_limit - reserve - (time.perf_counter() - t0), 0.01)
        params = hgs.AlgorithmParameters(
            timeLimit=remaining * share, seed=int(seed), nbIter=self.max_iter_no_improvement
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
        meta = {
            "hgs_cost": float(result.cost),
            "seed": seed,
            "time_limit": time_limit,
            "cpu_share": share,
        }
        return Solution.from_routes(
            instance, routes, solver=self.name, runtime=time.perf_counter() - t0, metadata=meta
        )
