"""Granular local search for the TSP, CVRP, CVRPTW and their variants: numba kernels and references.

This module improves one solution of one instance with classical moves restricted to granular
neighbour lists (Toth & Vigo's granular tabu search; Vidal's HGS): a move between a node ``u`` and
one of its ``k`` nearest nodes ``v`` is only tried when it makes ``u`` adjacent to ``v``.

* :func:`neighbour_lists`: the ``k`` nearest nodes of every node;
* :func:`local_search_vrp` / :func:`local_search_mdvrp` (several depots) /
  :func:`local_search_tsp`: the numba kernels (``@njit(cache=True)``);
* :func:`local_search_vrp_reference` / :func:`local_search_mdvrp_reference` /
  :func:`local_search_tsp_reference`: plain-Python references
  with the same move order and acceptance rule, written independently (moves build new route lists
  and are evaluated by recomputing route costs and re-checking routes from scratch), so the two
  return identical solutions on the same input (barring a candidate whose cost change, or a
  route's length or duration, lies within floating-point rounding, about 1e-12, of the ``1e-9``
  thresholds);
* :func:`route_cost`: the cost of a flat route array.

Data and representation
-----------------------
``dist`` is a float64 ``[N, N]`` matrix, possibly asymmetric (reversing a segment then changes its
cost; the kernel accounts for it exactly with forward and backward prefix sums); travel time equals
distance. Node 0 is the depot. A VRP solution is a flat int64 array of node ids with 0 as the
separator, starting and ending with 0, e.g. ``[0, 3, 1, 0, 2, 5, 4, 0]``; consecutive zeros are
empty routes. A TSP tour is a permutation of ``0..N-1`` (closed tour).

Several depots (:func:`local_search_mdvrp`): nodes ``0..D-1`` are depots and ``D..N-1``
customers; a plan is a list of routes (their customers) with each route's depot. A route starts
and ends at its own depot, which no move changes: the "depot" below is the route's, with its
row of ``time_windows``; 2-opt* between routes of two depots exchanges the tails without their
depots. Customers move between depots by the moves below, and a whole route by move 13.

Constraints of a route ``0, c1, ..., cm, 0``
--------------------------------------------
They follow the independent checker of the variants (``nco.envs.mtvrp.check_core`` and
``check_routes``), with the tighter absolute tolerance ``1e-9`` (:data:`EPS`) instead of its
relative one, so a route this module accepts passes the checker. Optional ones are switched on by
the keyword arguments of :func:`local_search_vrp`; without them the problem is CVRP(TW).

Capacity
    The linehaul load (sum of ``demand``, ``demand[0]`` ignored) is at most ``capacity + 1e-9``.
Backhauls (``backhaul``: pickup amounts, ``backhaul[0]`` ignored)
    The backhaul load (sum of ``backhaul``) is at most ``capacity + 1e-9`` too. Without
    ``mixed_backhaul`` (classic VRPB) a customer with ``backhaul > 0`` is a backhaul, every other
    one a linehaul, and no linehaul may follow a backhaul on a route (routes of backhauls only
    are allowed). With ``mixed_backhaul`` any order is allowed, and the load on board must fit
    everywhere: the vehicle leaves with the route's linehaul load and after each customer ``c``
    carries ``backhaul[c] - demand[c]`` more, which must stay at most ``capacity + 1e-9``.
Open routes (``open_routes``)
    A route ends at its last customer: the return leg is not paid, does not count towards the
    distance or duration limit, and the depot's closing time does not apply.
Time windows (``time_windows``, ``service_time``)
    The vehicle leaves the depot at ``time_windows[0, 0]``; arrival at ``j`` is the departure
    from the previous node plus ``dist[prev, j]``; service starts at ``max(arrival, earliest_j)``
    (waiting allowed); the route is infeasible if a start exceeds ``latest_j + 1e-9``; departure
    is start plus ``service_time[j]``; unless the route is open, the vehicle must be back at the
    depot by ``time_windows[0, 1] + 1e-9``. The depot's service time is ignored.
Distance limit (``max_distance``)
    The route's length (its cost: the return leg included unless open) is at most
    ``max_distance + 1e-9``.
Duration limit (``max_duration``; ``service_time`` is then used with or without windows)
    Without time windows the duration is the length plus the customers' service times. With
    them it is PyVRP's duration as ``nco.envs.mtvrp.route_duration`` computes it: the vehicle
    leaves at ``start = max(time_windows[0, 0], latest)``, where ``latest`` is the latest
    departure with which no window (nor, unless open, the depot's closing time) is missed when
    nothing waits; the duration is then the time from ``start`` to the return at the depot (open
    routes: to the end of the last service), waiting included (length plus service times when
    ``latest`` is infinite: no window closes). It is at most ``max_duration + 1e-9``; empty
    routes have none.

Search (deterministic first improvement)
----------------------------------------
Passes are repeated until a full pass applies no move or ``max_iterations`` moves were applied.
One pass visits the customers ``u = D, ..., N-1`` (``D`` depots, 1 but with
:func:`local_search_mdvrp`) in increasing order and, for each ``u``, its neighbours ``v``
in list order (nearest first, ties by lower index). For a pair ``(u, v)`` the candidate moves are
tried in this order, and the first acceptable one is applied, after which the pass continues with
``u``'s next neighbour:

``v`` a customer
    1. relocate ``u`` right after ``v``; 2. relocate ``u`` right before ``v`` (same or other route);
    if ``u`` and ``v`` are in different routes: 3. swap ``u`` and ``v``; 4. 2-opt* making ``u -> v``
    adjacent (route of ``u`` keeps its head up to ``u`` and takes the tail of ``v``'s route from
    ``v``; the route of ``v`` keeps its head before ``v`` and takes the tail after ``u``);
    5. 2-opt* making ``v -> u`` adjacent (the same with the roles exchanged);
    if they are in the same route and not adjacent (positions ``i`` of ``u``, ``j`` of ``v``):
    6./7. 2-opt reversing positions ``i+1..j`` then ``i..j-1`` when ``i < j`` (both create the edge
    ``u -> v``), or ``j+1..i`` then ``j..i-1`` when ``j < i`` (both create ``v -> u``).
``v`` a depot
    if it is ``u``'s own depot: 8. relocate ``u`` to the start, 9. to the end of its route;
    10. 2-opt reversing positions ``1..i`` (creates ``0 -> u``), 11. reversing ``i..L-2``
    (creates ``u -> 0``); then, for any depot ``v``: 12. relocate ``u`` into the first empty
    route of ``v``, if the solution has one; 13. if ``v`` is another depot than ``u``'s, move
    ``u``'s whole route (same order) into that empty route of ``v``.

A move is acceptable when it lowers the cost by more than ``1e-9`` and **every route it produces
is feasible** (all the constraints above that are given). Hence the search terminates, never
worsens the cost, and never creates a violation: on an infeasible input, infeasible routes are
left untouched unless a move turns them (and every other route it touches) feasible. The number
of routes never exceeds the input's (per depot): empty routes in the input act as spare vehicles
(of their depot); empty routes are dropped from the output of :func:`local_search_vrp`. The cost
of an open route leaves its return leg out, so moves that change a route's last customer are
judged by what an open route pays. For the TSP the tour is
rotated to start at node 0 and searched as a single route with node 0 as its depot (so only 2-opt
reversals of segments not containing node 0 and relocations of nodes other than 0 are considered;
for a symmetric ``dist`` reversing the complementary segment gives the same tour).

Cost of the kernel: a candidate's cost change is evaluated in O(1) (2-opt on an asymmetric matrix
uses per-route forward/backward prefix sums; an open route is costed on a copy of ``dist`` whose
depot columns are zero); only candidates that improve and pass the O(1) tests are built. The
O(1) tests are exact for the capacity, the linehaul and backhaul loads, the distance limit and
the duration without windows (per-route prefix sums of loads, lengths and service times); the
duration test is also applied with windows, where it is a necessary condition (travel plus
service never exceeds the duration). Built candidates are then re-checked route-wise in O(route
length) when needed: time windows, the backhaul precedence, the mixed-backhaul load profile and
the duration with windows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

__all__ = [
    "OPERATORS",
    "local_search_mdvrp",
    "local_search_mdvrp_reference",
    "local_search_tsp",
    "local_search_tsp_reference",
    "local_search_vrp",
    "local_search_vrp_reference",
    "neighbour_lists",
    "route_cost",
]

EPS = 1e-9
"""Improvement threshold and feasibility tolerance (loads, times, lengths and durations)."""

OPERATORS: tuple[str, ...] = ("relocate", "swap", "2opt", "2opt*")
"""Names accepted by the ``operators`` argument (all enabled by default)."""

_OP_BITS = {"relocate": 1, "swap": 2, "2opt": 4, "2opt*": 8}
_RELOCATE, _SWAP, _TWO_OPT, _TWO_OPT_STAR = 1, 2, 4, 8

# Constraint flags of the kernel: which route-wise checks a built candidate needs, and how.
_TW = 1  # time windows
_ORDER = 2  # strict backhaul precedence (no linehaul after a backhaul)
_PROFILE = 4  # mixed backhauls: the load on board along the route
_OPEN = 8  # open routes: no return leg (no depot closing time)
_DURATION = 16  # duration limit with time windows (PyVRP's duration, route-wise)
_WALK = _TW | _ORDER | _PROFILE | _DURATION


# ----------------------------------------------------------------------------------------------
# Validation and conversion (shared by both paths so that they accept exactly the same inputs)
# ----------------------------------------------------------------------------------------------


def _as_dist(dist: np.ndarray) -> np.ndarray:
    d = np.ascontiguousarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"dist must be a non-empty square [N, N] matrix, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("dist must be finite")
    return d


def neighbour_lists(dist: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other nodes of every node (granular neighbour lists).

    Parameters
    ----------
    dist : ndarray, float, shape [N, N]
        Distance matrix; row ``i`` ranks the nodes by ``dist[i, j]`` (outgoing distance).
    k : int
        Neighbours per node, >= 1; clipped to ``N - 1``.

    Returns
    -------
    ndarray, int64, shape [N, min(k, N - 1)]
        Row ``i`` lists the nodes ``j != i`` by increasing ``dist[i, j]``, ties by lower index.
        The depot (node 0) may appear in the lists.
    """
    d = _as_dist(dist)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n = d.shape[0]
    kk = min(int(k), n - 1)
    masked = d.copy()
    np.fill_diagonal(masked, np.inf)
    order = np.argsort(masked, axis=1, kind="stable")
    # The diagonal sorts last (inf), unless a row is all inf; it never is (dist is finite).
    return np.ascontiguousarray(order[:, :kk], dtype=np.int64)


