"""PyVRP and OR-Tools on MTVRP tensors (all 48 ``[MD][O]VRP[B|MB][L][TW]`` variants of
:mod:`nco.envs.mtvrp`).

:class:`~nco.envs.Instance` cannot hold open routes, backhauls or distance limits, so this
module reads the normalised tensors directly: :func:`solve_mtvrp` solves ONE instance (batch
``[1]`` or ``[]``) and :func:`solve_mtvrp_batch` a batch, one process per worker. Every result
is re-costed with :func:`nco.envs.mtvrp.cost` and checked by the independent
:func:`nco.envs.mtvrp.check`; the solver's own verdict travels beside it.

Integer boundary (both solvers; see :func:`integer_mtvrp`)
----------------------------------------------------------
Distances are scaled so that the largest arc is :data:`~nco.baselines.protocol.ORTOOLS_SCALE`
(1e6) units and rounded UP; the same integer matrix is the arc cost, the travel time and the
length counted against the distance limit, so integer route lengths and arrival times are
upper bounds of the float ones. Service times and window starts round up; window ends, the
depot's closing time and the distance limit round DOWN after adding half the checker's
tolerance (:data:`~nco.envs.mtvrp.CHECK_TOL`). Demands are recovered as integers
(``demand * capacity``, exact for generated data) with the integer capacity; non-integral data
are scaled by 1e6 with demands rounded up and the capacity down. Hence a plan feasible in
integers is feasible for the float checker; the objective is biased by at most one unit
(1e-6 of the longest arc) per arc and the reported cost is always the float one.

PyVRP (>= 0.14) mapping
-----------------------
* C: one load dimension, client ``delivery`` = demand, vehicle ``capacity``. Loads and
  capacity are multiplied by one integer factor so that PyVRP's bounded load penalty can
  outweigh the 1e6-scaled distances (as in :mod:`nco.baselines.pyvrp_solver`).
* B: two load dimensions, linehauls as ``delivery`` in dimension 0 and backhauls as ``pickup``
  in dimension 1, each with the capacity: exactly our rule (a route's linehaul total and its
  backhaul total each fit), whatever the order. PyVRP has NO precedence constraint between
  deliveries and pickups (0.14 has none; its own VRPB reader uses arc penalties). We use the
  same device: every arc backhaul -> linehaul gets a prohibitive distance ``big``. A route
  serves a linehaul after a backhaul if and only if it uses such an arc (the first linehaul
  after a backhaul is preceded by a backhaul), so forbidding these arcs is exactly the
  class-1 precedence. Unlike PyVRP's reader we keep depot -> backhaul arcs (backhaul-only
  routes are allowed, as in RouteFinder). To make PyVRP's own verdict see the precedence, B
  instances also get a vehicle ``max_distance`` below ``big`` (the distance limit when L is on,
  otherwise twice the longest possible legal route), so a route using a forbidden arc is
  infeasible to PyVRP (``Solution.is_feasible()`` is False) as well as to our checker.
* M (mixed backhauls): ONE load dimension with linehauls as ``delivery`` and backhauls as
  ``pickup``: PyVRP's vehicle leaves with all the route's deliveries and its load (deliveries
  not yet made + pickups made) must fit everywhere along the route, which is exactly M; no
  arc is forbidden.
* MD: one ``Depot`` per depot node and one vehicle type per depot (``start_depot`` =
  ``end_depot``, with that depot's window); clients are the nodes after the depots.
* L: the vehicle type's ``max_distance`` (same integer matrix as the cost).
* O: every arc INTO the depot has distance and duration 0: the return leg is free, does not
  count towards ``max_distance`` (PyVRP's route distance then equals our open route length)
  and takes no time; the depot's and the vehicle's latest return are set to a loose horizon
  (every schedule ends before it), so late returns are allowed.
* TW: client ``tw_early``/``tw_late``/``service_duration``, depot and vehicle window = the
  depot's window (closed routes must be back by its end); travel time = distance. Without time
  windows the duration matrix is 0.

OR-Tools (``pywrapcp``) mapping
-------------------------------
* Arc cost: the integer matrix (arcs into the depot 0 when open: OR-Tools' route end is the
  depot node, so the return leg costs nothing).
* C / B: unary capacity dimensions ``Linehaul`` (and ``Backhaul`` when any customer is a
  backhaul), capacity = vehicle capacity.
* B precedence: the arcs backhaul -> linehaul are removed from the ``NextVar`` domains (a
  hard constraint, exact by the argument above; backhaul-only routes stay allowed).
* M: dimensions ``Pickup`` (backhauls, start 0) and ``Load`` (transit backhaul - linehaul,
  start free in [0, capacity], every cumul in [0, capacity]) with ``Load`` at the route's end
  = ``Pickup`` at its end, which pins the start load to the route's linehaul total: the load
  on board fits at every point. No arc is removed.
* MD: ``RoutingIndexManager`` with per-vehicle start = end depot, as many vehicles per depot
  as customers.
* L: a ``Distance`` dimension over the same matrix with capacity = the limit (open: the
  return leg has transit 0 and does not count).
* TW: a ``Time`` dimension, transit i -> j = service at i + travel i -> j, slack = waiting,
  customer cumul ranges = windows, route start/end in the depot's window (open: end in a loose
  horizon, travel to the depot 0).
* Every customer sits in a disjunction with a penalty above any complete plan's cost so the
  first-solution heuristic may start from a partial plan; a plan still missing customers at
  the end is returned with ``solver_feasible=False`` (the checker then reports ``missing``).
  The search is deterministic; ``seed`` is recorded only.

Both solvers get as many vehicles as customers (always enough: one route per customer is
feasible for generated data) and run single-threaded until ``time_limit`` (wall clock,
model building included).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from nco.baselines.protocol import ORTOOLS_SCALE, check_time_limit, require
from nco.envs.common import numpy_distance
from nco.envs.cvrp import CAP_TOL
from nco.envs.instance import Violation
from nco.envs.mtvrp import CHECK_TOL, check, cost, variant_names

__all__ = [
    "MTVRP_SOLVERS",
    "MTVRPIntegers",
    "MTVRPResult",
    "ORToolsModel",
    "build_ortools_model",
    "build_pyvrp_data",
    "integer_mtvrp",
    "routes_to_tour",
    "solve_mtvrp",
    "solve_mtvrp_batch",
    "solver_accepts",
]

#: Solvers :func:`solve_mtvrp` knows.
MTVRP_SOLVERS = ("pyvrp", "ortools")

#: Demand scale for capacities/demands that are not integers after ``demand * capacity``.
_LOAD_SCALE = 1_000_000
#: Largest ratio (largest arc / capacity) PyVRP gets; see :mod:`nco.baselines.pyvrp_solver`.
_LOAD_BALANCE = 1000


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MTVRPResult:
    """One solved MTVRP instance.

    Attributes
    ----------
    solver : ``"pyvrp"``, ``"ortools"`` or ``"neural"`` (:func:`nco.solve_mtvrp`).
    variant : the instance's variant name (``[O]VRP[B][L][TW]``).
    routes : routes of customer node ids (depots excluded).
    cost : :func:`nco.envs.mtvrp.cost` of the routes (float, instance units).
    violations : :func:`nco.envs.mtvrp.check`'s violations (empty = feasible).
    runtime : wall time of the call in seconds.
    solver_feasible : the solver's own verdict (PyVRP ``Solution.is_feasible()``; OR-Tools: a
        solution serving every customer was found).
    metadata : integer scale, load factor, vehicles, seed, iterations, ...
    """

    solver: str
    variant: str
    routes: list[list[int]]
    cost: float
    violations: list[Violation]
    runtime: float
    solver_feasible: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    depots: list[int] = field(default_factory=list)
    """Start (= end) depot of each route; empty means depot 0 for all (one depot)."""

    @property
    def feasible(self) -> bool:
        """The independent checker's verdict."""
        return not self.violations


