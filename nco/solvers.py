"""Neural solvers behind the :class:`~nco.baselines.Solver` protocol: ``"neural"`` and ``"hybrid"``.

* :class:`NeuralSolver`: a trained policy constructs solutions (default: POMO multistart greedy
  with 8-fold augmentation), the best one is chosen by its cost in the instance's own units, and
  optionally improved by the granular local search of :mod:`nco.kernels.local_search`.
* :class:`HybridSolver`: the neural solution warm-starts PyVRP (default) or OR-Tools within the
  same total time budget.

Both are registered in the baselines registry by :func:`register`, which runs when this module is
imported (``nco.benchmark``, ``nco.api`` and the CLI import it), so ``get_solver("neural")``
works in spawned worker processes too.

Models: a checkpoint path, the name of a checkpoint shipped in ``nco/data/checkpoints`` (e.g.
``"cvrp50"``), an already loaded ``(policy, info)`` pair from :func:`nco.checkpoints.load_model`,
or None to pick, per instance, the shipped checkpoint of the instance's problem whose training
size is nearest to the instance's number of customers.

Instances given only as a distance matrix (no coordinates) are embedded in the plane by
classical multidimensional scaling (:meth:`Instance.to_tensordict`); the policy reads those
positions while masks, rewards and costs use the matrix itself.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, overload

import numpy as np

from nco.baselines import (
    Solver,
    SolverError,
    SolverFailedError,
    available_solvers,
    get_solver,
    register_solver,
)
from nco.baselines.protocol import check_time_limit
from nco.checkpoints import (
    CHECKPOINT_SUFFIXES,
    ModelNotFoundError,
    load_model_cached,
    resolve_checkpoint,
    select_checkpoint,
    shipped_checkpoints,
    trained_sizes,
)
from nco.envs import Instance, Solution, available, get_problem

if TYPE_CHECKING:
    from torchrl.envs import EnvBase

    from nco.policies import AttentionPolicy
    from nco.policies.decoding import DecodeConfig, DecodePlan

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "HybridSolver",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModelSpec",
    "NeuralSolver",
    "fleet_limited",
    "refine_routes",
    "register",
    "select_checkpoint",
    "shipped_checkpoints",
]

#: What ``model=`` accepts: a path, a shipped name, a loaded ``(policy, info)`` pair, or None.
ModelSpec: TypeAlias = "str | Path | tuple[AttentionPolicy, dict[str, Any]] | None"

#: Hybrid: below this many seconds left after the network, the backend is not started.
MIN_BACKEND_TIME = 0.05

#: Hybrid: the most of its time limit the network may use for the warm start (construction
#: and polishing are time-limited to this share; the backend gets the rest). Measured on 16 X
#: instances at 1 and 3 s per 100 customers: 0.1 was 0.2-0.3 points better than 0.25 (the
#: backend gains more from the time than the start from more rollouts).
NEURAL_SHARE = 0.1

#: Hybrid: distinct network plans polished by the local search before the backend starts
#: (measured: polishing 1 was ahead of 4 at the same share; PyVRP starts from one plan).
HYBRID_POLISH = 1

#: Candidates kept per instance from each decode (by the network's own cost) for the final
#: choice in instance units; bounds the result's memory when M = starts x transforms is large.
KEEP_CANDIDATES = 16

#: Share of a neural time limit kept for choosing, checking and building the solution.
FINISH_RESERVE = 0.04

#: Decode costs measured by :meth:`NeuralSolver.prepare`, per (model source, device, torch
#: threads, node count): (encoder seconds per transform of one instance, seconds per decoding
#: step of one row). Time-limited solves plan their first round with them instead of the priors
#: below, and the hybrid decides from them whether the network fits its share.
_STEP_COSTS: dict[tuple[str, str, int, int], tuple[float, float]] = {}

#: Prior decoding throughput (row x node x step units per second) for the first round of a
#: time-limited solve, before anything is measured: a conservative CPU value (2 busy cores
#: measure 4-9e7); later rounds use the measured rate of the earlier ones.
PRIOR_RATE = 2.5e7

#: Prior per-step overhead (seconds) of the decode loop (Python, env bookkeeping, kernel
#: launches), independent of the number of rows.
STEP_OVERHEAD = 4e-4

#: Prior encoder cost per encoder layer and squared node count (seconds; the encoder cannot be
#: stopped midway, so a round is not started when this estimate does not fit).
ENCODER_PRIOR = 3e-8

_HYBRID_BACKENDS = ("pyvrp", "ortools")

#: A plan: routes and each route's depot node (None for single-depot instances).
_Plan: TypeAlias = "tuple[list[list[int]], list[int] | None]"


# ---------------------------------------------------------------------------------- errors
class ModelMismatchError(SolverError, ValueError):
    """A checkpoint trained on one problem was given an instance of another."""

    def __init__(
        self, source: str, trained: str, instance: str, got: str, variant: str | None = None
    ) -> None:
        self.trained = trained
        self.problem = got
        what = (
            f"{got!r} ({variant}) instance"
            if variant and variant != got.upper()
            else f"{got!r} instance"
        )
        super().__init__(
            f"neural: checkpoint {source} was trained on problem {trained!r}, but instance "
            f"{instance!r} is a {what}; use a {got} checkpoint (or model=None to pick "
            "a shipped one)"
        )


def _auto_device(device: str | None) -> str:
    from nco.devices import resolve_device

    return resolve_device(device)


# ---------------------------------------------------------------------------------- helpers
def _key(sol: Solution) -> tuple[bool, float]:
    """Order of solutions: feasible first, then by cost (NaN last)."""
    return (not sol.feasible, sol.cost if math.isfinite(sol.cost) else math.inf)


def _best_indices(instance: Instance, actions: np.ndarray, k: int = 1) -> list[int]:
    """Indices of the ``k`` best distinct of M action sequences [M, T] by cost in instance units.

    Each candidate is costed as its solution will be (:meth:`Instance.route_cost` of its
    routes); candidates that use more routes than the instance's fleet (in all, or from one
    depot: the checker's :func:`~nco.envs.common.check_fleet`) are ranked after those that fit.
    """
    from nco.envs.common import check_fleet

    problem = get_problem(instance.problem)
    per_depot = instance.vehicles_per_depot
    cost = np.empty(len(actions))
    over = np.zeros(len(actions), dtype=bool)
    for m, seq in enumerate(actions.tolist()):
        routes, depots = _split_tour(problem, instance, seq)
        starts = depots if depots is not None else [0] * len(routes)
        cost[m] = instance.route_cost(routes, depots)
        over[m] = bool(instance.has_depot and check_fleet(starts, instance.num_vehicles, per_depot))
    order = np.lexsort((cost, over))
    if k <= 1:
        return [int(order[0])]
    out: list[int] = []
    seen: set[bytes] = set()
    for m in order:
        key = actions[m].tobytes()
        if key not in seen:
            seen.add(key)
            out.append(int(m))
            if len(out) == k:
                break
    return out


def _split_tour(
    problem: Any, instance: Instance, tour: Sequence[int]
) -> tuple[list[list[int]], list[int] | None]:
    """An action sequence -> (routes, each route's depot node or None for one depot)."""
    if instance.num_depots > 1:
        routes, depots = problem.tours_to_depot_routes(list(tour), instance.num_depots)
        return routes, [int(d) for d in depots]
    return problem.tours_to_routes(list(tour)), None


def _refine_refusal(instance: Instance) -> str | None:
    """Why :func:`refine_routes` cannot refine ``instance`` (the constraints its local search
    does not model, named), or None when it can.

    None for every instance today: the local search models capacity, time windows, backhauls
    (strict and mixed), open routes, distance and duration limits and several depots (each
    route keeping its own), and adds routes only as spare vehicles the fleet allows, so the
    vehicle counts hold too. Kept as the one place to name a constraint it would not model."""
    del instance
    return None


#: Improving moves per local-search call when refining against a deadline (the kernel cannot
#: watch the clock, so it is called in slices of this many moves until it converges or time
#: is up).
LS_SLICE = 128

#: Share of a time limit the construction may use when the solution is refined afterwards.
REFINE_SPLIT = 0.75

#: Share of a time limit kept for the fleet repair of a constructed plan that uses more routes
#: than the fleet, on instances with a fleet (``num_vehicles``, ``vehicle_depots``); with
#: ``refine`` the construction also stops there when that is earlier than
#: :data:`REFINE_SPLIT`. Measured on the MDVRPTW files at 1 s per 100 customers (PR14A, PR15A,
#: PR20A, whose zero-shot plans break the fleet by 40-90 routes): 0.15 left 5-11 routes over
#: the fleet on all three, 0.35 made all three feasible at about the same cost.
REPAIR_SHARE = 0.35


@overload
def refine_routes(
    instance: Instance,
    routes: Sequence[Sequence[int]],
    *,
    deadline: float | None = None,
    depots: None = None,
    report: dict[str, Any] | None = None,
    fleet_only: bool = False,
) -> list[list[int]]: ...


@overload
def refine_routes(
    instance: Instance,
    routes: Sequence[Sequence[int]],
    *,
    deadline: float | None = None,
    depots: Sequence[int],
    report: dict[str, Any] | None = None,
    fleet_only: bool = False,
) -> tuple[list[list[int]], list[int]]: ...


def refine_routes(
    instance: Instance,
    routes: Sequence[Sequence[int]],
    *,
    deadline: float | None = None,
    depots: Sequence[int] | None = None,
    report: dict[str, Any] | None = None,
    fleet_only: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[int]]:
    """Granular local search (relocate, swap, 2-opt, 2-opt*) on routes in instance units.

    Every constraint of the instance is respected by the kernel, with the checker's semantics
    (:mod:`nco.kernels.local_search`): capacity, time windows, backhauls (linehauls first, or
    mixed with the load on board checked along the route), open routes (no return leg paid,
    timed or limited), distance and duration limits. The result's cost is never higher (callers
    still compare with the instance's checker and cost, see :class:`NeuralSolver`). With a
    ``deadline`` (a ``time.perf_counter()`` value) the search runs in slices of
    :data:`LS_SLICE` moves and stops after the slice that passes it.

    Without ``depots`` (single-depot instances) the result is the refined routes; routes are
    never added, so the vehicle count holds.

    With ``depots`` (``depots[k]`` is route k's depot; multi-depot instances must give it,
    ``ValueError`` otherwise) the result is ``(routes, depots)``, the non-empty refined routes
    and each one's depot, for ``Solution.from_routes(instance, routes, depots=depots)``. All
    depots are searched together (:func:`~nco.kernels.local_search.local_search_mdvrp`): a
    route keeps its depot, whose time window and distances apply to it, and customers move
    between the routes of different depots too. With several depots each depot is also offered
    one empty route, a spare vehicle, where the fleet allows one more route there
    (``num_vehicles`` in all, ``vehicle_depots`` per depot), so that customers can move to a
    depot that has no route or whose routes are full; under a deadline the spares are offered
    again after each slice.

    Fleet: when the plan uses more routes than the instance's fleet allows (``num_vehicles`` in
    all, ``vehicle_depots`` per depot), the fleet repair runs first, under the same deadline
    (:func:`~nco.kernels.local_search.repair_fleet`: routes are emptied into the others,
    customers at their cheapest feasible positions, routes of an over-full depot also moved
    to a depot with a vehicle to spare); when the plan still breaks the fleet after the search,
    the repair is tried again on the searched plan (whose moves may have made room) and the
    search rerun, up to :data:`FLEET_ROUNDS` repairs while they remove routes. A ``report``
    dict, when given, receives what the repair did (:func:`_repair_fleet`); it stays empty
    when the plan fits the fleet.

    With ``fleet_only`` only the fleet is repaired: a plan that fits it comes back unchanged,
    and the search runs only between repairs, when a repair alone leaves the fleet broken (its
    moves, which empty routes as they go, make room for the next repair; ``report["searched"]``
    then says so).
    """
    from nco.kernels.local_search import (
        local_search_mdvrp,
        local_search_tsp,
        local_search_vrp,
        neighbour_lists,
    )

    refusal = _refine_refusal(instance)
    if refusal is not None:
        raise ValueError(f"refine: {instance.name!r} is a {instance.variant} instance; {refusal}")
    problem = get_problem(instance.problem)
    nb = neighbour_lists(instance.distance, min(20, max(1, instance.num_nodes - 1)))
    moves = 10_000 if deadline is None else LS_SLICE
    if not instance.has_depot:
        if depots is not None:
            raise ValueError(f"refine: {instance.name!r} is a TSP instance; it has no depots")
        start = np.asarray([v for r in routes for v in r], dtype=np.int64)
        out = _search_until(
            lambda t: local_search_tsp(t, instance.distance, neighbours=nb, max_iterations=moves),
            start,
            deadline,
        )
        return problem.tours_to_routes(out.tolist())
    assert instance.demand is not None and instance.capacity is not None
    args = (
        instance.distance,
        instance.demand,
        float(instance.capacity),
        instance.time_windows,
        instance.service_time,
    )
    variant: dict[str, Any] = {
        "backhaul": instance.backhaul,
        "mixed_backhaul": instance.mixed_backhaul,
        "open_routes": instance.open_routes,
        "max_distance": instance.max_distance,
        "max_duration": instance.max_duration,
        "neighbours": nb,
        "max_iterations": moves,
    }
    if depots is None:
        if instance.num_depots > 1:
            raise ValueError(
                f"refine: {instance.name!r} has {instance.num_depots} depots; "
                "pass each route's depot (depots=)"
            )

        def improve(plan: _Plan) -> _Plan:
            flat = [0]
            for r in plan[0]:
                flat.extend(int(v) for v in r)
                flat.append(0)
            out = _search_until(
                lambda f: local_search_vrp(f, *args, **variant),
                np.asarray(flat, dtype=np.int64),
                deadline,
            )
            return problem.tours_to_routes(out.tolist()), None

        given: _Plan = ([[int(v) for v in r] for r in routes if len(r)], None)
        return _repair_and_search(instance, given, improve, deadline, report, fleet_only)[0]
    if len(depots) != len(routes):
        raise ValueError(f"refine: {len(depots)} depots given for {len(routes)} routes")
    nd = instance.num_depots
    per_depot = instance.vehicles_per_depot

    def search(plan: tuple[list[list[int]], list[int]]) -> tuple[list[list[int]], list[int]]:
        cur, deps = [list(r) for r in plan[0]], list(plan[1])
        if nd > 1:  # one spare vehicle per depot where the fleet allows one more route
            used = np.bincount(np.asarray(deps, dtype=np.int64), minlength=nd)
            for d in range(nd):
                if instance.num_vehicles is not None and len(cur) >= instance.num_vehicles:
                    break
                if per_depot is None or used[d] < per_depot[d]:
                    cur.append([])
                    deps.append(d)
        out = local_search_mdvrp(cur, deps, *args, num_depots=nd, **variant)
        keep = [k for k, r in enumerate(out) if r]
        return [out[k] for k in keep], [deps[k] for k in keep]

    def improve_md(plan: _Plan) -> _Plan:
        assert plan[1] is not None
        return _search_until(search, (plan[0], plan[1]), deadline, same=lambda a, b: a == b)

    plan: _Plan = (
        [[int(v) for v in r] for r in routes if len(r)],
        [int(d) for d, r in zip(depots, routes) if len(r)],
    )
    refined, deps = _repair_and_search(instance, plan, improve_md, deadline, report, fleet_only)
    assert deps is not None
    return refined, deps


#: Most fleet repairs in one :func:`refine_routes` call (the first before the search, each
#: further one after a search that left the fleet broken, while a repair removes routes).
FLEET_ROUNDS = 3


def fleet_limited(instance: Instance) -> bool:
    """Whether the instance limits its routes (``num_vehicles``, ``vehicle_depots``): then a
    plan over the fleet goes through the fleet repair, which uses the time it is given."""
    return instance.has_depot and (
        instance.num_vehicles is not None or instance.vehicle_depots is not None
    )


def _fleet_excess(instance: Instance, routes: Sequence[Sequence[int]], depots: Any) -> int:
    """Routes over the fleet: the non-empty routes beyond ``num_vehicles``, plus, at each depot,
    those beyond the vehicles based there (0: the plan fits the fleet; ``depots`` None: every
    route from depot 0)."""
    deps = [int(d) for d, r in zip(depots or [0] * len(routes), routes) if len(r)]
    over = 0 if instance.num_vehicles is None else max(0, len(deps) - instance.num_vehicles)
    per_depot = instance.vehicles_per_depot
    if per_depot is not None:
        used = np.bincount(np.asarray(deps, dtype=np.int64), minlength=instance.num_depots)
        over += int(np.maximum(used - per_depot, 0).sum())
    return over


def _fleet_key(sol: Solution) -> tuple[bool, int, float]:
    """:func:`_key` with the routes over the fleet between feasibility and cost: of two
    infeasible plans, the one nearer to fitting the fleet first."""
    feasible_first, cost = _key(sol)
    return feasible_first, _fleet_excess(sol.instance, sol.routes, sol.route_depots), cost


def _repair_fleet(
    instance: Instance, plan: _Plan, deadline: float | None, report: dict[str, Any] | None = None
) -> _Plan:
    """The fleet repair (:func:`~nco.kernels.local_search.repair_fleet`) of a plan (routes,
    depots or None for one depot) in instance units, under ``deadline``. ``report`` (when
    given) is updated: ``routes_before`` (kept from a first call) and ``routes_after``,
    ``excess_before`` / ``excess_after`` (:func:`_fleet_excess`), ``fleet`` (``num_vehicles``),
    ``vehicles_per_depot``, ``repairs`` (calls) and ``seconds`` (summed)."""
    from nco.kernels.local_search import repair_fleet

    assert instance.demand is not None and instance.capacity is not None
    t = time.perf_counter()
    routes, deps = plan
    per_depot = instance.vehicles_per_depot
    out, out_deps = repair_fleet(
        [list(r) for r in routes],
        [0] * len(routes) if deps is None else list(deps),
        instance.distance,
        instance.demand,
        float(instance.capacity),
        instance.time_windows,
        instance.service_time,
        num_depots=instance.num_depots,
        num_vehicles=instance.num_vehicles,
        vehicles_per_depot=per_depot,
        backhaul=instance.backhaul,
        mixed_backhaul=instance.mixed_backhaul,
        open_routes=instance.open_routes,
        max_distance=instance.max_distance,
        max_duration=instance.max_duration,
        deadline=deadline,
    )
    repaired: _Plan = (out, None if deps is None else out_deps)
    if report is not None:
        report.setdefault("routes_before", len(routes))
        report.setdefault("excess_before", _fleet_excess(instance, routes, deps))
        report["routes_after"] = len(out)
        report["excess_after"] = _fleet_excess(instance, *repaired)
        report["fleet"] = instance.num_vehicles
        report["vehicles_per_depot"] = None if per_depot is None else per_depot.tolist()
        report["repairs"] = report.get("repairs", 0) + 1
        report["seconds"] = report.get("seconds", 0.0) + time.perf_counter() - t
    return repaired


def _repair_and_search(
    instance: Instance,
    plan: _Plan,
    improve: Callable[[_Plan], _Plan],
    deadline: float | None,
    report: dict[str, Any] | None,
    fleet_only: bool = False,
) -> _Plan:
    """``improve`` (the local search) with the fleet repair before it when the plan breaks the
    fleet, and again after it while the fleet is still broken; with ``fleet_only`` the search
    runs only between repairs (see :func:`refine_routes`)."""
    if not fleet_limited(instance) or _fleet_excess(instance, *plan) == 0:
        return plan if fleet_only else improve(plan)
    rep: dict[str, Any] = {} if report is None else report

    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def repair(plan: _Plan) -> _Plan:
        # at most half the time left: its last attempts, which mostly fail, are slow, and the
        # search empties routes faster
        half = None if deadline is None else (time.perf_counter() + deadline) / 2
        return _repair_fleet(instance, plan, half, rep)

    plan = repair(plan)
    if not fleet_only:
        plan = improve(plan)
    for _ in range(FLEET_ROUNDS - 1):
        excess = _fleet_excess(instance, *plan)
        if excess == 0 or late():
            break
        if fleet_only:  # make room, then repair again
            plan = improve(plan)
            rep["searched"] = True
            if _fleet_excess(instance, *plan) == 0 or late():
                break
            before = _fleet_excess(instance, *plan)
            plan = repair(plan)
            if _fleet_excess(instance, *plan) >= before and before >= excess:
                break  # neither the search nor the repair removed a route
            continue
        repaired = repair(plan)
        if _fleet_excess(instance, *repaired) >= excess:
            break
        plan = improve(repaired)
    # what the search kept: it never adds routes, but it may empty some
    rep["routes_after"] = len(plan[0])
    rep["excess_after"] = _fleet_excess(instance, *plan)
    return plan


def _search_until(
    search: Callable[[Any], Any],
    start: Any,
    deadline: float | None,
    same: Callable[[Any, Any], bool] = np.array_equal,
) -> Any:
    """Apply ``search`` once (no deadline) or repeatedly until it changes nothing (``same``
    as its input) or the deadline has passed."""
    cur = start
    while True:
        out = search(cur)
        if deadline is None or same(out, cur) or time.perf_counter() > deadline:
            return out
        cur = out


# ---------------------------------------------------------------------------------- neural
class NeuralSolver:
    """A trained construction policy as a :class:`~nco.baselines.Solver`.

    Parameters
    ----------
    model : checkpoint path or run directory, shipped name (``"cvrp50"``), a loaded
        ``(policy, info)`` pair, or None (the shipped checkpoint of the instance's problem with
        the nearest training size, chosen per instance).
    strategy : decoding strategy (see :data:`nco.policies.decoding.STRATEGIES`).
    augment : 1 or 8 (dihedral augmentation).
    refine : improve the constructed solution with local search (never returns a worse one).
    device : ``"cpu"``, ``"cuda"`` or None (CUDA when available).
    batch_size : instances per forward pass in :meth:`solve_many`.
    num_samples : samples (per start) for the sampling strategies.
    beam_width : width of ``beam_search``.
    num_starts : POMO starts per transform; None = planned per instance size
        (:func:`~nco.policies.decoding.plan_decode`: every customer up to ~330 nodes, fewer,
        randomly chosen, above, so that a 1000-customer instance decodes in seconds).
    memory_budget : bytes of decode state alive at once (rows are decoded in chunks that fit);
        default :data:`~nco.policies.decoding.DEFAULT_MEMORY_BUDGET` (1 GiB).
    candidates : k-nearest candidate restriction of the decoder (0 = off).
    polish : with ``refine``, how many of the best distinct constructed solutions are refined
        (the local search's time is shared among them; the best refined one is returned).

    With a ``time_limit`` the construction runs in rounds (one or more dihedral transforms
    each): the rows of each round are chosen from the measured cost of the earlier rounds, a
    round that would pass the limit is stopped, and the best plan so far is returned (or, when
    not one rollout fits, the nearest-neighbour plan, marked in ``metadata``). With ``refine`` the
    construction gets :data:`REFINE_SPLIT` of the limit and the local search the rest. The call
    returns within ``time_limit`` plus :func:`~nco.baselines.time_tolerance`.

    Variants (``instance.problem == "mtvrp"``: backhauls, open routes, route limits, time
    windows, several depots) are solved by the multi-variant checkpoints (``mtvrp50``,
    ``mtvrp50moe``), converted by the problem's ``from_instance``; a multi-depot plan keeps each
    route's depot (``Solution.route_depots``). An mtvrp checkpoint also takes CVRP and CVRPTW
    instances (its CVRP and VRPTW variants); a checkpoint of another problem refuses variant
    instances (:class:`ModelMismatchError`). A variant with an attribute none of the
    checkpoint's training variants had (for ``mtvrp50``: mixed backhauls, several depots) is
    solved zero-shot with a warning. An instance with an attribute the network
    cannot represent (a duration limit with service times but no time windows,
    ``VEHICLES_MAX_DURATION``) is refused with an :class:`~nco.baselines.UnsupportedProblemError`
    naming it (:meth:`refusal` says so without solving). The vehicle counts of a file (in all
    and per depot) limit the routes the decoder may start (where the fleet can still be met);
    a plan that still breaks them goes through the fleet repair
    (``metadata["fleet_repair"]``, see :func:`refine_routes`), and the checker has the last
    word.

    ``refine=True`` refines every variant: the local search models all their constraints
    (backhauls, mixed backhauls, open routes, distance and duration limits, time windows) and
    searches a multi-depot plan across its depots, each route keeping its depot (see
    :func:`refine_routes`). ``metadata["refine_skipped"]`` says why a refinement was skipped
    (the construction used the whole time limit). Refined plans are re-checked and kept only
    when no worse (feasibility first, then cost) than the constructed one.

    Raises
    ------
    ModelNotFoundError
        (a ``FileNotFoundError``) for an unknown path or name; the message lists what is shipped.
    """

    name = "neural"

    def __init__(
        self,
        model: ModelSpec = None,
        *,
        strategy: str = "multistart_greedy",
        augment: int = 8,
        refine: bool = False,
        device: str | None = None,
        batch_size: int = 64,
        num_samples: int = 1,
        beam_width: int = 1,
        num_starts: int | None = None,
        memory_budget: int | None = None,
        candidates: int = 0,
        polish: int = 1,
    ) -> None:
        from nco.policies.decoding import DEFAULT_MEMORY_BUDGET, DecodeConfig

        if batch_size < 1:
            raise ValueError(f"neural: batch_size must be >= 1, got {batch_size}")
        if num_starts is not None and num_starts < 1:
            raise ValueError(f"neural: num_starts must be >= 1, got {num_starts}")
        if memory_budget is not None and memory_budget < 1:
            raise ValueError(f"neural: memory_budget must be >= 1 byte, got {memory_budget}")
        if polish < 1:
            raise ValueError(f"neural: polish must be >= 1, got {polish}")
        self.polish = int(polish)
        self.num_starts = num_starts
        self.memory_budget = int(memory_budget or DEFAULT_MEMORY_BUDGET)
        # validates strategy, augment, num_samples and beam_width
        self._decode = DecodeConfig(
            strategy=strategy,
            augment=augment,
            num_samples=num_samples,
            beam_width=beam_width,
            select_best=False,
            candidates=candidates,
            keep_top=KEEP_CANDIDATES,
        )
        self.strategy = strategy
        self.augment = augment
        self.refine = bool(refine)
        self.batch_size = int(batch_size)
        self._envs: dict[tuple[str, int, str], EnvBase] = {}
        self._fixed: tuple[AttentionPolicy, dict[str, Any]] | None = None
        self._prepared: set[str] = set()
        self._quiet = False
        self._warned: set[tuple[str, int]] = set()
        self._warned_variants: set[tuple[str, str]] = set()
        self._source: str | None = None
        if isinstance(model, tuple):
            policy, info = model
            if "problem" not in info:
                raise ValueError("neural: the info of a loaded model must hold its 'problem'")
            if device is not None:
                policy = policy.to(_auto_device(device))
            self.device = str(next(policy.parameters()).device)
            self._fixed = (policy.eval(), dict(info))
            self._source = str(info.get("source", "<loaded model>"))
        else:
            self.device = _auto_device(device)
            if model is not None:
                path = resolve_checkpoint(model)
                self._fixed = load_model_cached(path, device=self.device)
                self._source = str(path)

    def __repr__(self) -> str:
        model = self._source if self._source is not None else "auto"
        return (
            f"NeuralSolver(model={model!r}, strategy={self.strategy!r}, augment={self.augment}, "
            f"refine={self.refine}, device={self.device!r})"
        )

    @property
    def info(self) -> dict[str, Any] | None:
        """The fixed model's checkpoint description (None when chosen per instance)."""
        return None if self._fixed is None else dict(self._fixed[1])

    def supports(self, problem: str) -> bool:
        """The fixed model's problem (and the problems its problem accepts, e.g. an mtvrp
        checkpoint takes CVRP and CVRPTW); with ``model=None`` every registered problem
        (solving raises :class:`ModelNotFoundError` when no checkpoint is shipped for it)."""
        if self._fixed is not None:
            trained = str(self._fixed[1]["problem"])
            return problem == trained or problem in get_problem(trained).accepts
        return problem in available()

    def refusal(self, instance: Instance) -> str | None:
        """Why the network cannot represent ``instance`` (naming the attribute, e.g.
        ``VEHICLES_MAX_DURATION``), or None when it can. Loads the model (checkpoint choice
        and problem check); raises as :meth:`solve` for a missing or mismatched model."""
        from nco.envs import InstanceError

        _, _, info = self._model(instance)
        try:
            get_problem(info["problem"]).from_instance(instance)
        except InstanceError as err:
            return f"the network cannot represent {instance.name!r} ({instance.variant}): {err}"
        return None

    # ------------------------------------------------------------------ model per instance
    def _model(self, instance: Instance) -> tuple[str, AttentionPolicy, dict[str, Any]]:
        if self._fixed is not None:
            policy, info = self._fixed
            source = self._source or "<loaded model>"
        else:
            path = select_checkpoint(instance.problem, instance.num_customers)
            policy, info = load_model_cached(path, device=self.device)
            source = str(path)
        trained = str(info["problem"])
        if instance.problem != trained and instance.problem not in get_problem(trained).accepts:
            raise ModelMismatchError(
                source, trained, instance.name, instance.problem, instance.variant
            )
        return source, policy, info

    def _warn(self, source: str, info: dict[str, Any], instance: Instance) -> None:
        """Warn once per checkpoint and size (far outside its training sizes) and per
        checkpoint and variant (outside its training variants)."""
        if self._quiet:
            return
        key = (source, instance.num_customers)
        if key not in self._warned:
            self._warned.add(key)
            _warn_size(source, info, instance)
        vkey = (source, ",".join(_untrained_attributes(info, instance)))
        if vkey not in self._warned_variants:
            self._warned_variants.add(vkey)
            _warn_variant(source, info, instance)

    def prepare(self, instance: Instance) -> None:
        """Load the model for ``instance`` and solve one tiny generated instance of its problem
        once, so one-time costs (checkpoint reading, numba compilation or cache loading, torch
        warm-up) are not part of a later timed solve, and measure the cost of a decoding step at
        the instance's size (:meth:`rollout_time`; once per size and process)."""
        self._quiet = True  # set-up only: the solve itself warns about the size
        try:
            source, _, info = self._model(instance)
            if source not in self._prepared:
                # the model's problem: an mtvrp network also solves CVRP and CVRPTW files
                problem = get_problem(info["problem"])
                td = problem.generator(num_loc=5)(1, seed=0)
                self.solve_many([problem.to_instance(td[0], name="warm-up")])
                self._prepared.add(source)
            self._calibrate(instance)
        finally:
            self._quiet = False

    def _calibrate(self, instance: Instance) -> tuple[float, float]:
        """(encoder seconds, seconds per step of one row) at this instance's size on this
        device and thread count, measured once per process on a generated instance of the
        same size: a decode stopped at its first deadline check times the encoder, one stopped
        a few dozen steps later the steps."""
        import torch

        from nco.policies.decoding import DecodeTimeout, estimated_steps

        source, policy, info = self._model(instance)
        key = self._cost_key(source, instance.num_nodes)
        if key in _STEP_COSTS:
            return _STEP_COSTS[key]
        problem = get_problem(info["problem"])
        td = problem.generator(num_loc=instance.num_customers)(1, seed=0).to(self.device)
        env = self._env(problem.name, instance.num_customers)
        cfg = self._decode
        single: dict[str, Any] = {"augment": 1}
        if cfg.strategy.startswith("multistart"):
            single["num_starts"] = 1
        one = dataclasses.replace(cfg, **single)
        if cfg.strategy == "beam_search":
            one = dataclasses.replace(one, beam_width=1)

        def stopped_after(extra: float) -> tuple[float, int]:
            t = time.perf_counter()
            try:
                with torch.inference_mode():
                    policy(td, env, dataclasses.replace(one, deadline=t + extra))
            except DecodeTimeout as err:
                return time.perf_counter() - t, err.steps
            return time.perf_counter() - t, estimated_steps(instance.num_nodes)

        stopped_after(0.0)  # first call at a new size: allocations
        e1, k1 = stopped_after(0.0)
        e2, k2 = stopped_after(e1 + 0.03)
        step = (e2 - e1) / (k2 - k1) if k2 > k1 else STEP_OVERHEAD
        step = max(step, 1e-6)
        enc = max(e1 - k1 * step, 1e-6)
        _STEP_COSTS[key] = (enc, step)
        return enc, step

    def rollout_time(self, instance: Instance) -> float | None:
        """Estimated seconds of one row's construction (encoder and every step) for
        ``instance`` on this device and thread count, or None when :meth:`prepare` has not
        measured this size."""
        from nco.policies.decoding import estimated_steps

        measured = _STEP_COSTS.get(self._cost_key(self._model(instance)[0], instance.num_nodes))
        if measured is None:
            return None
        enc, step = measured
        return enc + step * estimated_steps(instance.num_nodes)

    def _cost_key(self, source: str, num_nodes: int) -> tuple[str, str, int, int]:
        """The :data:`_STEP_COSTS` key of a model at a size on this device and thread count."""
        import torch

        return (source, self.device, torch.get_num_threads(), num_nodes)

    def _env(self, problem: str, num_loc: int) -> EnvBase:
        key = (problem, num_loc, self.device)
        if key not in self._envs:
            self._envs[key] = get_problem(problem).make_env(num_loc=num_loc, device=self.device)
        return self._envs[key]

    def _plan(self, num_nodes: int, num_candidates: int) -> DecodePlan:
        """The decode plan of this solver's options for one instance size."""
        from nco.policies.decoding import plan_decode

        cfg = self._decode
        multi = cfg.strategy.startswith("multistart")
        return plan_decode(
            num_nodes,
            num_candidates if multi else 1,
            augment=cfg.augment,
            num_starts=self.num_starts if multi else 1,
            num_samples=cfg.num_samples if multi else 1,
            memory_budget=self.memory_budget,
        )

    def _config(self, plan: DecodePlan, num_candidates: int, seed: int) -> DecodeConfig:
        """The DecodeConfig of one decode under ``plan``."""
        cfg = self._decode
        over: dict[str, Any] = {"seed": int(seed), "max_rows": plan.max_rows}
        if cfg.strategy.startswith("multistart"):
            over["num_starts"] = plan.num_starts
            over["augment"] = plan.augment
            # a subset of starts is drawn at random: the first ones in file order may all lie in
            # one region of the instance
            over["start_choice"] = "random" if plan.num_starts < num_candidates else "first"
        return dataclasses.replace(cfg, **over)

    def _rows(self, cfg: DecodeConfig) -> int:
        """Decode rows per instance and transform under ``cfg``."""
        if cfg.strategy.startswith("multistart"):
            assert cfg.num_starts is not None  # _config sets it for the multistart strategies
            return int(cfg.num_starts) * (
                cfg.num_samples if cfg.strategy.endswith("sampling") else 1
            )
        if cfg.strategy == "beam_search":
            return cfg.beam_width
        return cfg.num_samples if cfg.strategy == "sampling" else 1

    # ------------------------------------------------------------------ solving
    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float = math.inf,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
        initial_depots: Sequence[int] | None = None,
    ) -> Solution:
        """Construct (and optionally refine) a solution; see :class:`~nco.baselines.Solver`.

        ``time_limit`` (``math.inf`` = no limit) bounds the whole call: the construction runs in rounds
        that fit it (see the class) and the refinement is skipped when no time is left.
        ``initial_routes``, when given and better, are returned instead
        (``metadata["returned_initial"]``); ``initial_depots[k]`` is initial route k's depot
        (multi-depot instances). ``seed`` seeds the sampling strategies and the choice of
        starts when fewer than all are decoded.
        """
        return self.solve_many(
            [instance],
            time_limit=time_limit,
            seed=seed,
            initial_routes=[initial_routes],
            initial_depots=[initial_depots],
        )[0]

    def solve_many(
        self,
        instances: Sequence[Instance],
        *,
        time_limit: float = math.inf,
        seed: int = 0,
        initial_routes: Sequence[list[list[int]] | None] | None = None,
        initial_depots: Sequence[Sequence[int] | None] | None = None,
    ) -> list[Solution]:
        """Solve many instances of one problem with batched forward passes.

        Instances are grouped by checkpoint, node count and number of depots (one forward pass
        per group and ``batch_size`` chunk); results come back in input order. Each solution's
        ``runtime`` is its share of its group's decoding time plus its own refinement time
        (``metadata["batch_runtime"]`` holds the group's decoding time). ``initial_depots``
        (one entry per instance, parallel to ``initial_routes``) gives the initial routes'
        depots of multi-depot instances.

        Raises :class:`~nco.baselines.UnsupportedProblemError` for an instance the network
        cannot represent (see :meth:`refusal`).
        """
        import torch

        t0 = time.perf_counter()
        if time_limit is None:  # how callers said "no limit" before the protocol's float
            time_limit = math.inf
        limited = math.isfinite(time_limit)
        insts = list(instances)
        if not insts:
            return []
        problems = sorted({i.problem for i in insts})
        if len(problems) > 1:
            raise ValueError(
                f"neural: a batch must hold instances of one problem, got {', '.join(problems)}"
            )
        inits = list(initial_routes) if initial_routes is not None else [None] * len(insts)
        if len(inits) != len(insts):
            raise ValueError("neural: initial_routes must have one entry per instance")
        init_deps = list(initial_depots) if initial_depots is not None else [None] * len(insts)
        if len(init_deps) != len(insts):
            raise ValueError("neural: initial_depots must have one entry per instance")
        models: list[tuple[str, AttentionPolicy, dict[str, Any]]] = [self._model(i) for i in insts]
        # the problem the network was trained on (mtvrp also decodes CVRP and CVRPTW instances)
        trained = sorted({str(m[2]["problem"]) for m in models})
        if len(trained) > 1:
            raise ValueError(
                f"neural: a batch needs checkpoints of one problem, got {', '.join(trained)}"
            )
        problem = get_problem(trained[0])
        tds = [_to_tensors(problem, i, self.device) for i in insts]
        for inst, (source, _, info) in zip(insts, models):
            self._warn(source, info, inst)
        groups: dict[tuple[str, int, int, tuple[str, ...]], list[int]] = {}
        for k, (inst, td) in enumerate(zip(insts, tds)):
            gkey = (models[k][0], inst.num_nodes, inst.num_depots, tuple(sorted(td.keys())))
            groups.setdefault(gkey, []).append(k)

        # the best constructed plan first, then (refine with polish > 1) the next best distinct,
        # each as (routes, route depots or None)
        best_routes: list[list[_Plan]] = [[] for _ in insts]
        # a variant the local search does not model is not refined: its construction gets the
        # whole time limit
        refining = self.refine and any(_refine_refusal(i) is None for i in insts)
        top = self.polish if refining else 1
        share: list[float] = [0.0] * len(insts)
        batch_time: list[float] = [0.0] * len(insts)
        deadline = None
        if limited:
            frac = REFINE_SPLIT if refining else 1.0 - FINISH_RESERVE
            if any(fleet_limited(i) for i in insts):
                # time for the fleet repair of a plan that breaks it
                frac = min(frac, 1.0 - FINISH_RESERVE - REPAIR_SHARE)
            deadline = t0 + time_limit * frac
        decode_meta: list[dict[str, Any]] = [{} for _ in insts]
        for idx in groups.values():
            tg = time.perf_counter()
            _, policy, _ = models[idx[0]]
            inst0 = insts[idx[0]]
            env = self._env(problem.name, inst0.num_customers)
            cands = problem.num_starts(tds[idx[0]])
            plan = self._plan(inst0.num_nodes, cands)
            gcfg = self._config(plan, cands, seed)
            rows = self._rows(gcfg)
            step = max(1, min(self.batch_size, plan.max_rows // rows))
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                td = torch.cat([tds[k] for k in chunk], 0)
                found: np.ndarray | None
                if deadline is None:
                    found, info_k = self._decode_all(policy, td, env, gcfg, plan)
                else:
                    found, info_k = self._decode_rounds(
                        policy, td, env, gcfg, plan, deadline, models[idx[0]][0]
                    )
                for j, k in enumerate(chunk):
                    decode_meta[k] = dict(info_k)
                    if found is None:
                        best_routes[k] = [_fallback_routes(insts[k])]
                        continue
                    best_routes[k] = [
                        _split_tour(problem, insts[k], found[j, m].tolist())
                        for m in _best_indices(insts[k], found[j], top)
                    ]
            dt = time.perf_counter() - tg
            for k in idx:
                share[k] = dt / len(idx)
                batch_time[k] = dt
        out = []
        for k, inst in enumerate(insts):
            tk = time.perf_counter()
            source, _, info = models[k]
            meta: dict[str, Any] = {
                "model": source,
                "model_problem": info["problem"],
                "model_size": info.get("size"),
                "strategy": self.strategy,
                "augment": self.augment,
                "device": self.device,
                "seed": seed,
                "time_limit": time_limit,
                "refine": self.refine,
                "batch_runtime": batch_time[k],
                "embedded_by_mds": inst.coords is None,
                **decode_meta[k],
            }
            built = [
                Solution.from_routes(inst, r, depots=dep, solver=self.name)
                for r, dep in best_routes[k]
            ]
            sol = built[0]
            meta["construction_cost"] = sol.cost
            meta["construction_routes"] = len(sol.routes)
            if self.refine:
                ls_end = None
                if limited:
                    ls_end = t0 + time_limit * (1.0 - FINISH_RESERVE)
                refusal = _refine_refusal(inst)
                if refusal is not None:
                    meta["refine_skipped"] = refusal
                elif ls_end is not None and time.perf_counter() >= ls_end:
                    meta["refine_skipped"] = f"time limit {time_limit:g} s used by construction"
                    if _fleet_excess(inst, sol.routes, sol.route_depots):
                        meta["fleet_repair"] = {"skipped": meta["refine_skipped"]}
                else:
                    refined_costs = []
                    best_refined: Solution | None = None
                    best_report: dict[str, Any] = {}
                    for c, cand in enumerate(built):
                        end = None
                        if ls_end is not None:
                            left = ls_end - time.perf_counter()
                            if left <= 0:
                                break
                            end = time.perf_counter() + left / (len(built) - c)
                        deps: list[int] | None = None
                        report: dict[str, Any] = {}  # the fleet repair's, if it runs
                        extra: dict[str, Any] = {}
                        if _fleet_excess(inst, cand.routes, cand.route_depots):
                            extra["report"] = report
                        if cand.route_depots is None:
                            refined = refine_routes(inst, cand.routes, deadline=end, **extra)
                        else:  # several depots: each refined route comes with its depot
                            refined, deps = refine_routes(
                                inst, cand.routes, deadline=end, depots=cand.route_depots, **extra
                            )
                        r = Solution.from_routes(inst, refined, depots=deps, solver=self.name)
                        refined_costs.append(r.cost)
                        if best_refined is None or _fleet_key(r) < _fleet_key(best_refined):
                            best_refined, best_report = r, report
                    if best_refined is not None:
                        meta["refined_cost"] = best_refined.cost
                        meta["polished"] = len(refined_costs)
                        # never worse: feasibility first, then the routes over the fleet,
                        # then cost in instance units
                        meta["refine_kept"] = _fleet_key(best_refined) <= _fleet_key(sol)
                        if best_report:
                            best_report["kept"] = meta["refine_kept"]
                            best_report["feasible"] = best_refined.feasible
                            meta["fleet_repair"] = best_report
                        if meta["refine_kept"]:
                            sol = best_refined
            elif sol.violations and all(v.kind == "vehicles" for v in sol.violations):
                # only the fleet is broken: repair it (the search only between repairs)
                end = t0 + time_limit * (1.0 - FINISH_RESERVE) if limited else None
                if end is not None and time.perf_counter() >= end:
                    meta["fleet_repair"] = {
                        "skipped": f"time limit {time_limit:g} s used by construction"
                    }
                else:
                    report = {}
                    if sol.route_depots is None:
                        fleet_plan: _Plan = (
                            refine_routes(
                                inst, sol.routes, deadline=end, report=report, fleet_only=True
                            ),
                            None,
                        )
                    else:
                        fleet_plan = refine_routes(
                            inst,
                            sol.routes,
                            deadline=end,
                            depots=sol.route_depots,
                            report=report,
                            fleet_only=True,
                        )
                    fixed = Solution.from_routes(
                        inst, fleet_plan[0], depots=fleet_plan[1], solver=self.name
                    )
                    # never worse: feasibility, the routes over the fleet, then cost
                    report["kept"] = _fleet_key(fixed) <= _fleet_key(sol)
                    report["feasible"] = fixed.feasible
                    report["cost_before"], report["cost_after"] = sol.cost, fixed.cost
                    meta["fleet_repair"] = report
                    if report["kept"]:
                        sol = fixed
            meta["returned_initial"] = False
            if inits[k]:
                deps_k = init_deps[k]
                given = Solution.from_routes(
                    inst,
                    inits[k] or [],
                    depots=None if deps_k is None else list(deps_k),
                    solver=self.name,
                )
                if _key(given) < _key(sol):
                    sol = given
                    meta["returned_initial"] = True
            runtime = share[k] + (time.perf_counter() - tk)
            if len(insts) == 1:
                runtime = time.perf_counter() - t0
            out.append(
                Solution.from_routes(
                    inst,
                    sol.routes,
                    depots=sol.route_depots,
                    solver=self.name,
                    runtime=runtime,
                    metadata=meta,
                )
            )
        return out

    def _decode_all(
        self, policy: AttentionPolicy, td: Any, env: EnvBase, cfg: DecodeConfig, plan: DecodePlan
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One decode of the whole plan -> candidate actions [B, K, T] and what was done."""
        import torch

        with torch.inference_mode():
            roll = policy(td, env, cfg)
        assert roll.actions is not None
        info = {"num_starts": self._rows(cfg), "transforms": cfg.augment, "rounds": 1}
        return roll.actions.detach().cpu().numpy().astype(np.int64), info

    def _decode_rounds(
        self,
        policy: AttentionPolicy,
        td: Any,
        env: EnvBase,
        cfg: DecodeConfig,
        plan: DecodePlan,
        deadline: float,
        source: str,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Time-limited construction: rounds of transforms until the plan or the time is used.

        Round k decodes transforms ``first..first+g-1`` with the rows that the time left allows
        (spread evenly over the transforms still to do), estimated from the measured cost of
        the earlier rounds (before the first: what :meth:`prepare` measured for ``source`` at
        this size, else a prior); a round still running at ``deadline``
        is dropped. Returns None when not even the first round finished.
        """
        import torch

        from nco.policies.decoding import DecodeTimeout

        b, n = td.batch_size[0], int(td["locs"].shape[-2])
        multi = cfg.strategy.startswith("multistart")
        want = self._rows(cfg)
        steps = plan.est_steps
        rate, overhead = PRIOR_RATE, STEP_OVERHEAD
        measured = _STEP_COSTS.get(self._cost_key(source, n))
        kept: list[np.ndarray] = []
        done_t, rows_done, rounds, stopped = 0, 0, 0, None
        total = cfg.augment
        enc = ENCODER_PRIOR * len(policy.encoder.layers) * n * n * b  # per transform
        if measured is not None:
            enc, overhead = measured[0] * b, measured[1]
        while done_t < total:
            left = deadline - time.perf_counter()
            todo = total - done_t
            if left <= enc:
                stopped = f"time limit: {done_t} of {total} transforms decoded"
                break
            g, afford = _round_plan(
                left, todo, want, enc=enc, steps=steps, overhead=overhead, rate=rate,
                rows_scale=b * n, first=not rounds,
            )  # fmt: skip
            if not multi:
                afford = want if afford >= want else (0 if kept else want)
            rows = min(want, afford)
            if rows < 1:
                if kept:
                    stopped = f"time limit: {done_t} of {total} transforms decoded"
                    break
                rows = 1  # try one row; the deadline guards it
            assert cfg.seed is not None  # _config sets it
            over: dict[str, Any] = {
                "augment": g,
                "first_transform": done_t,
                "seed": int(cfg.seed) + 7919 * rounds,
                "deadline": deadline,
            }
            if multi:
                over["num_starts"] = rows
                if rows < want:
                    over["start_choice"] = "random"
            rcfg = dataclasses.replace(cfg, **over)
            tr = time.perf_counter()
            try:
                with torch.inference_mode():
                    roll = policy(td, env, rcfg)
            except DecodeTimeout:
                stopped = f"time limit: round {rounds + 1} stopped at the deadline"
                break
            dt = time.perf_counter() - tr
            assert roll.actions is not None
            t_real = int(roll.actions.shape[-1])
            steps = max(steps, t_real) if rounds == 0 else t_real
            # time = g * enc + t_real * (overhead + b * g * rows * n / rate): a round of a few
            # rows measures the overhead, a larger one the rate
            busy = dt - g * enc
            work = b * g * rows * n
            if g * rows <= 4:
                overhead = max(busy / t_real, 1e-5)
            elif busy - t_real * overhead > 0:
                rate = work * t_real / (busy - t_real * overhead)
            kept.append(roll.actions.detach().cpu().numpy().astype(np.int64))
            rows_done += g * rows
            done_t += g
            rounds += 1
        info: dict[str, Any] = {
            "num_starts": rows_done // max(1, done_t),
            "transforms": done_t,
            "rounds": rounds,
        }
        if stopped:
            info["construction_stopped"] = stopped
        if not kept:
            info["construction_stopped"] = "time limit: no rollout finished; nearest-neighbour plan"
            return None, info
        tmax = max(k.shape[-1] for k in kept)
        padded = [
            np.concatenate([k, np.repeat(k[..., -1:], tmax - k.shape[-1], -1)], -1) for k in kept
        ]
        return np.concatenate(padded, 1), info


def _round_plan(
    left: float,
    todo: int,
    want: int,
    *,
    enc: float,
    steps: int,
    overhead: float,
    rate: float,
    rows_scale: int,
    first: bool,
) -> tuple[int, int]:
    """(transforms g, rows per transform) of the next round of a time-limited construction.

    A round of g transforms and r rows costs ``g * enc + steps * (overhead + g * r * rows_scale
    / rate)`` seconds. The first round decodes one transform in its share of the time (nothing
    is measured yet and its encoder runs before any deadline check); later rounds take the g
    that decodes the most rows (at most ``want`` per transform) in their share of ``left``
    (``g / todo`` of it, or all of it when that share fits no row). Rows < 1: nothing fits.
    """

    def rows(g: int, budget: float) -> int:
        return int(((budget - g * enc) / steps - overhead) * rate / (rows_scale * g))

    if first:
        return 1, min(want, rows(1, left / todo))
    best = (1, min(want, rows(1, left / todo)))
    for g in range(1, todo + 1):
        r = rows(g, left * g / todo)
        if r < 1:
            r = rows(g, left)
        r = min(want, r)
        if r >= 1 and g * r >= best[0] * max(best[1], 0):
            best = (g, r)
    return best


#: An instance this many times larger (or smaller) than a checkpoint's training sizes gets a
#: warning: quality drops quickly outside them (a CVRPTW50 network on Solomon's 100 customers:
#: 44.5% above the optimum).
SIZE_WARNING_FACTOR = 2.0


def _warn_size(source: str, info: dict[str, Any], instance: Instance) -> None:
    """Warn once per checkpoint and size when ``instance`` is far outside its training sizes."""
    import warnings

    lo, hi = trained_sizes(info)
    if not hi:
        return
    n = instance.num_customers
    if lo / SIZE_WARNING_FACTOR <= n <= hi * SIZE_WARNING_FACTOR:
        return
    trained = f"{lo}-{hi}" if lo != hi else f"{hi}"
    warnings.warn(
        f"neural: {Path(source).stem} was trained on {trained} "
        f"{'customers' if instance.has_depot else 'cities'}; {instance.name!r} has {n}: expect a "
        "larger gap (pass model= a checkpoint trained nearer this size, or refine=True)",
        UserWarning,
        stacklevel=4,
    )


#: Attribute names of the variant flags (O, B, L, TW, M, MD), for the zero-shot warning.
_ATTRIBUTES = (
    "open routes (O)",
    "backhauls (B)",
    "route limits (L)",
    "time windows (TW)",
    "mixed backhauls (M)",
    "several depots (MD)",
)


def _untrained_attributes(info: dict[str, Any], instance: Instance) -> list[str]:
    """The attributes of ``instance``'s variant that none of the checkpoint's training
    variants (``train.variants`` in its description) has; empty when it lists none."""
    from nco.envs.mtvrp import VARIANTS

    trained = [v for v in (info.get("train") or {}).get("variants") or () if v in VARIANTS]
    have = VARIANTS.get(instance.variant)
    if not trained or have is None:
        return []
    seen = [any(VARIANTS[v][i] for v in trained) for i in range(len(_ATTRIBUTES))]
    return [a for a, h, s in zip(_ATTRIBUTES, have, seen) if h and not s]


def _warn_variant(source: str, info: dict[str, Any], instance: Instance) -> None:
    """Warn when ``instance`` has an attribute no training variant of the checkpoint had
    (solved zero-shot; new combinations of trained attributes are not warned about)."""
    import warnings

    new = _untrained_attributes(info, instance)
    if not new:
        return
    trained = ", ".join((info.get("train") or {}).get("variants") or ())
    warnings.warn(
        f"neural: {Path(source).stem} was trained on {trained}; {instance.name!r} "
        f"({instance.variant}) has {' and '.join(new)}, never seen in training (zero-shot): "
        "expect a larger gap",
        UserWarning,
        stacklevel=4,
    )


def _to_tensors(problem: Any, instance: Instance, device: str) -> Any:
    """``problem.from_instance``, with an attribute the tensors cannot hold (an InstanceError
    naming the field) turned into the solver's refusal."""
    from nco.baselines import UnsupportedProblemError
    from nco.envs import InstanceError

    try:
        return problem.from_instance(instance, device=device)
    except InstanceError as err:
        raise UnsupportedProblemError(
            "neural",
            instance.problem,
            (problem.name, *problem.accepts),
            f"the network cannot represent {instance.name!r} ({instance.variant}): {err}",
        ) from err


def _fallback_routes(instance: Instance) -> tuple[list[list[int]], list[int] | None]:
    """The plan (routes, route depots or None) returned when the network could not finish one
    rollout in the time limit: nearest neighbour (TSP, CVRP, CVRPTW), else one route per
    customer, each from the nearest depot that can serve it alone (the checker judges the
    result: a fleet too small for one route per customer makes it infeasible)."""
    from nco.baselines.nearest import nearest_neighbour_routes

    try:
        return nearest_neighbour_routes(instance), None
    except ValueError:
        if not instance.has_depot:
            return [list(range(instance.num_nodes))], None
    nd = instance.num_depots
    customers = list(range(nd, instance.num_nodes))
    depots = _serving_depots(instance)
    return [[c] for c in customers], (depots if nd > 1 else None)


def _serving_depots(instance: Instance) -> list[int]:
    """For each customer (nodes ``num_depots..``), the depot whose round trip to it alone is
    shortest among those that can serve it alone (windows, the depot's closing time unless
    open, the distance and duration limits); depot 0 where none can."""
    from nco.envs.mtvrp import route_duration

    inst, d = instance, instance.distance
    nd, n = inst.num_depots, inst.num_nodes
    cust = np.arange(nd, n)
    st = inst.service_time if inst.service_time is not None else np.zeros(n)
    out_d = d[:nd, nd:]  # [D, C] depot -> customer
    back = np.zeros_like(out_d) if inst.open_routes else d[nd:, :nd].T
    ok = np.ones_like(out_d, dtype=bool)
    tw = inst.time_windows
    if tw is not None:
        start = np.maximum(tw[:nd, :1] + out_d, tw[None, nd:, 0])
        ok &= start <= tw[None, nd:, 1] + 1e-9
        if not inst.open_routes:
            ok &= start + st[None, nd:] + back <= tw[:nd, 1:2] + 1e-9
    if inst.max_distance is not None:
        ok &= out_d + back <= inst.max_distance + 1e-9
    if inst.max_duration is not None:
        for dep in range(nd):
            for j, c in enumerate(cust):
                if ok[dep, j]:
                    dur = route_duration(d, tw, st, dep, [int(c)], inst.open_routes)
                    ok[dep, j] = dur <= inst.max_duration + 1e-9
    trip = np.where(ok, out_d + back, np.inf)
    best = trip.argmin(0)
    return [int(b) if np.isfinite(trip[b, j]) else 0 for j, b in enumerate(best)]


# ---------------------------------------------------------------------------------- hybrid
@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: unchanged), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class HybridSolver:
    """Neural warm start for PyVRP or OR-Tools, in one time budget.

    The network gets at most :data:`NEURAL_SHARE` of ``time_limit`` (construction, then the
    local search of its ``polish`` best distinct plans) and the backend the rest, started from
    the best of them. Before the network runs, the cost of one rollout for this instance size on
    this device is estimated from what :meth:`NeuralSolver.prepare` measured: if it does not fit
    the share, the network is skipped and the backend gets the whole budget (with a budget that
    fits it, the construction degrades to fewer starts and transforms instead). The result is
    the best checked plan among everything the call produced (network, backend), so never worse
    than any of them. ``metadata["summary"]`` says in one line what ran for how long and what
    was skipped (``nco solve`` prints it).

    Variant instances (``"mtvrp"``) warm-start the backend with the network's routes and, for
    several depots, their depots (``initial_depots``). An instance the network cannot represent
    (:meth:`NeuralSolver.refusal`, e.g. a duration limit with service times but no windows) is
    solved by the backend alone with the whole budget, ``metadata["neural_skipped"]`` saying
    why.

    The network runs on ``threads`` torch threads (default 1, as the backends): a multi-threaded
    torch process that shares its cores with other busy processes slows down many times, which
    made the network overrun its share on a loaded machine.

    Parameters
    ----------
    model, strategy, device, batch_size : as in :class:`NeuralSolver`.
    backend : ``"pyvrp"`` (default, the better one in every measured budget) or ``"ortools"``.
        HGS-CVRP cannot start from given routes (its bindings take no initial solution), so it
        is not offered.
    augment : 1 (default) or 8 transforms for the construction.
    refine : polish the network's plans with the local search before the backend (default
        True: a polished start was the best warm start measured, see benchmarks/README.md).
    polish : how many distinct network plans are polished (the best one warm-starts the
        backend; PyVRP's iterated local search takes one initial solution).
    neural_share : the most of the budget the network may use (default :data:`NEURAL_SHARE`).
    threads : torch threads for the network (None: leave torch's setting).
    """

    name = "hybrid"

    def __init__(
        self,
        model: ModelSpec = None,
        *,
        backend: str = "pyvrp",
        strategy: str = "multistart_greedy",
        augment: int = 1,
        refine: bool = True,
        polish: int = HYBRID_POLISH,
        neural_share: float = NEURAL_SHARE,
        device: str | None = None,
        batch_size: int = 64,
        threads: int | None = 1,
    ) -> None:
        if backend not in _HYBRID_BACKENDS:
            raise ValueError(
                f"hybrid: unknown backend {backend!r}; expected one of {', '.join(_HYBRID_BACKENDS)}"
            )
        if not 0.0 < float(neural_share) < 1.0:
            raise ValueError(f"hybrid: neural_share must be in (0, 1), got {neural_share}")
        if threads is not None and threads < 1:
            raise ValueError(f"hybrid: threads must be >= 1 or None, got {threads}")
        self.backend_name = backend
        self.backend: Solver = get_solver(backend)  # fails here if its package is missing
        self.neural_share = float(neural_share)
        self.threads = threads
        self.neural = NeuralSolver(
            model,
            strategy=strategy,
            augment=augment,
            refine=refine,
            polish=polish,
            device=device,
            batch_size=batch_size,
        )

    def __repr__(self) -> str:
        return (
            f"HybridSolver(backend={self.backend_name!r}, neural_share={self.neural_share:g}, "
            f"neural={self.neural!r})"
        )

    def supports(self, problem: str) -> bool:
        """Problems both the network and the backend handle."""
        return self.backend.supports(problem) and self.neural.supports(problem)

    def prepare(self, instance: Instance) -> None:
        """One-time set-up for ``instance``'s model and size (see :meth:`NeuralSolver.prepare`),
        with the network's thread count. :meth:`solve` does it too, inside its budget: call this
        first to keep it out."""
        if self.neural.refusal(instance) is not None:
            return  # the backend solves it alone (see solve)
        with _torch_threads(self.threads):
            self.neural.prepare(instance)

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
        initial_depots: Sequence[int] | None = None,
    ) -> Solution:
        """Network warm start, then the backend for the rest of ``time_limit`` seconds.

        ``initial_depots[k]`` is initial route k's depot (multi-depot instances)."""
        check_time_limit(self.name, time_limit)
        t0 = time.perf_counter()
        deadline = t0 + time_limit
        refused = self.neural.refusal(instance)
        with _torch_threads(self.threads):
            # set-up not done by prepare() before (model loading, compilation, measuring the
            # step cost at this size) counts, and the network's share is of what it leaves
            if refused is None:
                self.neural.prepare(instance)
            share = self.neural_share * (deadline - time.perf_counter())
            refining = self.neural.refine and _refine_refusal(instance) is None
            fits = share * (REFINE_SPLIT if refining else 1.0 - FINISH_RESERVE)
            est = None if refused is not None else self.neural.rollout_time(instance)
            meta: dict[str, Any] = {
                "backend": self.backend_name,
                "time_limit": time_limit,
                "seed": seed,
                "neural_share": self.neural_share,
                "neural_estimate": est,
                "neural_time": 0.0,
                "backend_time": 0.0,
                "warm_start": False,
                "returned": self.backend_name,
            }
            warm: Solution | None = None
            if refused is not None:
                meta["neural_skipped"] = refused
            elif est is not None and est > fits:
                meta["neural_skipped"] = (
                    f"one rollout needs about {est:.2f} s, more than the network's share "
                    f"({max(fits, 0.0):.2f} s of {time_limit:g} s)"
                )
            else:
                tn = time.perf_counter()
                warm = self.neural.solve(
                    instance,
                    time_limit=share,
                    seed=seed,
                    initial_routes=initial_routes,
                    initial_depots=initial_depots,
                )
                meta["neural_time"] = time.perf_counter() - tn
                meta["neural_cost"] = warm.cost
                meta["neural_feasible"] = warm.feasible
                meta.update(
                    (f"neural_{k}", v)
                    for k, v in warm.metadata.items()
                    if k
                    in (
                        "model", "strategy", "augment", "refine", "num_starts", "transforms",
                        "construction_cost", "refined_cost", "polished", "construction_stopped",
                    )
                )  # fmt: skip
        start: list[list[int]] | None = None
        start_depots: list[int] | None = None
        if warm is not None and warm.feasible:
            start = [list(r) for r in warm.routes]
            start_depots = None if warm.route_depots is None else list(warm.route_depots)
        elif initial_routes:
            start = [list(r) for r in initial_routes]
            start_depots = None if initial_depots is None else [int(d) for d in initial_depots]
        best = warm
        remaining = deadline - time.perf_counter()
        if remaining < MIN_BACKEND_TIME and warm is not None and warm.feasible:
            meta["backend_skipped"] = f"{max(remaining, 0.0):.3f} s left after the network"
            meta["returned"] = "neural"
        else:
            tb = time.perf_counter()
            meta["warm_start"] = start is not None
            extra: dict[str, Any] = {}
            if start_depots is not None and instance.num_depots > 1:
                extra["initial_depots"] = start_depots
            try:
                found = self.backend.solve(
                    instance,
                    time_limit=max(remaining, 0.01),
                    seed=seed,
                    initial_routes=start,
                    **extra,
                )
            except SolverFailedError as err:
                if warm is None or not warm.feasible:
                    raise
                meta["backend_error"] = str(err)
                meta["returned"] = "neural"
            else:
                meta["backend_cost"] = found.cost
                if best is None or _key(found) < _key(best):
                    best = found
                else:
                    meta["returned"] = "neural"
            meta["backend_time"] = time.perf_counter() - tb
        assert best is not None
        meta["summary"] = _hybrid_summary(meta)
        return Solution.from_routes(
            instance,
            best.routes,
            depots=best.route_depots,
            solver=self.name,
            runtime=time.perf_counter() - t0,
            metadata=meta,
        )


def _hybrid_summary(meta: dict[str, Any]) -> str:
    """One line: what the network and the backend did, for how long, and what was returned."""
    backend = meta["backend"]
    if "neural_skipped" in meta:
        net = f"network skipped ({meta['neural_skipped']})"
    else:
        polished = meta.get("neural_polished")
        how = f", {polished} polished" if polished else ""
        net = f"network {meta['neural_time']:.2f} s (cost {meta['neural_cost']:.10g}{how})"
    if "backend_skipped" in meta:
        back = f"{backend} skipped ({meta['backend_skipped']})"
    elif "backend_error" in meta:
        back = f"{backend} failed after {meta['backend_time']:.2f} s"
    else:
        start = "from the network's plan" if meta["warm_start"] else "from scratch"
        back = f"{backend} {meta['backend_time']:.2f} s {start} (cost {meta['backend_cost']:.10g})"
    return f"{net}; {back}; returned the {meta['returned']} plan"


# ---------------------------------------------------------------------------------- registry
def _neural_factory(**options: Any) -> Solver:
    return NeuralSolver(**options)


def _hybrid_factory(**options: Any) -> Solver:
    return HybridSolver(**options)


def register() -> None:
    """Register ``"neural"`` and ``"hybrid"`` in :mod:`nco.baselines.registry` (idempotent:
    names already registered are left as they are)."""
    names = available_solvers()
    for name, factory in (("neural", _neural_factory), ("hybrid", _hybrid_factory)):
        if name not in names:
            register_solver(name, factory)


register()