def route_cost(routes_flat: np.ndarray, dist: np.ndarray) -> float:
    """Total travel cost of a flat route array.

    Parameters
    ----------
    routes_flat : ndarray, int, shape [L]
        Node ids, e.g. ``[0, 3, 1, 0, 2, 0]``; the cost is ``sum(dist[a[t], a[t + 1]])``. For a
        closed TSP tour pass ``np.append(tour, tour[0])``.
    dist : ndarray, float, shape [N, N]

    Returns
    -------
    float
    """
    a = np.asarray(routes_flat, dtype=np.int64)
    d = np.asarray(dist, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"routes_flat must be 1-D, got shape {a.shape}")
    if a.size < 2:
        return 0.0
    return float(d[a[:-1], a[1:]].sum())


def _resolve_neighbours(d: np.ndarray, neighbours: np.ndarray | None, k: int) -> np.ndarray:
    n = d.shape[0]
    if neighbours is None:
        if n == 1:
            return np.zeros((1, 0), dtype=np.int64)
        return neighbour_lists(d, k)
    nb = np.asarray(neighbours)
    if nb.ndim != 2 or nb.shape[0] != n or not np.issubdtype(nb.dtype, np.integer):
        raise ValueError(f"neighbours must be an integer array of shape [N={n}, k], got {nb.shape}")
    if nb.size and (nb.min() < 0 or nb.max() >= n):
        raise ValueError("neighbours must hold node ids in [0, N)")
    return np.ascontiguousarray(nb, dtype=np.int64)


def _operator_mask(operators: Sequence[str] | None) -> int:
    if operators is None:
        return _RELOCATE | _SWAP | _TWO_OPT | _TWO_OPT_STAR
    if isinstance(operators, str):
        raise ValueError("operators must be a sequence of names, not a single string")
    mask = 0
    for name in operators:
        if name not in _OP_BITS:
            raise ValueError(f"unknown operator {name!r}; choose from {OPERATORS}")
        mask |= _OP_BITS[name]
    return mask


def _check_max_iterations(max_iterations: int) -> int:
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int | np.integer)
        or max_iterations < 0
    ):
        raise ValueError(f"max_iterations must be an integer >= 0, got {max_iterations!r}")
    return int(max_iterations)


def _split_routes(routes_flat: np.ndarray, n: int) -> list[list[int]]:
    """Validate a flat VRP solution and return its routes as ``[0, c1, ..., cm, 0]`` lists."""
    a = np.asarray(routes_flat)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError("routes_flat must be a non-empty 1-D integer array")
    if a[0] != 0 or a[-1] != 0:
        raise ValueError("routes_flat must start and end with the depot 0")
    if a.min() < 0 or a.max() >= n:
        raise ValueError(f"routes_flat holds node ids outside [0, N={n})")
    counts = np.bincount(a[a != 0], minlength=n)
    if n > 1 and not np.all(counts[1:] == 1):
        missing = np.flatnonzero(counts[1:] == 0) + 1
        repeated = np.flatnonzero(counts[1:] > 1) + 1
        raise ValueError(
            "every customer 1..N-1 must appear exactly once; "
            f"missing {missing.tolist()}, repeated {repeated.tolist()}"
        )
    zeros = np.flatnonzero(a == 0)
    return [[0, *a[s + 1 : e].tolist(), 0] for s, e in zip(zeros[:-1], zeros[1:])]


def _md_routes(
    routes: Sequence[Sequence[int]], depots: Sequence[int], n: int, num_depots: int
) -> list[list[int]]:
    """Validate routes of customers with their depots; return ``[d, c1, ..., cm, d]`` lists."""
    if isinstance(num_depots, bool) or not isinstance(num_depots, int | np.integer):
        raise ValueError(f"num_depots must be an integer, got {num_depots!r}")
    if not 1 <= num_depots < n:
        raise ValueError(f"num_depots must be in [1, N={n}), got {num_depots}")
    if isinstance(routes, np.ndarray) or isinstance(depots, str):
        raise ValueError("routes must be a sequence of routes (sequences of customer ids)")
    deps = [int(d) for d in depots]
    if len(deps) != len(routes):
        raise ValueError(f"expected one depot per route, got {len(deps)} for {len(routes)} routes")
    if any(not 0 <= d < num_depots for d in deps):
        raise ValueError(f"depots must be depot nodes in [0, num_depots={num_depots})")
    out = []
    counts = np.zeros(n, dtype=np.int64)
    for route, dep in zip(routes, deps):
        r = np.asarray(route)
        if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
            raise ValueError("every route must be a 1-D sequence of integer node ids")
        if r.size and (r.min() < num_depots or r.max() >= n):
            raise ValueError(f"routes must hold customer ids in [num_depots={num_depots}, N={n})")
        np.add.at(counts, r.astype(np.int64), 1)
        out.append([dep, *r.tolist(), dep])
    if not np.all(counts[num_depots:] == 1):
        missing = np.flatnonzero(counts[num_depots:] == 0) + num_depots
        repeated = np.flatnonzero(counts[num_depots:] > 1) + num_depots
        raise ValueError(
            f"every customer {num_depots}..N-1 must appear exactly once; "
            f"missing {missing.tolist()}, repeated {repeated.tolist()}"
        )
    return out


class _Problem(NamedTuple):
    """A validated VRP instance, as both the kernel and the reference read it."""

    dist: np.ndarray  # [N, N] float64, the return legs included (also for open routes)
    demand: np.ndarray  # [N] float64, 0 at the depots
    capacity: float
    time_windows: np.ndarray | None  # [N, 2]
    service_time: np.ndarray | None  # [N], 0 at the depots; given with windows or a duration
    backhaul: np.ndarray | None  # [N], 0 at the depots
    mixed_backhaul: bool
    open_routes: bool
    max_distance: float | None
    max_duration: float | None
    num_depots: int  # nodes 0..num_depots-1