def routes_to_tour(
    routes: Sequence[Sequence[int]], depots: Sequence[int] | None = None
) -> torch.Tensor:
    """Routes -> action sequence [1, T]: each route ends at its depot; a route from another
    depot than the one the vehicle sequence is at is preceded by that depot (a switch, as in
    the env; the sequence starts at depot 0)."""
    seq: list[int] = []
    at = 0
    for k, r in enumerate(routes):
        if len(r):
            d = int(depots[k]) if depots else 0
            if d != at:
                seq.append(d)
            seq.extend(int(v) for v in r)
            seq.append(d)
            at = d
    return torch.tensor([seq or [0]], dtype=torch.int64)


# ----------------------------------------------------------------------------- integers
@dataclass(frozen=True)
class MTVRPIntegers:
    """Integer view of one MTVRP instance (rules in the module docstring).

    Attributes
    ----------
    scale : distance/time factor (integer = ceil(value * scale)).
    arc : [N, N] int64 arc lengths = travel times; depot columns are 0 for open routes.
    linehaul, backhaul : [N] int64 loads (0 at the depots).
    capacity : int vehicle capacity.
    is_backhaul : [N] bool, customers with a positive backhaul demand.
    open_route : the return leg is free.
    num_depots : nodes ``0..num_depots-1`` are depots (MD when more than one).
    mixed_backhaul : M: linehauls and backhauls in any order, load on board within capacity.
    max_distance : integer distance limit, None without L.
    time_windows : [N, 2] int64 windows (depot rows: their end is the loose horizon for open
        routes), None without TW.
    service : [N] int64 service times (0 at the depots), None without TW.
    horizon : a loose bound on every cumulated time of any route (for open windows).
    """

    scale: float
    arc: np.ndarray
    linehaul: np.ndarray
    backhaul: np.ndarray
    capacity: int
    is_backhaul: np.ndarray
    open_route: bool
    max_distance: int | None
    time_windows: np.ndarray | None
    service: np.ndarray | None
    horizon: int
    num_depots: int = 1
    mixed_backhaul: bool = False

    @property
    def num_nodes(self) -> int:
        return int(self.arc.shape[0])

    @property
    def customers(self) -> range:
        return range(self.num_depots, self.num_nodes)

    @property
    def has_backhaul(self) -> bool:
        return bool(self.is_backhaul.any())

    def forbidden_arcs(self) -> list[tuple[int, int]]:
        """Arcs backhaul -> linehaul (every non-backhaul customer counts as a linehaul, as in
        the checker); using none of them is exactly the linehaul-before-backhaul rule. None
        with mixed backhauls."""
        if self.mixed_backhaul:
            return []
        bh = np.flatnonzero(self.is_backhaul)
        lh = [j for j in self.customers if not self.is_backhaul[j]]
        return [(int(i), int(j)) for i in bh for j in lh]


def _one(td: TensorDict) -> TensorDict:
    """Batch [1] view of a single instance given with batch [1] or []."""
    if td.batch_dims == 0:
        return td.unsqueeze(0)
    if tuple(td.batch_size) != (1,):
        raise ValueError(
            f"solve_mtvrp takes ONE instance (batch [1] or []), got batch {list(td.batch_size)}; "
            "use solve_mtvrp_batch"
        )
    return td


def _up(x: np.ndarray | float, scale: float) -> np.ndarray:
    return np.ceil(np.asarray(x, dtype=np.float64) * scale - 1e-9).astype(np.int64)


def _down_tol(x: float, scale: float) -> int:
    """floor((x + half the checker's tolerance) * scale)."""
    return int(math.floor((x + 0.5 * CHECK_TOL * max(1.0, abs(x))) * scale))


def integer_mtvrp(td: TensorDict) -> MTVRPIntegers:
    """Integer data for one instance (batch [1] or []); see the module docstring."""
    td = _one(td).cpu()
    dist = numpy_distance(td, 0)
    n = dist.shape[0]
    arr = {k: td[k][0].double().numpy() for k in ("demand_linehaul", "demand_backhaul")}
    opened = bool(td["open_route"][0])
    k = int(td["num_depots"][0])
    dmax = float(dist.max()) or 1.0
    scale = ORTOOLS_SCALE / dmax
    arc = _up(dist, scale)
    np.fill_diagonal(arc, 0)
    if opened:
        arc[:, :k] = 0
    # loads: integers when demand * capacity is integral (generated data), else scaled
    cap = float(td["capacity"][0])
    lh_f, bh_f = arr["demand_linehaul"], arr["demand_backhaul"]
    lh_u, bh_u = lh_f * cap, bh_f * cap
    if cap.is_integer() and all(
        np.all(np.abs(q - np.rint(q)) <= 1e-4 * max(1.0, cap)) for q in (lh_u, bh_u)
    ):
        linehaul, backhaul, capacity = (
            np.rint(lh_u).astype(np.int64),
            np.rint(bh_u).astype(np.int64),
            int(cap),
        )
    else:
        linehaul, backhaul = _up(lh_f, _LOAD_SCALE), _up(bh_f, _LOAD_SCALE)
        capacity = int(math.floor((1.0 + 0.5 * CAP_TOL) * _LOAD_SCALE))
    linehaul[:k] = backhaul[:k] = 0
    limit = float(td["distance_limit"][0])
    max_distance = _down_tol(limit, scale) if math.isfinite(limit) else None
    # time windows (data-driven: any finite window end or positive service time)
    tw_f = td["time_windows"][0].double().numpy()
    st_f = td["service_time"][0].double().numpy()
    has_tw = bool(np.isfinite(tw_f[:, 1]).any() or (st_f[k:] > 0).any() or (tw_f[:, 0] > 0).any())
    service = _up(st_f, scale)
    service[:k] = 0  # the checker leaves a depot at its window start without service
    early = _up(tw_f[:, 0], scale)
    finite_late = tw_f[np.isfinite(tw_f[:, 1]), 1]
    top = int(max(int(early.max()), _up(finite_late.max(), scale) if finite_late.size else 0))
    horizon = top + (n + 1) * (int(arc.max()) + int(service.max())) + 1
    tws = service_out = None
    if has_tw:
        late = np.array(
            [_down_tol(float(x), scale) if math.isfinite(x) else horizon for x in tw_f[:, 1]],
            dtype=np.int64,
        )
        late = np.minimum(late, horizon)
        if opened:
            late[:k] = horizon  # late returns are allowed
        tws = np.stack([early, late], 1)
        service_out = service
    return MTVRPIntegers(
        scale=scale,
        arc=arc,
        linehaul=linehaul,
        backhaul=backhaul,
        capacity=capacity,
        is_backhaul=bh_f > 0,
        open_route=opened,
        max_distance=max_distance,
        time_windows=tws,
        service=service_out,
        horizon=horizon,
        num_depots=k,
        mixed_backhaul=bool(td["has_mixed_backhaul"][0]),
    )