def _limit(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number or None, got {value!r}")
    lim = float(value)
    if math.isnan(lim) or lim < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return lim


def _problem(
    d,
    demand,
    capacity,
    time_windows,
    service_time,
    backhaul,
    mixed_backhaul,
    open_routes,
    max_distance,
    max_duration,
    num_depots,
) -> _Problem:
    n = d.shape[0]
    dem = np.array(demand, dtype=np.float64).reshape(-1)
    if dem.shape != (n,) or not np.all(np.isfinite(dem)):
        raise ValueError(f"demand must be finite with shape [N={n}], got {dem.shape}")
    dem[:num_depots] = 0.0
    cap = float(capacity)
    if not cap >= 0:
        raise ValueError(f"capacity must be >= 0, got {capacity!r}")
    max_dist = _limit(max_distance, "max_distance")
    max_dur = _limit(max_duration, "max_duration")
    tw = None
    svc = None
    if time_windows is not None:
        tw = np.ascontiguousarray(time_windows, dtype=np.float64)
        if tw.shape != (n, 2) or np.isnan(tw).any():
            raise ValueError(f"time_windows must have shape [N={n}, 2], got {tw.shape}")
    if time_windows is not None or max_dur is not None:
        if service_time is None:
            svc = np.zeros(n)
        else:
            svc = np.array(service_time, dtype=np.float64).reshape(-1)
            if svc.shape != (n,) or not np.all(np.isfinite(svc)):
                raise ValueError(f"service_time must be finite with shape [N={n}]")
            svc[:num_depots] = 0.0
    bh = None
    if backhaul is not None:
        bh = np.array(backhaul, dtype=np.float64).reshape(-1)
        if bh.shape != (n,) or not np.all(np.isfinite(bh)) or (bh < 0).any():
            raise ValueError(f"backhaul must be finite, >= 0, with shape [N={n}], got {bh.shape}")
        bh[:num_depots] = 0.0
    if mixed_backhaul and bh is None:
        raise ValueError("mixed_backhaul needs the backhaul amounts (backhaul=...)")
    return _Problem(
        d,
        dem,
        cap,
        tw,
        svc,
        bh,
        bool(mixed_backhaul),
        bool(open_routes),
        max_dist,
        max_dur,
        int(num_depots),
    )


def _prepare_vrp(
    routes_flat,
    dist,
    demand,
    capacity,
    time_windows,
    service_time,
    neighbours,
    k,
    max_iterations,
    backhaul=None,
    mixed_backhaul=False,
    open_routes=False,
    max_distance=None,
    max_duration=None,
):
    d = _as_dist(dist)
    routes = _split_routes(routes_flat, d.shape[0])
    prob = _problem(
        d, demand, capacity, time_windows, service_time, backhaul, mixed_backhaul, open_routes,
        max_distance, max_duration, 1,
    )  # fmt: skip
    nb = _resolve_neighbours(d, neighbours, k)
    return routes, prob, nb, _check_max_iterations(max_iterations)


def _prepare_mdvrp(
    routes,
    depots,
    dist,
    demand,
    capacity,
    time_windows,
    service_time,
    num_depots,
    neighbours,
    k,
    max_iterations,
    backhaul,
    mixed_backhaul,
    open_routes,
    max_distance,
    max_duration,
):
    d = _as_dist(dist)
    lists = _md_routes(routes, depots, d.shape[0], num_depots)
    prob = _problem(
        d, demand, capacity, time_windows, service_time, backhaul, mixed_backhaul, open_routes,
        max_distance, max_duration, num_depots,
    )  # fmt: skip
    nb = _resolve_neighbours(d, neighbours, k)
    return lists, prob, nb, _check_max_iterations(max_iterations)


def _prepare_tsp(tour, dist, neighbours, k, max_iterations):
    d = _as_dist(dist)
    n = d.shape[0]
    t = np.asarray(tour)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError("tour must be a 1-D integer array")
    if t.size != n or not np.array_equal(np.sort(t), np.arange(n)):
        raise ValueError(f"tour must be a permutation of 0..{n - 1}")
    start = int(np.flatnonzero(t == 0)[0])
    rotated = np.concatenate([t[start:], t[:start]]).tolist()
    routes = [[*rotated, 0]]
    nb = _resolve_neighbours(d, neighbours, k)
    prob = _Problem(d, np.zeros(n), math.inf, None, None, None, False, False, None, None, 1)
    return routes, prob, nb, _check_max_iterations(max_iterations)


def _join_routes(routes: list[list[int]]) -> np.ndarray:
    flat = [0]
    for r in routes:
        if len(r) > 2:
            flat.extend(r[1:])
    return np.asarray(flat, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Numba kernel
# ----------------------------------------------------------------------------------------------
# ``st`` is the search state (routes [R, C], lens [R], route_of [N], pos_of [N] and per-route
# prefix sums [R, C] over positions: linehaul load pl, backhaul load pb, service time ps,
# forward cost fw and backward cost bw); ``pr`` the problem (dist, demand, backhaul, tw,
# service, capacity, max_distance, max_duration, flags, num_depots), absent constraints
# neutral (zero backhauls, infinite limits). Nodes below num_depots are depots; row r of
# ``routes`` starts and ends at its own depot, which no move changes.


@njit(cache=True)
def _refresh(r, st, pr):
    """Recompute the prefix sums and node positions of route ``r``."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, demand, backhaul, service = pr[0], pr[1], pr[2], pr[4]
    pl[r, 0] = 0.0
    pb[r, 0] = 0.0
    ps[r, 0] = 0.0
    fw[r, 0] = 0.0
    bw[r, 0] = 0.0
    for p in range(1, lens[r]):
        a = routes[r, p - 1]
        b = routes[r, p]
        pl[r, p] = pl[r, p - 1] + demand[b]
        pb[r, p] = pb[r, p - 1] + backhaul[b]
        ps[r, p] = ps[r, p - 1] + service[b]
        fw[r, p] = fw[r, p - 1] + dist[a, b]
        bw[r, p] = bw[r, p - 1] + dist[b, a]
        if b >= pr[9]:
            route_of[b] = r
            pos_of[b] = p


@njit(cache=True)
def _tw_ok(seq, n, dist, tw, service, open_route):
    """Time-window feasibility of the route ``seq[:n]`` (``seq[0] = seq[n-1]`` its depot)."""
    depot = seq[0]
    t = tw[depot, 0]
    prev = depot
    for p in range(1, n - 1):
        j = seq[p]
        t = t + dist[prev, j]
        if t < tw[j, 0]:
            t = tw[j, 0]
        if t > tw[j, 1] + EPS:
            return False
        t = t + service[j]
        prev = j
    if open_route:
        return True
    t = t + dist[prev, depot]
    return t <= tw[depot, 1] + EPS


@njit(cache=True)
def _duration(seq, n, dist, tw, service, open_route):
    """PyVRP's duration of the non-empty route ``seq[:n]`` with time windows (module docstring)."""
    depot = seq[0]
    offset = 0.0
    latest = tw[depot, 1]
    prev = depot
    for p in range(1, n - 1):
        j = seq[p]
        offset += dist[prev, j]
        latest = min(latest, tw[j, 1] - offset)
        offset += service[j]
        prev = j
    if not open_route:
        latest = min(latest, tw[depot, 1] - (offset + dist[prev, depot]))
    if not np.isfinite(latest):  # no window closes: leaving late enough never waits
        return offset if open_route else offset + dist[prev, depot]
    start = max(tw[depot, 0], latest)
    t = start
    prev = depot
    for p in range(1, n - 1):
        j = seq[p]
        t = max(t + dist[prev, j], tw[j, 0]) + service[j]
        prev = j
    if not open_route:
        t += dist[prev, depot]
    return t - start


@njit(cache=True)
def _walk_ok(seq, n, pr):
    """Route-wise tests of the route ``seq[:n]``: precedence, load profile, windows, duration."""
    dist, demand, backhaul, tw, service = pr[0], pr[1], pr[2], pr[3], pr[4]
    capacity, max_duration, flags = pr[5], pr[7], pr[8]
    if flags & _ORDER:
        seen = False
        for p in range(1, n - 1):
            if backhaul[seq[p]] > 0:
                seen = True
            elif seen:
                return False
    if flags & _PROFILE:
        on_board = 0.0
        for p in range(1, n - 1):
            on_board += demand[seq[p]]
        for p in range(1, n - 1):
            j = seq[p]
            on_board += backhaul[j] - demand[j]
            if on_board > capacity + EPS:
                return False
    open_route = (flags & _OPEN) != 0
    if flags & _TW:
        if not _tw_ok(seq, n, dist, tw, service, open_route):
            return False
    if flags & _DURATION and n > 2:
        if _duration(seq, n, dist, tw, service, open_route) > max_duration + EPS:
            return False
    return True


@njit(cache=True)
def _fits(load, bload, length, serv, pr):
    """O(1) tests of a new route from its linehaul and backhaul loads, length and service time."""
    capacity, max_distance, max_duration = pr[5], pr[6], pr[7]
    if load > capacity + EPS:
        return False
    if bload > capacity + EPS:
        return False
    if length > max_distance + EPS:
        return False
    return not length + serv > max_duration + EPS


@njit(cache=True)
def _commit(r, buf, n, st, pr):
    routes, lens = st[0], st[1]
    for p in range(n):
        routes[r, p] = buf[p]
    lens[r] = n
    _refresh(r, st, pr)


@njit(cache=True)
def _relocate(u, rv, j, st, pr, bufa, bufb):
    """Move ``u`` between positions ``j`` and ``j + 1`` of route ``rv``."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, demand, backhaul, service, flags = pr[0], pr[1], pr[2], pr[4], pr[8]
    ru = route_of[u]
    i = pos_of[u]
    p = routes[rv, j]
    q = routes[rv, j + 1]
    if p == u or q == u:
        return False
    pu = routes[ru, i - 1]
    su = routes[ru, i + 1]
    delta = dist[p, u] + dist[u, q] - dist[p, q] - (dist[pu, u] + dist[u, su] - dist[pu, su])
    if not delta < -EPS:
        return False
    la = lens[ru]
    if ru != rv:
        lb = lens[rv]
        added = dist[p, u] + dist[u, q] - dist[p, q]
        removed = dist[pu, u] + dist[u, su] - dist[pu, su]
        if not _fits(
            pl[rv, lb - 1] + demand[u],
            pb[rv, lb - 1] + backhaul[u],
            fw[rv, lb - 1] + added,
            ps[rv, lb - 1] + service[u],
            pr,
        ):
            return False
        if not _fits(
            pl[ru, la - 1] - demand[u],
            pb[ru, la - 1] - backhaul[u],
            fw[ru, la - 1] - removed,
            ps[ru, la - 1] - service[u],
            pr,
        ):
            return False
        n = 0
        for idx in range(la):
            if idx != i:
                bufa[n] = routes[ru, idx]
                n += 1
        m = 0
        for idx in range(lb):
            bufb[m] = routes[rv, idx]
            m += 1
            if idx == j:
                bufb[m] = u
                m += 1
        if flags & _WALK and not (_walk_ok(bufa, n, pr) and _walk_ok(bufb, m, pr)):
            return False
        _commit(ru, bufa, n, st, pr)
        _commit(rv, bufb, m, st, pr)
        return True
    if not _fits(pl[ru, la - 1], pb[ru, la - 1], fw[ru, la - 1] + delta, ps[ru, la - 1], pr):
        return False
    n = 0
    for idx in range(la):
        if idx == i:
            continue
        bufa[n] = routes[ru, idx]
        n += 1
        if idx == j:
            bufa[n] = u
            n += 1
    if flags & _WALK and not _walk_ok(bufa, n, pr):
        return False
    _commit(ru, bufa, n, st, pr)
    return True


@njit(cache=True)
def _swap(u, v, st, pr, bufa, bufb):
    """Exchange customers ``u`` and ``v`` of two different routes."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, demand, backhaul, service, flags = pr[0], pr[1], pr[2], pr[4], pr[8]
    ru = route_of[u]
    rv = route_of[v]
    i = pos_of[u]
    j = pos_of[v]
    pu = routes[ru, i - 1]
    su = routes[ru, i + 1]
    pv = routes[rv, j - 1]
    sv = routes[rv, j + 1]
    delta_u = dist[pu, v] + dist[v, su] - dist[pu, u] - dist[u, su]
    delta_v = dist[pv, u] + dist[u, sv] - dist[pv, v] - dist[v, sv]
    delta = delta_u + delta_v
    if not delta < -EPS:
        return False
    la = lens[ru]
    lb = lens[rv]
    if not _fits(
        pl[ru, la - 1] - demand[u] + demand[v],
        pb[ru, la - 1] - backhaul[u] + backhaul[v],
        fw[ru, la - 1] + delta_u,
        ps[ru, la - 1] - service[u] + service[v],
        pr,
    ):
        return False
    if not _fits(
        pl[rv, lb - 1] - demand[v] + demand[u],
        pb[rv, lb - 1] - backhaul[v] + backhaul[u],
        fw[rv, lb - 1] + delta_v,
        ps[rv, lb - 1] - service[v] + service[u],
        pr,
    ):
        return False
    for idx in range(la):
        bufa[idx] = routes[ru, idx]
    bufa[i] = v
    for idx in range(lb):
        bufb[idx] = routes[rv, idx]
    bufb[j] = u
    if flags & _WALK and not (_walk_ok(bufa, la, pr) and _walk_ok(bufb, lb, pr)):
        return False
    _commit(ru, bufa, la, st, pr)
    _commit(rv, bufb, lb, st, pr)
    return True


@njit(cache=True)
def _tails_depots(ra, ia, rb, ib, st, pr, bufa, bufb):
    """2-opt* between routes of two depots: each route keeps its own depot, so route ``ra``
    becomes ``A[:ia+1] + B[ib+1:-1] + [A[-1]]``, route ``rb`` ``B[:ib+1] + A[ia+1:-1] + [B[-1]]``.
    """
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, flags = pr[0], pr[8]
    la = lens[ra]
    lb = lens[rb]
    da = routes[ra, la - 1]
    db = routes[rb, lb - 1]
    a0 = routes[ra, ia]
    b0 = routes[rb, ib]
    if ib + 1 <= lb - 2:  # B's tail has customers: a0 -> B[ib+1] ... B[lb-2] -> da
        len_a = (
            fw[ra, ia]
            + dist[a0, routes[rb, ib + 1]]
            + (fw[rb, lb - 2] - fw[rb, ib + 1])
            + dist[routes[rb, lb - 2], da]
        )
    else:
        len_a = fw[ra, ia] + dist[a0, da]
    if ia + 1 <= la - 2:
        len_b = (
            fw[rb, ib]
            + dist[b0, routes[ra, ia + 1]]
            + (fw[ra, la - 2] - fw[ra, ia + 1])
            + dist[routes[ra, la - 2], db]
        )
    else:
        len_b = fw[rb, ib] + dist[b0, db]
    delta = len_a + len_b - (fw[ra, la - 1] + fw[rb, lb - 1])
    if not delta < -EPS:
        return False
    if not _fits(
        pl[ra, ia] + (pl[rb, lb - 1] - pl[rb, ib]),
        pb[ra, ia] + (pb[rb, lb - 1] - pb[rb, ib]),
        len_a,
        ps[ra, ia] + (ps[rb, lb - 1] - ps[rb, ib]),
        pr,
    ):
        return False
    if not _fits(
        pl[rb, ib] + (pl[ra, la - 1] - pl[ra, ia]),
        pb[rb, ib] + (pb[ra, la - 1] - pb[ra, ia]),
        len_b,
        ps[rb, ib] + (ps[ra, la - 1] - ps[ra, ia]),
        pr,
    ):
        return False
    n = 0
    for idx in range(ia + 1):
        bufa[n] = routes[ra, idx]
        n += 1
    for idx in range(ib + 1, lb - 1):
        bufa[n] = routes[rb, idx]
        n += 1
    bufa[n] = da
    n += 1
    m = 0
    for idx in range(ib + 1):
        bufb[m] = routes[rb, idx]
        m += 1
    for idx in range(ia + 1, la - 1):
        bufb[m] = routes[ra, idx]
        m += 1
    bufb[m] = db
    m += 1
    if flags & _WALK and not (_walk_ok(bufa, n, pr) and _walk_ok(bufb, m, pr)):
        return False
    _commit(ra, bufa, n, st, pr)
    _commit(rb, bufb, m, st, pr)
    return True


@njit(cache=True)
def _tails(ra, ia, rb, ib, st, pr, bufa, bufb):
    """2-opt*: route ``ra`` becomes ``A[:ia+1] + B[ib+1:]``, route ``rb`` ``B[:ib+1] + A[ia+1:]``."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    if routes[ra, 0] != routes[rb, 0]:
        return _tails_depots(ra, ia, rb, ib, st, pr, bufa, bufb)
    dist, flags = pr[0], pr[8]
    la = lens[ra]
    lb = lens[rb]
    a0 = routes[ra, ia]
    a1 = routes[ra, ia + 1]
    b0 = routes[rb, ib]
    b1 = routes[rb, ib + 1]
    delta = dist[a0, b1] + dist[b0, a1] - dist[a0, a1] - dist[b0, b1]
    if not delta < -EPS:
        return False
    load_a = pl[ra, la - 1]
    load_b = pl[rb, lb - 1]
    if not _fits(
        pl[ra, ia] + (load_b - pl[rb, ib]),
        pb[ra, ia] + (pb[rb, lb - 1] - pb[rb, ib]),
        fw[ra, ia] + dist[a0, b1] + (fw[rb, lb - 1] - fw[rb, ib + 1]),
        ps[ra, ia] + (ps[rb, lb - 1] - ps[rb, ib]),
        pr,
    ):
        return False
    if not _fits(
        pl[rb, ib] + (load_a - pl[ra, ia]),
        pb[rb, ib] + (pb[ra, la - 1] - pb[ra, ia]),
        fw[rb, ib] + dist[b0, a1] + (fw[ra, la - 1] - fw[ra, ia + 1]),
        ps[rb, ib] + (ps[ra, la - 1] - ps[ra, ia]),
        pr,
    ):
        return False
    n = 0
    for idx in range(ia + 1):
        bufa[n] = routes[ra, idx]
        n += 1
    for idx in range(ib + 1, lb):
        bufa[n] = routes[rb, idx]
        n += 1
    m = 0
    for idx in range(ib + 1):
        bufb[m] = routes[rb, idx]
        m += 1
    for idx in range(ia + 1, la):
        bufb[m] = routes[ra, idx]
        m += 1
    if flags & _WALK and not (_walk_ok(bufa, n, pr) and _walk_ok(bufb, m, pr)):
        return False
    _commit(ra, bufa, n, st, pr)
    _commit(rb, bufb, m, st, pr)
    return True


@njit(cache=True)
def _reverse(r, a, b, st, pr, bufa):
    """2-opt: reverse positions ``a..b`` (``1 <= a < b <= L - 2``) of route ``r``."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, flags = pr[0], pr[8]
    x = routes[r, a - 1]
    ya = routes[r, a]
    yb = routes[r, b]
    z = routes[r, b + 1]
    delta = (
        dist[x, yb]
        + dist[ya, z]
        - dist[x, ya]
        - dist[yb, z]
        + (bw[r, b] - bw[r, a])
        - (fw[r, b] - fw[r, a])
    )
    if not delta < -EPS:
        return False
    n = lens[r]
    if not _fits(pl[r, n - 1], pb[r, n - 1], fw[r, n - 1] + delta, ps[r, n - 1], pr):
        return False
    for idx in range(n):
        bufa[idx] = routes[r, idx]
    for t in range(b - a + 1):
        bufa[a + t] = routes[r, b - t]
    if flags & _WALK and not _walk_ok(bufa, n, pr):
        return False
    _commit(r, bufa, n, st, pr)
    return True


@njit(cache=True)
def _move_route(ru, re, st, pr, bufa, bufb):
    """Serve the customers of route ``ru``, in order, by the empty route ``re`` of another depot."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, flags = pr[0], pr[8]
    la = lens[ru]
    da = routes[ru, 0]
    de = routes[re, 0]
    length = dist[de, routes[ru, 1]] + (fw[ru, la - 2] - fw[ru, 1]) + dist[routes[ru, la - 2], de]
    delta = length + dist[da, da] - (fw[ru, la - 1] + fw[re, 1])
    if not delta < -EPS:
        return False
    if not _fits(pl[ru, la - 1], pb[ru, la - 1], length, ps[ru, la - 1], pr):
        return False
    for idx in range(la):
        bufb[idx] = routes[ru, idx]
    bufb[0] = de
    bufb[la - 1] = de
    if flags & _WALK and not _walk_ok(bufb, la, pr):
        return False
    bufa[0] = da
    bufa[1] = da
    _commit(ru, bufa, 2, st, pr)
    _commit(re, bufb, la, st, pr)
    return True


@njit(cache=True)
def _try_pair(u, v, ops, st, pr, bufa, bufb):
    """Try the moves of the pair ``(u, v)`` in the documented order; True if one was applied."""
    routes, lens, route_of, pos_of = st[0], st[1], st[2], st[3]
    ru = route_of[u]
    i = pos_of[u]
    if v >= pr[9]:
        rv = route_of[v]
        j = pos_of[v]
        if ops & _RELOCATE:
            if _relocate(u, rv, j, st, pr, bufa, bufb):
                return True
            if _relocate(u, rv, j - 1, st, pr, bufa, bufb):
                return True
        if ru != rv:
            if ops & _SWAP:
                if _swap(u, v, st, pr, bufa, bufb):
                    return True
            if ops & _TWO_OPT_STAR:
                if _tails(ru, i, rv, j - 1, st, pr, bufa, bufb):
                    return True
                if _tails(rv, j, ru, i - 1, st, pr, bufa, bufb):
                    return True
        elif ops & _TWO_OPT:
            if j - i >= 2:
                if _reverse(ru, i + 1, j, st, pr, bufa):
                    return True
                if _reverse(ru, i, j - 1, st, pr, bufa):
                    return True
            elif i - j >= 2:
                if _reverse(ru, j + 1, i, st, pr, bufa):
                    return True
                if _reverse(ru, j, i - 1, st, pr, bufa):
                    return True
        return False
    la = lens[ru]
    if v == routes[ru, 0]:  # u's own depot
        if ops & _RELOCATE:
            if _relocate(u, ru, 0, st, pr, bufa, bufb):
                return True
            if _relocate(u, ru, la - 2, st, pr, bufa, bufb):
                return True
        if ops & _TWO_OPT:
            if i >= 2:
                if _reverse(ru, 1, i, st, pr, bufa):
                    return True
            if i <= la - 3:
                if _reverse(ru, i, la - 2, st, pr, bufa):
                    return True
    if ops & _RELOCATE:
        empty = -1
        for r in range(lens.shape[0]):
            if lens[r] == 2 and routes[r, 0] == v:
                empty = r
                break
        if empty >= 0:
            if _relocate(u, empty, 0, st, pr, bufa, bufb):
                return True
            if v != routes[ru, 0] and _move_route(ru, empty, st, pr, bufa, bufb):
                return True
    return False


@njit(cache=True)
def _search_kernel(routes, lens, pr, neighbours, ops, max_moves):
    """Granular first-improvement search, in place on ``routes [R, C]`` / ``lens [R]``.

    Returns the number of applied moves.
    """
    n_routes, width = routes.shape
    n = pr[0].shape[0]
    num_depots = pr[9]
    route_of = np.full(n, -1, dtype=np.int64)
    pos_of = np.full(n, -1, dtype=np.int64)
    pl = np.zeros((n_routes, width))
    pb = np.zeros((n_routes, width))
    ps = np.zeros((n_routes, width))
    fw = np.zeros((n_routes, width))
    bw = np.zeros((n_routes, width))
    st = (routes, lens, route_of, pos_of, pl, pb, ps, fw, bw)
    for r in range(n_routes):
        _refresh(r, st, pr)
    bufa = np.empty(width, dtype=np.int64)
    bufb = np.empty(width, dtype=np.int64)
    k = neighbours.shape[1]
    moves = 0
    improved = True
    while improved and moves < max_moves:
        improved = False
        for u in range(num_depots, n):
            for t in range(k):
                if moves >= max_moves:
                    break
                v = neighbours[u, t]
                if v == u:
                    continue
                if _try_pair(u, v, ops, st, pr, bufa, bufb):
                    moves += 1
                    improved = True
    return moves


def _kernel_problem(prob: _Problem) -> tuple:
    """The kernel's ``pr`` tuple: fixed dtypes, absent constraints neutral, open routes costed
    on a copy of ``dist`` whose depot columns are zero (no return leg)."""
    n = prob.dist.shape[0]
    dist = prob.dist
    flags = 0
    if prob.open_routes:
        dist = dist.copy()
        dist[:, : prob.num_depots] = 0.0
        flags |= _OPEN
    if prob.time_windows is not None:
        flags |= _TW
        if prob.max_duration is not None:
            flags |= _DURATION
    if prob.backhaul is not None:
        flags |= _PROFILE if prob.mixed_backhaul else _ORDER
    tw = prob.time_windows if prob.time_windows is not None else np.zeros((1, 2))
    service = prob.service_time if prob.service_time is not None else np.zeros(n)
    backhaul = prob.backhaul if prob.backhaul is not None else np.zeros(n)
    max_dist = math.inf if prob.max_distance is None else prob.max_distance
    max_dur = math.inf if prob.max_duration is None else prob.max_duration
    return (
        np.ascontiguousarray(dist),
        np.ascontiguousarray(prob.demand),
        np.ascontiguousarray(backhaul),
        np.ascontiguousarray(tw),
        np.ascontiguousarray(service),
        float(prob.capacity),
        float(max_dist),
        float(max_dur),
        int(flags),
        int(prob.num_depots),
    )


def _run_kernel(routes, prob: _Problem, nb, ops, max_moves) -> list[list[int]]:
    n = prob.dist.shape[0]
    n_routes = len(routes)
    if n_routes == 0:
        return routes
    width = n + 1
    arr = np.zeros((n_routes, width), dtype=np.int64)
    lens = np.zeros(n_routes, dtype=np.int64)
    for r, route in enumerate(routes):
        arr[r, : len(route)] = route
        lens[r] = len(route)
    _search_kernel(arr, lens, _kernel_problem(prob), nb, ops, max_moves)
    return [arr[r, : lens[r]].tolist() for r in range(n_routes)]


def local_search_vrp(
    routes_flat: np.ndarray,
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Improve a CVRP / CVRPTW solution, or one of a variant, with granular local search (numba).

    Parameters
    ----------
    routes_flat : ndarray, int, shape [L]
        Flat solution with 0 as separator, starting and ending with 0; every customer
        ``1..N-1`` exactly once. Empty routes (``0, 0``) are spare vehicles the search may use.
    dist : ndarray, float, shape [N, N]
        Distances (= travel times), possibly asymmetric, return legs included (also with
        ``open_routes``, which leaves them out of costs and limits itself).
    demand : ndarray, float, shape [N]
        Customer (linehaul) demands; ``demand[0]`` is ignored.
    capacity : float
        Vehicle capacity.
    time_windows : ndarray, float, shape [N, 2], optional
        ``[earliest, latest]`` service start; row 0 is ``[departure, horizon]`` of the depot.
    service_time : ndarray, float, shape [N], optional
        Service durations (used with ``time_windows`` or ``max_duration``; zeros if omitted;
        ``service_time[0]`` is ignored).
    backhaul : ndarray, float, shape [N], optional
        Backhaul (pickup) amounts, >= 0 (``backhaul[0]`` ignored): the customers with a positive
        amount are backhauls; without ``mixed_backhaul`` they follow every linehaul of their route.
    mixed_backhaul : bool, default False
        Linehauls and backhauls in any order, the load on board checked along the route (needs
        ``backhaul``).
    open_routes : bool, default False
        Routes end at their last customer (no return leg paid, timed or limited).
    max_distance : float, optional
        Limit on each route's length (its cost).
    max_duration : float, optional
        Limit on each route's duration (see the module docstring).
    neighbours : ndarray, int, shape [N, K], optional
        Granular neighbour lists; defaults to ``neighbour_lists(dist, k)``.
    k : int, default 20
        Neighbours per node when ``neighbours`` is not given.
    max_iterations : int, default 10_000
        Maximum number of applied (improving) moves.
    operators : sequence of str, optional
        Subset of :data:`OPERATORS` to use (default: all).

    Returns
    -------
    ndarray, int64, shape [L']
        The improved solution in the same flat format, empty routes dropped. Its cost (without
        the return legs of open routes) is never higher than the input's and every route it
        changed is feasible (see the module docstring).
    """
    routes, prob, nb, max_moves = _prepare_vrp(
        routes_flat, dist, demand, capacity, time_windows, service_time, neighbours, k,
        max_iterations, backhaul, mixed_backhaul, open_routes, max_distance, max_duration,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return _join_routes(_run_kernel(routes, prob, nb, ops, max_moves))


def local_search_mdvrp(
    routes: Sequence[Sequence[int]],
    depots: Sequence[int],
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    num_depots: int,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> list[list[int]]:
    """Improve a plan with several depots (nodes ``0..num_depots-1``) by granular local search.

    The same search and constraints as :func:`local_search_vrp`, each route starting and ending
    at its own depot (whose time window and distances apply to it): customers move between the
    routes of different depots, and routes never change depot (see "Several depots" in the module
    docstring).

    Parameters
    ----------
    routes : sequence of sequences of int
        The routes' customers (ids ``num_depots..N-1``, each exactly once; depots not listed).
        Empty routes are spare vehicles of their depot.
    depots : sequence of int
        ``depots[k]`` is route k's depot, in ``0..num_depots-1``.
    dist, demand, capacity, time_windows, service_time
        As in :func:`local_search_vrp`; depot rows of ``demand``, ``backhaul`` and
        ``service_time`` are ignored, row ``d`` of ``time_windows`` is depot ``d``'s
        ``[departure, horizon]``.
    num_depots : int
        Number of depots, >= 1 (1: the problem of :func:`local_search_vrp`).
    backhaul, mixed_backhaul, open_routes, max_distance, max_duration, neighbours, k, \
    max_iterations, operators
        As in :func:`local_search_vrp`.

    Returns
    -------
    list of list of int
        The improved routes, parallel to ``routes``: route k is still served from ``depots[k]``
        (it may have become empty, or an empty one filled). The cost is never higher than the
        input's and every route it changed is feasible.
    """
    lists, prob, nb, max_moves = _prepare_mdvrp(
        routes, depots, dist, demand, capacity, time_windows, service_time, num_depots,
        neighbours, k, max_iterations, backhaul, mixed_backhaul, open_routes, max_distance,
        max_duration,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return [r[1:-1] for r in _run_kernel(lists, prob, nb, ops, max_moves)]


def local_search_tsp(
    tour: np.ndarray,
    dist: np.ndarray,
    *,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Improve a TSP tour with granular 2-opt and relocate (numba kernel).

    Parameters
    ----------
    tour : ndarray, int, shape [N]
        A permutation of ``0..N-1`` (closed tour).
    dist : ndarray, float, shape [N, N]
        Distances, possibly asymmetric.
    neighbours, k, max_iterations, operators
        As in :func:`local_search_vrp` (only ``"relocate"`` and ``"2opt"`` apply to a tour).

    Returns
    -------
    ndarray, int64, shape [N]
        The improved tour, rotated to start at node 0; its cost
        (``route_cost(np.append(t, t[0]), dist)``) is never higher than the input's.
    """
    routes, prob, nb, max_moves = _prepare_tsp(tour, dist, neighbours, k, max_iterations)
    ops = _operator_mask(operators)
    out = _run_kernel(routes, prob, nb, ops, max_moves)
    return np.asarray(out[0][:-1], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Fleet repair (numba): empty routes until the plan fits the fleet
# ----------------------------------------------------------------------------------------------
# The same state ``st`` and problem ``pr`` as the search, and the same feasibility tests
# (:func:`_fits`, then :func:`_walk_ok` when a route-wise constraint is given). Row ``r`` of
# ``routes`` is a route of its depot ``routes[r, 0]``; rows of length 2 are empty (one of them is
# the "slot": a new route opened at a depot with a vehicle to spare, relabelled to that depot).

#: Elimination attempts per kernel call when the repair runs against a deadline.
REPAIR_SLICE = 2

_UNLIMITED = 2**62


@njit(cache=True)
def _insert_into(q, j, u, st, buf):
    """Route ``q`` with ``u`` between positions ``j`` and ``j + 1``, written to ``buf``; its length."""
    routes, lens = st[0], st[1]
    m = 0
    for idx in range(lens[q]):
        buf[m] = routes[q, idx]
        m += 1
        if idx == j:
            buf[m] = u
            m += 1
    return m


@njit(cache=True)
def _best_in_row(q, u, best, st, pr, buf):
    """The cheapest feasible position of ``u`` in route ``q`` that beats ``best`` by more than
    ``EPS`` (scan order: first position wins near-ties): ``(delta, j)``, ``j = -1`` if none."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, demand, backhaul, service, flags = pr[0], pr[1], pr[2], pr[4], pr[8]
    n = lens[q]
    best_j = -1
    for j in range(n - 1):
        p = routes[q, j]
        s = routes[q, j + 1]
        delta = dist[p, u] + dist[u, s] - dist[p, s]
        if not delta < best - EPS:
            continue
        if not _fits(
            pl[q, n - 1] + demand[u],
            pb[q, n - 1] + backhaul[u],
            fw[q, n - 1] + delta,
            ps[q, n - 1] + service[u],
            pr,
        ):
            continue
        if flags & _WALK:
            m = _insert_into(q, j, u, st, buf)
            if not _walk_ok(buf, m, pr):
                continue
        best = delta
        best_j = j
    return best, best_j


@njit(cache=True)
def _empty_route(r, depot, st, pr):
    routes, lens = st[0], st[1]
    routes[r, 0] = depot
    routes[r, 1] = depot
    lens[r] = 2
    _refresh(r, st, pr)


@njit(cache=True)
def _eject(u, r, st, pr, buf):
    """Insert ``u`` in a route ``q`` (not ``r``) in place of one of its customers ``w``, which
    moves to its cheapest feasible position in a third route: the cheapest such pair of
    insertions (ties: first in row, position order). The last row is scratch (the route
    ``q`` without ``w``). True if applied."""
    routes, lens = st[0], st[1]
    dist = pr[0]
    scratch = lens.shape[0] - 1
    best = np.inf
    best_q = best_i = best_ju = best_t = best_jw = -1
    for q in range(scratch):
        n = lens[q]
        if q == r or n <= 2:
            continue
        for i in range(1, n - 1):
            w = routes[q, i]
            m = 0
            for idx in range(n):
                if idx != i:
                    buf[m] = routes[q, idx]
                    m += 1
            _commit(scratch, buf, m, st, pr)
            du, ju = _best_in_row(scratch, u, np.inf, st, pr, buf)
            if ju < 0:
                continue
            p = routes[q, i - 1]
            s = routes[q, i + 1]
            partial = dist[p, s] - dist[p, w] - dist[w, s] + du
            dw = np.inf
            t_w = -1
            j_w = -1
            for t in range(scratch):
                if t == r or t == q or lens[t] <= 2:
                    continue
                value, j = _best_in_row(t, w, dw, st, pr, buf)
                if j >= 0:
                    dw, t_w, j_w = value, t, j
            if t_w < 0:
                continue
            if partial + dw < best - EPS:
                best = partial + dw
                best_q, best_i, best_ju, best_t, best_jw = q, i, ju, t_w, j_w
    lens[scratch] = 0
    if best_q < 0:
        return False
    w = routes[best_q, best_i]
    m = 0
    for idx in range(lens[best_q]):
        if idx != best_i:
            buf[m] = routes[best_q, idx]
            m += 1
    _commit(best_q, buf, m, st, pr)
    m = _insert_into(best_q, best_ju, u, st, buf)
    _commit(best_q, buf, m, st, pr)
    m = _insert_into(best_t, best_jw, w, st, buf)
    _commit(best_t, buf, m, st, pr)
    return True


@njit(cache=True)
def _eliminate(r, slot, count, caps, st, pr, buf, saved, saved_lens):
    """Insert every customer of route ``r`` at its cheapest feasible position in another route
    (or, when ``slot >= 0``, in one new route opened in the empty row ``slot`` at a depot with a
    vehicle to spare); on failure restore the plan. True if route ``r`` was emptied."""
    routes, lens = st[0], st[1]
    demand, backhaul, nd = pr[1], pr[2], pr[9]
    saved[:, :] = routes
    saved_lens[:] = lens
    depot = routes[r, 0]
    m = lens[r] - 2
    custs = routes[r, 1 : m + 1].copy()
    # hardest first: decreasing linehaul plus backhaul amount, ties by position
    order = np.argsort(-(demand[custs] + backhaul[custs]), kind="mergesort")
    _empty_route(r, depot, st, pr)
    opened = False
    for t in range(m):
        u = custs[order[t]]
        best = np.inf
        best_q = -1
        best_j = -1
        for q in range(lens.shape[0]):
            if q == r or lens[q] <= 2:
                continue
            value, j = _best_in_row(q, u, best, st, pr, buf)
            if j >= 0:
                best, best_q, best_j = value, q, j
        if slot >= 0 and not opened:
            best_d = -1
            for d in range(nd):
                if count[d] >= caps[d]:
                    continue
                _empty_route(slot, d, st, pr)
                value, j = _best_in_row(slot, u, best, st, pr, buf)
                if j >= 0:
                    best, best_q, best_j, best_d = value, slot, 0, d
            if best_d >= 0:
                _empty_route(slot, best_d, st, pr)
                opened = True
        if best_q >= 0:
            n = _insert_into(best_q, best_j, u, st, buf)
            _commit(best_q, buf, n, st, pr)
        elif not _eject(u, r, st, pr, buf):
            routes[:, :] = saved
            lens[:] = saved_lens
            for q in range(lens.shape[0]):
                _refresh(q, st, pr)
            return False
    return True


@njit(cache=True)
def _rebase(r, slot, count, caps, st, pr, buf):
    """Serve route ``r``'s customers, in order, from the depot with a vehicle to spare where
    that route is feasible and shortest (ties: lower depot), in the empty row ``slot``."""
    routes, lens, route_of, pos_of, pl, pb, ps, fw, bw = st
    dist, flags, nd = pr[0], pr[8], pr[9]
    n = lens[r]
    best = np.inf
    best_d = -1
    for d in range(nd):
        if count[d] >= caps[d]:
            continue
        buf[0] = d
        for idx in range(1, n - 1):
            buf[idx] = routes[r, idx]
        buf[n - 1] = d
        length = 0.0
        for idx in range(n - 1):
            length += dist[buf[idx], buf[idx + 1]]
        if not length < best - EPS:
            continue
        if not _fits(pl[r, n - 1], pb[r, n - 1], length, ps[r, n - 1], pr):
            continue
        if flags & _WALK and not _walk_ok(buf, n, pr):
            continue
        best = length
        best_d = d
    if best_d < 0:
        return False
    buf[0] = best_d
    for idx in range(1, n - 1):
        buf[idx] = routes[r, idx]
    buf[n - 1] = best_d
    _commit(slot, buf, n, st, pr)
    _empty_route(r, routes[r, 0], st, pr)
    return True


@njit(cache=True)
def _repair_kernel(routes, lens, tried, pr, fleet, caps, max_attempts):
    """Fleet repair in place on ``routes [R, C]`` / ``lens [R]`` (at least one empty row).

    ``tried[r]``: route r failed to be emptied since the last success (kept by the caller
    between calls, so that a repair in slices equals one in a single call). Returns
    ``(attempts, finished)``: finished when the fleet fits or no route is left to try.
    """
    n_rows, width = routes.shape
    n = pr[0].shape[0]
    nd = pr[9]
    route_of = np.full(n, -1, dtype=np.int64)
    pos_of = np.full(n, -1, dtype=np.int64)
    pl = np.zeros((n_rows, width))
    pb = np.zeros((n_rows, width))
    ps = np.zeros((n_rows, width))
    fw = np.zeros((n_rows, width))
    bw = np.zeros((n_rows, width))
    st = (routes, lens, route_of, pos_of, pl, pb, ps, fw, bw)
    for q in range(n_rows):
        _refresh(q, st, pr)
    buf = np.empty(width, dtype=np.int64)
    saved = np.empty_like(routes)
    saved_lens = np.empty_like(lens)
    count = np.zeros(nd, dtype=np.int64)
    attempts = 0
    while True:
        count[:] = 0
        total = 0
        for q in range(n_rows):
            if lens[q] > 2:
                count[routes[q, 0]] += 1
                total += 1
        over_total = total > fleet
        over_any = over_total
        for d in range(nd):
            if count[d] > caps[d]:
                over_any = True
        if not over_any:
            return attempts, True
        # the route to empty: at an over-full depot first, fewest customers, least load, row
        r = -1
        r_key0 = 0
        r_len = 0
        r_load = 0.0
        for q in range(n_rows):
            if lens[q] <= 2 or tried[q]:
                continue
            over_q = count[routes[q, 0]] > caps[routes[q, 0]]
            if not (over_total or over_q):
                continue
            key0 = 0 if over_q else 1
            load = pl[q, lens[q] - 1] + pb[q, lens[q] - 1]
            if (
                r < 0
                or key0 < r_key0
                or (key0 == r_key0 and lens[q] < r_len)
                or (key0 == r_key0 and lens[q] == r_len and load < r_load)
            ):
                r, r_key0, r_len, r_load = q, key0, lens[q], load
        if r < 0:
            return attempts, True
        if attempts >= max_attempts:
            return attempts, False
        attempts += 1
        # first into the other routes; then, from an over-full depot, with one new route at
        # a depot with a vehicle to spare, or moved there whole
        ok = _eliminate(r, -1, count, caps, st, pr, buf, saved, saved_lens)
        if not ok and r_key0 == 0:
            slot = -1
            for q in range(n_rows):
                if q != r and lens[q] == 2:
                    slot = q
                    break
            ok = _eliminate(r, slot, count, caps, st, pr, buf, saved, saved_lens)
            if not ok:
                ok = _rebase(r, slot, count, caps, st, pr, buf)
        if ok:
            tried[:] = False
        else:
            tried[r] = True


def _prepare_repair(
    routes,
    depots,
    dist,
    demand,
    capacity,
    time_windows,
    service_time,
    num_depots,
    num_vehicles,
    vehicles_per_depot,
    max_attempts,
    backhaul,
    mixed_backhaul,
    open_routes,
    max_distance,
    max_duration,
):
    d = _as_dist(dist)
    lists = _md_routes(routes, depots, d.shape[0], num_depots)
    prob = _problem(
        d, demand, capacity, time_windows, service_time, backhaul, mixed_backhaul, open_routes,
        max_distance, max_duration, num_depots,
    )  # fmt: skip
    if num_vehicles is None:
        fleet = _UNLIMITED
    elif (
        isinstance(num_vehicles, bool)
        or not isinstance(num_vehicles, int | np.integer)
        or num_vehicles < 0
    ):
        raise ValueError(f"num_vehicles must be an integer >= 0 or None, got {num_vehicles!r}")
    else:
        fleet = int(num_vehicles)
    if vehicles_per_depot is None:
        caps = np.full(num_depots, _UNLIMITED, dtype=np.int64)
    else:
        vpd = np.asarray(vehicles_per_depot)
        if (
            vpd.shape != (num_depots,)
            or not np.issubdtype(vpd.dtype, np.integer)
            or (vpd < 0).any()
        ):
            raise ValueError(
                f"vehicles_per_depot must hold {num_depots} integers >= 0, got {vpd.tolist()}"
            )
        caps = np.ascontiguousarray(vpd, dtype=np.int64)
    if max_attempts is None:
        attempts = _UNLIMITED
    elif (
        isinstance(max_attempts, bool)
        or not isinstance(max_attempts, int | np.integer)
        or max_attempts < 0
    ):
        raise ValueError(f"max_attempts must be an integer >= 0 or None, got {max_attempts!r}")
    else:
        attempts = int(max_attempts)
    # one empty row more, the slot a route may be moved to (labelled depot 0 until used)
    lists = [*lists, [0, 0]]
    return lists, prob, fleet, caps, attempts


def _split_repaired(rows: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    keep = [r for r in rows if len(r) > 2]
    return [r[1:-1] for r in keep], [r[0] for r in keep]


def repair_fleet(
    routes: Sequence[Sequence[int]],
    depots: Sequence[int],
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    num_depots: int = 1,
    num_vehicles: int | None = None,
    vehicles_per_depot: Sequence[int] | np.ndarray | None = None,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    max_attempts: int | None = None,
    deadline: float | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Empty routes of a plan until it fits the fleet (numba kernel; see "Fleet repair").

    Parameters
    ----------
    routes, depots, dist, demand, capacity, time_windows, service_time, num_depots, backhaul, \
    mixed_backhaul, open_routes, max_distance, max_duration
        As in :func:`local_search_mdvrp` (``num_depots`` defaults to 1: depot 0, customers
        ``1..N-1``).
    num_vehicles : int, optional
        Most routes in all (None: no limit).
    vehicles_per_depot : sequence of int, shape [num_depots], optional
        Most routes from each depot (None: no limit per depot).
    max_attempts : int, optional
        Most route eliminations tried (successful or not); None: until done.
    deadline : float, optional
        A ``time.perf_counter()`` value: the kernel runs in slices of :data:`REPAIR_SLICE`
        attempts and stops after the slice that passes it (the result equals an unsliced
        repair that stopped at the same attempt).

    Returns
    -------
    (routes, depots)
        The non-empty routes (customers) and each one's depot, in row order (a route moved to
        another depot comes last or takes the row of an emptied one). Fewer or as many routes
        in all and at every over-full depot; no route the repair touched breaks a constraint.
    """
    lists, prob, fleet, caps, attempts = _prepare_repair(
        routes, depots, dist, demand, capacity, time_windows, service_time, num_depots,
        num_vehicles, vehicles_per_depot, max_attempts, backhaul, mixed_backhaul, open_routes,
        max_distance, max_duration,
    )  # fmt: skip
    n = prob.dist.shape[0]
    # the rows, then the kernel's scratch row (length 0: no route)
    arr = np.zeros((len(lists) + 1, n + 1), dtype=np.int64)
    lens = np.zeros(len(lists) + 1, dtype=np.int64)
    for r, route in enumerate(lists):
        arr[r, : len(route)] = route
        lens[r] = len(route)
    tried = np.zeros(len(lists) + 1, dtype=np.bool_)
    pr = _kernel_problem(prob)
    left = attempts
    while True:
        step = left if deadline is None else min(left, REPAIR_SLICE)
        used, finished = _repair_kernel(arr, lens, tried, pr, fleet, caps, step)
        left -= used
        if finished or left <= 0 or (deadline is not None and time.perf_counter() > deadline):
            break
    return _split_repaired([arr[r, : lens[r]].tolist() for r in range(len(lists))])


# ----------------------------------------------------------------------------------------------
# Plain-Python reference (same move order and acceptance rule, evaluated from scratch)
# ----------------------------------------------------------------------------------------------


def _reference_model(
    prob: _Problem,
) -> tuple[Callable[[list[int]], float], Callable[[list[int]], bool]]:
    """The plain-Python cost and feasibility of a route ``[depot, c1, ..., cm, depot]``
    (the module docstring's constraints, checked from scratch): the references' one model,
    shared by :func:`_reference_search` and :func:`_reference_repair`."""
    d = prob.dist.tolist()
    dem = prob.demand.tolist()
    capacity = prob.capacity
    tw = None if prob.time_windows is None else prob.time_windows.tolist()
    svc = [0.0] * len(d) if prob.service_time is None else prob.service_time.tolist()
    bh = None if prob.backhaul is None else prob.backhaul.tolist()
    mixed, open_routes = prob.mixed_backhaul, prob.open_routes
    max_distance, max_duration = prob.max_distance, prob.max_duration

    def legs(route: list[int]) -> list[float]:
        """Travel of each leg of ``route``, the return leg left out of an open route."""
        path = route[:-1] if open_routes else route
        return [d[a][b] for a, b in zip(path[:-1], path[1:])]

    def cost(route: list[int]) -> float:
        return sum(legs(route))

    def duration(depot: int, customers: list[int]) -> float:
        """PyVRP's duration of a non-empty route (nco.envs.mtvrp.route_duration)."""
        if tw is None:
            return cost([depot, *customers, depot]) + sum(svc[c] for c in customers)
        # the latest departure at which no window (nor, closed, the depot's closing time) is
        # missed when nothing waits
        latest, elapsed, prev = tw[depot][1], 0.0, depot
        for c in customers:
            elapsed += d[prev][c]
            latest = min(latest, tw[c][1] - elapsed)
            elapsed += svc[c]
            prev = c
        if not open_routes:
            latest = min(latest, tw[depot][1] - (elapsed + d[prev][depot]))
        if not math.isfinite(latest):  # no window closes: no waiting
            return cost([depot, *customers, depot]) + sum(svc[c] for c in customers)
        start = max(tw[depot][0], latest)
        t, prev = start, depot
        for c in customers:
            t = max(t + d[prev][c], tw[c][0]) + svc[c]
            prev = c
        if not open_routes:
            t += d[prev][depot]
        return t - start

    def feasible(route: list[int]) -> bool:
        depot, customers = route[0], route[1:-1]
        if sum(dem[c] for c in route) > capacity + EPS:
            return False
        if bh is not None:
            if sum(bh[c] for c in customers) > capacity + EPS:
                return False
            if mixed:
                on_board = sum(dem[c] for c in customers)
                for c in customers:
                    on_board += bh[c] - dem[c]
                    if on_board > capacity + EPS:
                        return False
            else:
                kinds = [bh[c] > 0 for c in customers]  # True: backhaul
                if any(later < earlier for earlier, later in zip(kinds, kinds[1:])):
                    return False  # a linehaul right after a backhaul
        if max_distance is not None and cost(route) > max_distance + EPS:
            return False
        if max_duration is not None and customers:
            # travel plus service: a lower bound of the duration (exact without windows)
            if cost(route) + sum(svc[c] for c in customers) > max_duration + EPS:
                return False
            if duration(depot, customers) > max_duration + EPS:
                return False
        if tw is None:
            return True
        t = tw[depot][0]
        prev = depot
        for c in customers:
            t = max(t + d[prev][c], tw[c][0])
            if t > tw[c][1] + EPS:
                return False
            t = t + svc[c]
            prev = c
        return open_routes or t + d[prev][depot] <= tw[depot][1] + EPS

    return cost, feasible


def _reference_search(routes, prob: _Problem, nb, ops, max_moves):
    """Plain-Python twin of :func:`_search_kernel` over lists of routes (modified in place)."""
    d = prob.dist.tolist()
    cost, feasible = _reference_model(prob)
    nd = prob.num_depots  # nodes 0..nd-1 are depots; a route starts and ends at its own
    where: dict[int, tuple[int, int]] = {}

    def index() -> None:
        where.clear()
        for r, route in enumerate(routes):
            for p, c in enumerate(route):
                if c >= nd:
                    where[c] = (r, p)

    def attempt(changes: list[tuple[int, list[int]]]) -> bool:
        delta = sum(cost(new) for _, new in changes) - sum(cost(routes[r]) for r, _ in changes)
        if not delta < -EPS or not all(feasible(new) for _, new in changes):
            return False
        for r, new in changes:
            routes[r] = new
        index()
        return True

    def relocate(u: int, rv: int, j: int) -> bool:
        ru, i = where[u]
        a, b = routes[ru], routes[rv]
        if u in (b[j], b[j + 1]):
            return False
        if ru != rv:
            return attempt([(ru, a[:i] + a[i + 1 :]), (rv, b[: j + 1] + [u] + b[j + 1 :])])
        new = a[:i] + a[i + 1 :]
        at = j if j < i else j - 1  # index of the insertion predecessor once u is removed
        new.insert(at + 1, u)
        return attempt([(ru, new)])

    def swap(u: int, v: int) -> bool:
        (ru, i), (rv, j) = where[u], where[v]
        a, b = list(routes[ru]), list(routes[rv])
        a[i], b[j] = v, u
        return attempt([(ru, a), (rv, b)])

    def tails(ra: int, ia: int, rb: int, ib: int) -> bool:
        # the tails are exchanged without their depots: each route returns to its own
        a, b = routes[ra], routes[rb]
        return attempt(
            [
                (ra, a[: ia + 1] + b[ib + 1 : -1] + a[-1:]),
                (rb, b[: ib + 1] + a[ia + 1 : -1] + b[-1:]),
            ]
        )

    def move_route(r: int, empty: int) -> bool:
        a, depot = routes[r], routes[empty][0]
        return attempt([(r, [a[0], a[0]]), (empty, [depot, *a[1:-1], depot])])

    def reverse(r: int, lo: int, hi: int) -> bool:
        a = routes[r]
        return attempt([(r, a[:lo] + a[lo : hi + 1][::-1] + a[hi + 1 :])])

    def try_pair(u: int, v: int) -> bool:
        ru, i = where[u]
        if v >= nd:
            rv, j = where[v]
            if ops & _RELOCATE and (relocate(u, rv, j) or relocate(u, rv, j - 1)):
                return True
            if ru != rv:
                if ops & _SWAP and swap(u, v):
                    return True
                if ops & _TWO_OPT_STAR and (tails(ru, i, rv, j - 1) or tails(rv, j, ru, i - 1)):
                    return True
            elif ops & _TWO_OPT:
                if j - i >= 2 and (reverse(ru, i + 1, j) or reverse(ru, i, j - 1)):
                    return True
                if i - j >= 2 and (reverse(ru, j + 1, i) or reverse(ru, j, i - 1)):
                    return True
            return False
        last = len(routes[ru]) - 2
        if v == routes[ru][0]:  # u's own depot
            if ops & _RELOCATE and (relocate(u, ru, 0) or relocate(u, ru, last)):
                return True
            if ops & _TWO_OPT:
                if i >= 2 and reverse(ru, 1, i):
                    return True
                if i <= last - 1 and reverse(ru, i, last):
                    return True
        if ops & _RELOCATE:
            empty = next((r for r, route in enumerate(routes) if route == [v, v]), None)
            if empty is not None and relocate(u, empty, 0):
                return True
            if empty is not None and v != routes[ru][0] and move_route(ru, empty):
                return True
        return False

    index()
    n = len(d)
    moves = 0
    improved = True
    while improved and moves < max_moves:
        improved = False
        for u in range(nd, n):
            for v in nb[u]:
                if moves >= max_moves:
                    break
                if v != u and try_pair(u, int(v)):
                    moves += 1
                    improved = True
    return routes


def local_search_vrp_reference(
    routes_flat: np.ndarray,
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Plain-Python reference of :func:`local_search_vrp` (same arguments, identical result).

    Every candidate move builds its new routes as lists and is evaluated by recomputing the cost
    of the touched routes and re-checking their feasibility from scratch (on ``dist`` itself,
    leaving the return legs of open routes out).
    """
    routes, prob, nb, max_moves = _prepare_vrp(
        routes_flat, dist, demand, capacity, time_windows, service_time, neighbours, k,
        max_iterations, backhaul, mixed_backhaul, open_routes, max_distance, max_duration,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return _join_routes(_reference_search(routes, prob, nb, ops, max_moves))


def local_search_mdvrp_reference(
    routes: Sequence[Sequence[int]],
    depots: Sequence[int],
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    num_depots: int,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> list[list[int]]:
    """Plain-Python reference of :func:`local_search_mdvrp` (same arguments, identical result)."""
    lists, prob, nb, max_moves = _prepare_mdvrp(
        routes, depots, dist, demand, capacity, time_windows, service_time, num_depots,
        neighbours, k, max_iterations, backhaul, mixed_backhaul, open_routes, max_distance,
        max_duration,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return [r[1:-1] for r in _reference_search(lists, prob, nb, ops, max_moves)]


def local_search_tsp_reference(
    tour: np.ndarray,
    dist: np.ndarray,
    *,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Plain-Python reference of :func:`local_search_tsp` (same arguments, identical result)."""
    routes, prob, nb, max_moves = _prepare_tsp(tour, dist, neighbours, k, max_iterations)
    ops = _operator_mask(operators)
    out = _reference_search(routes, prob, nb, ops, max_moves)
    return np.asarray(out[0][:-1], dtype=np.int64)


def _reference_repair(rows, prob: _Problem, fleet: int, caps, max_attempts: int):
    """Plain-Python twin of :func:`_repair_kernel` over lists of routes (modified in place)."""
    cost, feasible = _reference_model(prob)
    dem = prob.demand.tolist()
    bh = [0.0] * len(dem) if prob.backhaul is None else prob.backhaul.tolist()
    nd = prob.num_depots
    caps = [int(c) for c in caps]
    tried = [False] * len(rows)

    def cheapest(u: int, route: list[int], best: float) -> tuple[float, int]:
        """The first position of ``u`` in ``route`` that beats ``best`` by more than EPS."""
        best_j = -1
        for j in range(len(route) - 1):
            new = route[: j + 1] + [u] + route[j + 1 :]
            delta = cost(new) - cost(route)
            if delta < best - EPS and feasible(new):
                best, best_j = delta, j
        return best, best_j

    def eliminate(r: int, slot: int, count: list[int]) -> bool:
        saved = [list(route) for route in rows]
        depot, custs = rows[r][0], rows[r][1:-1]
        order = sorted(range(len(custs)), key=lambda t: (-(dem[custs[t]] + bh[custs[t]]), t))
        rows[r] = [depot, depot]
        opened = False

        def eject(u: int) -> bool:
            best, move = math.inf, None
            for q, route in enumerate(rows):
                if q == r or len(route) <= 2:
                    continue
                for i in range(1, len(route) - 1):
                    w, rest = route[i], route[:i] + route[i + 1 :]
                    du, ju = cheapest(u, rest, math.inf)
                    if ju < 0:
                        continue
                    with_u = rest[: ju + 1] + [u] + rest[ju + 1 :]
                    dw, t_w, j_w = math.inf, -1, -1
                    for t, other in enumerate(rows):
                        if t not in (r, q) and len(other) > 2:
                            value, j = cheapest(w, other, dw)
                            if j >= 0:
                                dw, t_w, j_w = value, t, j
                    if t_w >= 0 and cost(with_u) - cost(route) + dw < best - EPS:
                        best, move = cost(with_u) - cost(route) + dw, (q, with_u, t_w, j_w, w)
            if move is None:
                return False
            q, with_u, t_w, j_w, w = move
            rows[q] = with_u
            rows[t_w] = rows[t_w][: j_w + 1] + [w] + rows[t_w][j_w + 1 :]
            return True

        for t in order:
            u = custs[t]
            best, best_q, best_j = math.inf, -1, -1
            for q, route in enumerate(rows):
                if q != r and len(route) > 2:
                    value, j = cheapest(u, route, best)
                    if j >= 0:
                        best, best_q, best_j = value, q, j
            if slot >= 0 and not opened:
                best_d = -1
                for d in range(nd):
                    if count[d] < caps[d]:
                        value, j = cheapest(u, [d, d], best)
                        if j >= 0:
                            best, best_q, best_j, best_d = value, slot, 0, d
                if best_d >= 0:
                    rows[slot] = [best_d, best_d]
                    opened = True
            if best_q >= 0:
                route = rows[best_q]
                rows[best_q] = route[: best_j + 1] + [u] + route[best_j + 1 :]
            elif not eject(u):
                rows[:] = saved
                return False
        return True

    def rebase(r: int, slot: int, count: list[int]) -> bool:
        best, best_d = math.inf, -1
        for d in range(nd):
            if count[d] < caps[d]:
                new = [d, *rows[r][1:-1], d]
                length = cost(new)
                if length < best - EPS and feasible(new):
                    best, best_d = length, d
        if best_d < 0:
            return False
        rows[slot] = [best_d, *rows[r][1:-1], best_d]
        rows[r] = [rows[r][0], rows[r][0]]
        return True

    def key(q: int, count: list[int]) -> tuple:
        route = rows[q]
        load = sum(dem[c] for c in route) + sum(bh[c] for c in route)
        return (count[route[0]] <= caps[route[0]], len(route), load, q)

    attempts = 0
    while True:
        count = [0] * nd
        for route in rows:
            if len(route) > 2:
                count[route[0]] += 1
        over_total = sum(count) > fleet
        if not over_total and all(count[d] <= caps[d] for d in range(nd)):
            return rows
        candidates = [
            q
            for q, route in enumerate(rows)
            if len(route) > 2 and not tried[q] and (over_total or count[route[0]] > caps[route[0]])
        ]
        if not candidates or attempts >= max_attempts:
            return rows
        # at an over-full depot first, fewest customers, least load, row
        r = min(candidates, key=lambda q: key(q, count))
        attempts += 1
        ok = eliminate(r, -1, count)
        if not ok and count[rows[r][0]] > caps[rows[r][0]]:
            slot = next(q for q, route in enumerate(rows) if q != r and len(route) == 2)
            ok = eliminate(r, slot, count) or rebase(r, slot, count)
        if ok:
            tried = [False] * len(rows)
        else:
            tried[r] = True


def repair_fleet_reference(
    routes: Sequence[Sequence[int]],
    depots: Sequence[int],
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    num_depots: int = 1,
    num_vehicles: int | None = None,
    vehicles_per_depot: Sequence[int] | np.ndarray | None = None,
    backhaul: np.ndarray | None = None,
    mixed_backhaul: bool = False,
    open_routes: bool = False,
    max_distance: float | None = None,
    max_duration: float | None = None,
    max_attempts: int | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Plain-Python reference of :func:`repair_fleet` (same arguments but ``deadline``,
    identical result): every insertion builds the new route as a list, costs it and checks it
    from scratch."""
    lists, prob, fleet, caps, attempts = _prepare_repair(
        routes, depots, dist, demand, capacity, time_windows, service_time, num_depots,
        num_vehicles, vehicles_per_depot, max_attempts, backhaul, mixed_backhaul, open_routes,
        max_distance, max_duration,
    )  # fmt: skip
    return _split_repaired(_reference_repair(lists, prob, fleet, caps, attempts))