# ----------------------------------------------------------------------------- PyVRP
def build_pyvrp_data(data: MTVRPIntegers, locs: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """PyVRP ``ProblemData`` of one instance (see the module docstring) and its metadata."""
    pyvrp = require("pyvrp", "pyvrp", "pyvrp")
    n = data.num_nodes
    k = data.num_depots
    num_vehicles = max(n - k, 1)
    distance = data.arc.copy()
    max_distance = data.max_distance
    forbidden = data.forbidden_arcs()
    big = 0
    if forbidden:
        legal = n * int(data.arc.max())  # any route without a forbidden arc is at most this
        guard = max_distance if max_distance is not None else 2 * legal + 1
        big = 2 * max(guard, legal) + 1
        rows, cols = zip(*forbidden, strict=True)
        distance[list(rows), list(cols)] = big
        max_distance = guard
    two_dims = data.has_backhaul and not data.mixed_backhaul
    load_factor = max(1, round(float(data.arc.max()) / (_LOAD_BALANCE * max(data.capacity, 1))))
    clients = []
    for i in data.customers:
        if two_dims:
            load = {
                "delivery": [int(data.linehaul[i]) * load_factor, 0],
                "pickup": [0, int(data.backhaul[i]) * load_factor],
            }
        else:  # C, or M: deliveries and pickups share the load on board
            load = {
                "delivery": [int(data.linehaul[i]) * load_factor],
                "pickup": [int(data.backhaul[i]) * load_factor],
            }
        kw: dict[str, Any] = {}
        if data.time_windows is not None:
            assert data.service is not None
            kw = {
                "service_duration": int(data.service[i]),
                "tw_early": int(data.time_windows[i, 0]),
                "tw_late": int(data.time_windows[i, 1]),
            }
        clients.append(pyvrp.Client(location=i, **load, **kw))
    capacity = [data.capacity * load_factor] * (2 if two_dims else 1)
    depots, vehicle_types = [], []
    for d in range(k):
        vkw: dict[str, Any] = {
            "num_available": num_vehicles,
            "capacity": capacity,
            "start_depot": d,
            "end_depot": d,
        }
        if max_distance is not None:
            vkw["max_distance"] = int(max_distance)
        if data.time_windows is not None:
            open_, close = int(data.time_windows[d, 0]), int(data.time_windows[d, 1])
            depots.append(pyvrp.Depot(location=d, tw_early=open_, tw_late=close))
            vkw.update(tw_early=open_, tw_late=close)
        else:
            depots.append(pyvrp.Depot(location=d))
        vehicle_types.append(pyvrp.VehicleType(**vkw))
    durations = data.arc if data.time_windows is not None else np.zeros_like(data.arc)
    locations = [pyvrp.Location(float(x), float(y)) for x, y in locs]
    problem = pyvrp.ProblemData(locations, clients, depots, vehicle_types, [distance], [durations])
    return problem, {
        "vehicles": num_vehicles,
        "load_factor": load_factor,
        "forbidden_arcs": len(forbidden),
        "forbidden_arc_distance": big,
        "max_distance_int": max_distance,
    }


def _solve_pyvrp(
    data: MTVRPIntegers, locs: np.ndarray, time_limit: float, seed: int, t0: float
) -> tuple[list[list[int]], list[int], bool, dict[str, Any]]:
    pyvrp = require("pyvrp", "pyvrp", "pyvrp")
    stop = require("pyvrp", "pyvrp.stop", "pyvrp")
    problem, meta = build_pyvrp_data(data, locs)
    remaining = max(time_limit - (time.perf_counter() - t0), 0.0)
    result = pyvrp.solve(
        problem, stop.MaxRuntime(remaining), seed=int(seed), collect_stats=False, display=False
    )
    best = result.best
    routes, depots = [], []
    for route in best.routes():
        # client c is PyVRP location num_depots + c = our node num_depots + c
        nodes = [act.idx + data.num_depots for act in route if act.is_client()]
        if nodes:
            routes.append(nodes)
            depots.append(int(route.start_depot()))
    meta.update(iterations=int(result.num_iterations), objective_int=int(best.distance()))
    return routes, depots, bool(best.is_feasible()), meta


# ----------------------------------------------------------------------------- OR-Tools
@dataclass(frozen=True)
class ORToolsModel:
    """An OR-Tools routing model of one instance (see the module docstring)."""

    manager: Any
    routing: Any
    num_vehicles: int
    metadata: dict[str, Any]
    depot_of: list[int] = field(default_factory=list)
    """Depot of each vehicle."""


def build_ortools_model(data: MTVRPIntegers) -> ORToolsModel:
    """The routing model (arc costs, dimensions, precedence, disjunctions), not yet closed."""
    pywrapcp = require("ortools", "ortools.constraint_solver.pywrapcp", "ortools")
    n = data.num_nodes
    k = data.num_depots
    per_depot = max(n - k, 1)
    num_vehicles = per_depot * k
    depot_of = [v // per_depot for v in range(num_vehicles)]
    if k == 1:
        manager = pywrapcp.RoutingIndexManager(n, num_vehicles, 0)
    else:
        manager = pywrapcp.RoutingIndexManager(n, num_vehicles, depot_of, depot_of)
    routing = pywrapcp.RoutingModel(manager)
    arc = routing.RegisterTransitMatrix(data.arc.tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(arc)
    caps = [int(data.capacity)] * num_vehicles
    lh = routing.RegisterUnaryTransitVector(data.linehaul.tolist())
    routing.AddDimensionWithVehicleCapacity(lh, 0, caps, True, "Linehaul")
    forbidden = data.forbidden_arcs()
    if data.has_backhaul:
        bh = routing.RegisterUnaryTransitVector(data.backhaul.tolist())
        routing.AddDimensionWithVehicleCapacity(bh, 0, caps, True, "Backhaul")
        for i, j in forbidden:
            routing.NextVar(manager.NodeToIndex(i)).RemoveValue(manager.NodeToIndex(j))
    if data.has_backhaul and data.mixed_backhaul:
        # load on board: starts free, pinned to the route's linehaul total by its end value
        net = routing.RegisterUnaryTransitVector((data.backhaul - data.linehaul).tolist())
        routing.AddDimensionWithVehicleCapacity(net, 0, caps, False, "Load")
        load = routing.GetDimensionOrDie("Load")
        picked = routing.GetDimensionOrDie("Backhaul")
        solver = routing.solver()
        for v in range(num_vehicles):
            solver.Add(load.CumulVar(routing.End(v)) == picked.CumulVar(routing.End(v)))
    if data.max_distance is not None:
        routing.AddDimension(arc, 0, int(data.max_distance), True, "Distance")
    if data.time_windows is not None:
        assert data.service is not None
        tw = data.time_windows
        transit = data.arc + data.service[:, None]
        tcb = routing.RegisterTransitMatrix(transit.tolist())
        routing.AddDimension(tcb, data.horizon, data.horizon, False, "Time")
        tdim = routing.GetDimensionOrDie("Time")
        for node in data.customers:
            tdim.CumulVar(manager.NodeToIndex(node)).SetRange(int(tw[node, 0]), int(tw[node, 1]))
        for v in range(num_vehicles):
            d = depot_of[v]
            tdim.CumulVar(routing.Start(v)).SetRange(int(tw[d, 0]), int(tw[d, 1]))
            tdim.CumulVar(routing.End(v)).SetRange(int(tw[d, 0]), int(tw[d, 1]))
    penalty = int(data.arc.max()) * 2 * n + 1
    for node in data.customers:
        routing.AddDisjunction([manager.NodeToIndex(node)], penalty)
    meta = {"vehicles": num_vehicles, "forbidden_arcs": len(forbidden)}
    return ORToolsModel(manager, routing, num_vehicles, meta, depot_of)


def _search_params(time_limit: float) -> Any:
    pywrapcp = require("ortools", "ortools.constraint_solver.pywrapcp", "ortools")
    enums = require("ortools", "ortools.constraint_solver.routing_enums_pb2", "ortools")
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = enums.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = enums.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.log_search = False
    params.time_limit.FromMilliseconds(max(int(time_limit * 1000), 10))
    return params


def _solve_ortools(
    data: MTVRPIntegers, time_limit: float, t0: float
) -> tuple[list[list[int]], list[int], bool, dict[str, Any]]:
    model = build_ortools_model(data)
    routing, manager = model.routing, model.manager
    remaining = max(time_limit - (time.perf_counter() - t0), 0.01)
    result = routing.SolveWithParameters(_search_params(remaining))
    meta = dict(model.metadata)
    if result is None:
        meta["status"] = int(routing.status())
        return [], [], False, meta
    routes: list[list[int]] = []
    depots: list[int] = []
    for v in range(model.num_vehicles):
        index = result.Value(routing.NextVar(routing.Start(v)))
        route = []
        while not routing.IsEnd(index):
            route.append(manager.IndexToNode(index))
            index = result.Value(routing.NextVar(index))
        if route:
            routes.append(route)
            depots.append(model.depot_of[v])
    served = sum(len(r) for r in routes)
    customers = len(data.customers)
    meta.update(objective_int=int(result.ObjectiveValue()), dropped=customers - served)
    return routes, depots, served == customers, meta


# ----------------------------------------------------------------------------- model verdicts
def solver_accepts(
    td: TensorDict,
    routes: Sequence[Sequence[int]],
    solver: str,
    depots: Sequence[int] | None = None,
) -> bool:
    """Whether the solver's MODEL of instance ``td`` (batch [1] or []) accepts the plan
    ``routes`` (customer node ids; every customer exactly once; ``depots``: each route's
    depot, default 0): PyVRP's ``Solution.is_feasible()``, or OR-Tools restoring the routes as
    a feasible assignment. Used to test the mapping against :func:`nco.envs.mtvrp.check`."""
    one = _one(td).cpu()
    data = integer_mtvrp(one)
    keep = [i for i, r in enumerate(routes) if len(r)]
    plan = [[int(v) for v in routes[i]] for i in keep]
    homes = [int(depots[i]) if depots else 0 for i in keep]
    if sorted(v for r in plan for v in r) != list(data.customers):
        raise ValueError("solver_accepts needs a plan that visits every customer exactly once")
    if any(not 0 <= d < data.num_depots for d in homes):
        raise ValueError(f"route depots must be in 0..{data.num_depots - 1}, got {homes}")
    k = data.num_depots
    if solver == "pyvrp":
        pyvrp = require("pyvrp", "pyvrp", "pyvrp")
        problem, _ = build_pyvrp_data(data, one["locs"][0].double().numpy())
        pv = [pyvrp.Route(problem, [v - k for v in r], d) for r, d in zip(plan, homes, strict=True)]
        return bool(pyvrp.Solution(problem, pv).is_feasible())
    if solver == "ortools":
        model = build_ortools_model(data)
        model.routing.CloseModelWithParameters(_search_params(1.0))
        padded: list[list[int]] = [[] for _ in range(model.num_vehicles)]
        free = list(range(model.num_vehicles))
        for r, d in zip(plan, homes, strict=True):
            v = next(v for v in free if model.depot_of[v] == d)
            free.remove(v)
            padded[v] = r
        return model.routing.ReadAssignmentFromRoutes(padded, True) is not None
    raise ValueError(f"unknown MTVRP solver {solver!r}; expected one of {MTVRP_SOLVERS}")


# ----------------------------------------------------------------------------- entry points
def solve_mtvrp(
    td: TensorDict, solver: str = "pyvrp", *, time_limit: float, seed: int = 0
) -> MTVRPResult:
    """Solve ONE MTVRP instance with PyVRP or OR-Tools.

    Parameters
    ----------
    td : MTVRP tensors of one instance, batch [1] or [] (keys of :mod:`nco.envs.mtvrp`).
    solver : ``"pyvrp"`` or ``"ortools"``.
    time_limit : wall-clock seconds, model building included (positive).
    seed : PyVRP's random seed (OR-Tools' search is deterministic; recorded only).

    Returns
    -------
    MTVRPResult
        Routes, float cost by :func:`nco.envs.mtvrp.cost`, the checker's violations, the
        solver's own verdict. An infeasible or incomplete plan is returned as such (never
        raised, never replaced): read ``feasible`` / ``solver_feasible``.
    """
    t0 = time.perf_counter()
    if solver not in MTVRP_SOLVERS:
        raise ValueError(f"unknown MTVRP solver {solver!r}; expected one of {MTVRP_SOLVERS}")
    check_time_limit(solver, time_limit)
    one = _one(td).cpu()
    data = integer_mtvrp(one)
    if solver == "pyvrp":
        locs = one["locs"][0].double().numpy()
        routes, depots, ok, meta = _solve_pyvrp(data, locs, time_limit, seed, t0)
    else:
        routes, depots, ok, meta = _solve_ortools(data, time_limit, t0)
    tour = routes_to_tour(routes, depots)
    meta.update(scale=data.scale, seed=int(seed), time_limit=float(time_limit))
    return MTVRPResult(
        solver=solver,
        variant=variant_names(one)[0],
        routes=routes,
        cost=float(cost(one, tour)[0]),
        violations=check(one, tour)[0],
        runtime=time.perf_counter() - t0,
        solver_feasible=ok,
        metadata=meta,
        depots=depots,
    )


def _worker_init() -> None:
    torch.set_num_threads(1)


def _solve_job(args: tuple[TensorDict, str, float, int]) -> MTVRPResult:
    td, solver, time_limit, seed = args
    return solve_mtvrp(td, solver, time_limit=time_limit, seed=seed)


def solve_mtvrp_batch(
    td: TensorDict, solver: str = "pyvrp", *, time_limit: float, seed: int = 0, workers: int = 1
) -> list[MTVRPResult]:
    """Solve every instance of a batch [B] (same ``seed`` for each), in order.

    ``workers > 1`` runs that many single-threaded solver processes (``spawn`` start method,
    so no forked torch/OR-Tools state); ``workers=1`` solves in this process.
    """
    if td.batch_dims != 1:
        raise ValueError(f"solve_mtvrp_batch takes a batch [B], got {list(td.batch_size)}")
    if solver not in MTVRP_SOLVERS:
        raise ValueError(f"unknown MTVRP solver {solver!r}; expected one of {MTVRP_SOLVERS}")
    td = td.cpu()
    jobs = [(td[i : i + 1], solver, float(time_limit), int(seed)) for i in range(td.shape[0])]
    if workers <= 1 or len(jobs) <= 1:
        return [_solve_job(j) for j in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init
    ) as pool:
        return list(pool.map(_solve_job, jobs))
