"""Granular local search for CVRP, CVRPTW and TSP: numba kernels and plain-Python references.

This module improves one solution of one instance with classical moves restricted to granular
neighbour lists (Toth & Vigo's granular tabu search; Vidal's HGS): a move between a node ``u`` and
one of its ``k`` nearest nodes ``v`` is only tried when it makes ``u`` adjacent to ``v``.

* :func:`neighbour_lists`: the ``k`` nearest nodes of every node;
* :func:`local_search_vrp` / :func:`local_search_tsp`: the numba kernels (``@njit(cache=True)``);
* :func:`local_search_vrp_reference` / :func:`local_search_tsp_reference`: plain-Python references
  with the same move order and acceptance rule, written independently (moves build new route lists
  and are evaluated by recomputing route costs and re-checking routes from scratch), so the two
  return identical solutions on the same input (barring a candidate whose cost change lies within
  floating-point rounding, about 1e-12, of the ``-1e-9`` acceptance threshold);
* :func:`route_cost`: the cost of a flat route array.

Data and representation
-----------------------
``dist`` is a float64 ``[N, N]`` matrix, possibly asymmetric (reversing a segment then changes its
cost; the kernel accounts for it exactly with forward and backward prefix sums); travel time equals
distance. Node 0 is the depot. A VRP solution is a flat int64 array of node ids with 0 as the
separator, starting and ending with 0, e.g. ``[0, 3, 1, 0, 2, 5, 4, 0]``; consecutive zeros are
empty routes. A TSP tour is a permutation of ``0..N-1`` (closed tour).

CVRPTW feasibility of a route ``0, c1, ..., cm, 0``: the vehicle leaves the depot at
``time_windows[0, 0]``; arrival at ``j`` is the departure from the previous node plus
``dist[prev, j]``; service starts at ``max(arrival, earliest_j)`` (waiting allowed); the route is
infeasible if a start exceeds ``latest_j + 1e-9``; departure is start plus ``service_time[j]``; the
vehicle must be back at the depot by ``time_windows[0, 1] + 1e-9``. The depot's service time is
ignored. Capacity: the route load (sum of ``demand``, ``demand[0]`` ignored) must be at most
``capacity + 1e-9``.

Search (deterministic first improvement)
----------------------------------------
Passes are repeated until a full pass applies no move or ``max_iterations`` moves were applied.
One pass visits ``u = 1, ..., N-1`` in increasing order and, for each ``u``, its neighbours ``v``
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
``v`` the depot
    8. relocate ``u`` to the start, 9. to the end of its own route; 10. 2-opt reversing positions
    ``1..i`` (creates ``0 -> u``), 11. reversing ``i..L-2`` (creates ``u -> 0``); 12. relocate ``u``
    into the first empty route, if the solution has one.

A move is acceptable when it lowers the cost by more than ``1e-9`` and **every route it produces
is feasible** (capacity, and time windows when given). Hence the search terminates, never worsens
the cost, and never creates a violation: on an infeasible input, infeasible routes are left
untouched unless a move turns them (and every other route it touches) feasible. The number of
routes never exceeds the input's: empty routes in the input act as spare vehicles; empty routes are
dropped from the output. For the TSP the tour is rotated to start at node 0 and searched as a single
route with node 0 as its depot (so only 2-opt reversals of segments not containing node 0 and
relocations of nodes other than 0 are considered; for a symmetric ``dist`` reversing the
complementary segment gives the same tour).

Cost of the kernel: a candidate's cost change is evaluated in O(1) (2-opt on an asymmetric matrix
uses per-route forward/backward prefix sums); only candidates that improve and pass the O(1)
capacity test are built and, with time windows, re-checked route-wise in O(route length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

__all__ = [
    "OPERATORS",
    "local_search_tsp",
    "local_search_tsp_reference",
    "local_search_vrp",
    "local_search_vrp_reference",
    "neighbour_lists",
    "route_cost",
]

EPS = 1e-9
"""Improvement threshold and feasibility tolerance (capacity and time windows)."""

OPERATORS: tuple[str, ...] = ("relocate", "swap", "2opt", "2opt*")
"""Names accepted by the ``operators`` argument (all enabled by default)."""

_OP_BITS = {"relocate": 1, "swap": 2, "2opt": 4, "2opt*": 8}
_RELOCATE, _SWAP, _TWO_OPT, _TWO_OPT_STAR = 1, 2, 4, 8


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


def _prepare_vrp(
    routes_flat, dist, demand, capacity, time_windows, service_time, neighbours, k, max_iterations
):
    d = _as_dist(dist)
    n = d.shape[0]
    routes = _split_routes(routes_flat, n)
    dem = np.array(demand, dtype=np.float64).reshape(-1)
    if dem.shape != (n,) or not np.all(np.isfinite(dem)):
        raise ValueError(f"demand must be finite with shape [N={n}], got {dem.shape}")
    dem[0] = 0.0
    cap = float(capacity)
    if not cap >= 0:
        raise ValueError(f"capacity must be >= 0, got {capacity!r}")
    tw = None
    svc = None
    if time_windows is not None:
        tw = np.ascontiguousarray(time_windows, dtype=np.float64)
        if tw.shape != (n, 2) or np.isnan(tw).any():
            raise ValueError(f"time_windows must have shape [N={n}, 2], got {tw.shape}")
        if service_time is None:
            svc = np.zeros(n)
        else:
            svc = np.ascontiguousarray(service_time, dtype=np.float64).reshape(-1)
            if svc.shape != (n,) or not np.all(np.isfinite(svc)):
                raise ValueError(f"service_time must be finite with shape [N={n}]")
    nb = _resolve_neighbours(d, neighbours, k)
    return routes, d, dem, cap, tw, svc, nb, _check_max_iterations(max_iterations)


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
    return routes, d, nb, _check_max_iterations(max_iterations)


def _join_routes(routes: list[list[int]]) -> np.ndarray:
    flat = [0]
    for r in routes:
        if len(r) > 2:
            flat.extend(r[1:])
    return np.asarray(flat, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Numba kernel
# ----------------------------------------------------------------------------------------------


@njit(cache=True)
def _refresh(r, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw):
    """Recompute prefix loads / forward / backward costs and node positions of route ``r``."""
    pl[r, 0] = 0.0
    fw[r, 0] = 0.0
    bw[r, 0] = 0.0
    for p in range(1, lens[r]):
        a = routes[r, p - 1]
        b = routes[r, p]
        pl[r, p] = pl[r, p - 1] + demand[b]
        fw[r, p] = fw[r, p - 1] + dist[a, b]
        bw[r, p] = bw[r, p - 1] + dist[b, a]
        if b != 0:
            route_of[b] = r
            pos_of[b] = p


@njit(cache=True)
def _tw_ok(seq, n, dist, tw, service):
    """Time-window feasibility of the route ``seq[:n]`` (``seq[0] = seq[n-1] = 0``)."""
    t = tw[0, 0]
    prev = 0
    for p in range(1, n - 1):
        j = seq[p]
        t = t + dist[prev, j]
        if t < tw[j, 0]:
            t = tw[j, 0]
        if t > tw[j, 1] + EPS:
            return False
        t = t + service[j]
        prev = j
    t = t + dist[prev, 0]
    return t <= tw[0, 1] + EPS


@njit(cache=True)
def _commit(r, buf, n, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw):
    for p in range(n):
        routes[r, p] = buf[p]
    lens[r] = n
    _refresh(r, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)


@njit(cache=True)
def _relocate(u, rv, j, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
    """Move ``u`` between positions ``j`` and ``j + 1`` of route ``rv``."""
    routes, lens, route_of, pos_of, pl, fw, bw = st
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
        if pl[rv, lb - 1] + demand[u] > capacity + EPS:
            return False
        if pl[ru, la - 1] - demand[u] > capacity + EPS:
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
        if has_tw and not (
            _tw_ok(bufa, n, dist, tw, service) and _tw_ok(bufb, m, dist, tw, service)
        ):
            return False
        _commit(ru, bufa, n, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
        _commit(rv, bufb, m, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
        return True
    if pl[ru, la - 1] > capacity + EPS:
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
    if has_tw and not _tw_ok(bufa, n, dist, tw, service):
        return False
    _commit(ru, bufa, n, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    return True


@njit(cache=True)
def _swap(u, v, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
    """Exchange customers ``u`` and ``v`` of two different routes."""
    routes, lens, route_of, pos_of, pl, fw, bw = st
    ru = route_of[u]
    rv = route_of[v]
    i = pos_of[u]
    j = pos_of[v]
    pu = routes[ru, i - 1]
    su = routes[ru, i + 1]
    pv = routes[rv, j - 1]
    sv = routes[rv, j + 1]
    delta = (dist[pu, v] + dist[v, su] - dist[pu, u] - dist[u, su]) + (
        dist[pv, u] + dist[u, sv] - dist[pv, v] - dist[v, sv]
    )
    if not delta < -EPS:
        return False
    la = lens[ru]
    lb = lens[rv]
    if pl[ru, la - 1] - demand[u] + demand[v] > capacity + EPS:
        return False
    if pl[rv, lb - 1] - demand[v] + demand[u] > capacity + EPS:
        return False
    for idx in range(la):
        bufa[idx] = routes[ru, idx]
    bufa[i] = v
    for idx in range(lb):
        bufb[idx] = routes[rv, idx]
    bufb[j] = u
    if has_tw and not (_tw_ok(bufa, la, dist, tw, service) and _tw_ok(bufb, lb, dist, tw, service)):
        return False
    _commit(ru, bufa, la, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    _commit(rv, bufb, lb, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    return True


@njit(cache=True)
def _tails(ra, ia, rb, ib, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
    """2-opt*: route ``ra`` becomes ``A[:ia+1] + B[ib+1:]``, route ``rb`` ``B[:ib+1] + A[ia+1:]``."""
    routes, lens, route_of, pos_of, pl, fw, bw = st
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
    if pl[ra, ia] + (load_b - pl[rb, ib]) > capacity + EPS:
        return False
    if pl[rb, ib] + (load_a - pl[ra, ia]) > capacity + EPS:
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
    if has_tw and not (_tw_ok(bufa, n, dist, tw, service) and _tw_ok(bufb, m, dist, tw, service)):
        return False
    _commit(ra, bufa, n, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    _commit(rb, bufb, m, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    return True


@njit(cache=True)
def _reverse(r, a, b, st, dist, demand, capacity, tw, service, has_tw, bufa):
    """2-opt: reverse positions ``a..b`` (``1 <= a < b <= L - 2``) of route ``r``."""
    routes, lens, route_of, pos_of, pl, fw, bw = st
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
    if pl[r, n - 1] > capacity + EPS:
        return False
    for idx in range(n):
        bufa[idx] = routes[r, idx]
    for t in range(b - a + 1):
        bufa[a + t] = routes[r, b - t]
    if has_tw and not _tw_ok(bufa, n, dist, tw, service):
        return False
    _commit(r, bufa, n, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    return True


@njit(cache=True)
def _try_pair(u, v, ops, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
    """Try the moves of the pair ``(u, v)`` in the documented order; True if one was applied."""
    routes, lens, route_of, pos_of, pl, fw, bw = st
    ru = route_of[u]
    i = pos_of[u]
    if v != 0:
        rv = route_of[v]
        j = pos_of[v]
        if ops & _RELOCATE:
            if _relocate(u, rv, j, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
                return True
            if _relocate(u, rv, j - 1, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
                return True
        if ru != rv:
            if ops & _SWAP:
                if _swap(u, v, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
                    return True
            if ops & _TWO_OPT_STAR:
                if _tails(
                    ru, i, rv, j - 1, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb
                ):
                    return True
                if _tails(
                    rv, j, ru, i - 1, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb
                ):
                    return True
        elif ops & _TWO_OPT:
            if j - i >= 2:
                if _reverse(ru, i + 1, j, st, dist, demand, capacity, tw, service, has_tw, bufa):
                    return True
                if _reverse(ru, i, j - 1, st, dist, demand, capacity, tw, service, has_tw, bufa):
                    return True
            elif i - j >= 2:
                if _reverse(ru, j + 1, i, st, dist, demand, capacity, tw, service, has_tw, bufa):
                    return True
                if _reverse(ru, j, i - 1, st, dist, demand, capacity, tw, service, has_tw, bufa):
                    return True
        return False
    la = lens[ru]
    if ops & _RELOCATE:
        if _relocate(u, ru, 0, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
            return True
        if _relocate(u, ru, la - 2, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
            return True
    if ops & _TWO_OPT:
        if i >= 2:
            if _reverse(ru, 1, i, st, dist, demand, capacity, tw, service, has_tw, bufa):
                return True
        if i <= la - 3:
            if _reverse(ru, i, la - 2, st, dist, demand, capacity, tw, service, has_tw, bufa):
                return True
    if ops & _RELOCATE:
        empty = -1
        for r in range(lens.shape[0]):
            if lens[r] == 2:
                empty = r
                break
        if empty >= 0:
            if _relocate(u, empty, 0, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb):
                return True
    return False


@njit(cache=True)
def _search_kernel(
    routes, lens, dist, demand, capacity, tw, service, has_tw, neighbours, ops, max_moves
):
    """Granular first-improvement search, in place on ``routes [R, C]`` / ``lens [R]``.

    Returns the number of applied moves.
    """
    n_routes, width = routes.shape
    n = dist.shape[0]
    route_of = np.full(n, -1, dtype=np.int64)
    pos_of = np.full(n, -1, dtype=np.int64)
    pl = np.zeros((n_routes, width))
    fw = np.zeros((n_routes, width))
    bw = np.zeros((n_routes, width))
    for r in range(n_routes):
        _refresh(r, routes, lens, route_of, pos_of, demand, dist, pl, fw, bw)
    st = (routes, lens, route_of, pos_of, pl, fw, bw)
    bufa = np.empty(width, dtype=np.int64)
    bufb = np.empty(width, dtype=np.int64)
    k = neighbours.shape[1]
    moves = 0
    improved = True
    while improved and moves < max_moves:
        improved = False
        for u in range(1, n):
            for t in range(k):
                if moves >= max_moves:
                    break
                v = neighbours[u, t]
                if v == u:
                    continue
                if _try_pair(
                    u, v, ops, st, dist, demand, capacity, tw, service, has_tw, bufa, bufb
                ):
                    moves += 1
                    improved = True
    return moves


def _run_kernel(routes, d, dem, cap, tw, svc, nb, ops, max_moves) -> list[list[int]]:
    n = d.shape[0]
    n_routes = len(routes)
    if n_routes == 0:
        return routes
    width = n + 1
    arr = np.zeros((n_routes, width), dtype=np.int64)
    lens = np.zeros(n_routes, dtype=np.int64)
    for r, route in enumerate(routes):
        arr[r, : len(route)] = route
        lens[r] = len(route)
    has_tw = tw is not None
    tw_arr = tw if has_tw else np.zeros((1, 2))
    svc_arr = svc if has_tw else np.zeros(1)
    _search_kernel(arr, lens, d, dem, cap, tw_arr, svc_arr, has_tw, nb, ops, max_moves)
    return [arr[r, : lens[r]].tolist() for r in range(n_routes)]


def local_search_vrp(
    routes_flat: np.ndarray,
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray | None = None,
    service_time: np.ndarray | None = None,
    *,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Improve a CVRP / CVRPTW solution with granular local search (numba kernel).

    Parameters
    ----------
    routes_flat : ndarray, int, shape [L]
        Flat solution with 0 as separator, starting and ending with 0; every customer
        ``1..N-1`` exactly once. Empty routes (``0, 0``) are spare vehicles the search may use.
    dist : ndarray, float, shape [N, N]
        Distances (= travel times), possibly asymmetric.
    demand : ndarray, float, shape [N]
        Customer demands; ``demand[0]`` is ignored.
    capacity : float
        Vehicle capacity.
    time_windows : ndarray, float, shape [N, 2], optional
        ``[earliest, latest]`` service start; row 0 is ``[departure, horizon]`` of the depot.
    service_time : ndarray, float, shape [N], optional
        Service durations (only used with ``time_windows``; zeros if omitted).
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
        The improved solution in the same flat format, empty routes dropped. Its cost is never
        higher than the input's and every route it changed is feasible (see the module docstring).
    """
    routes, d, dem, cap, tw, svc, nb, max_moves = _prepare_vrp(
        routes_flat, dist, demand, capacity, time_windows, service_time, neighbours, k,
        max_iterations,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return _join_routes(_run_kernel(routes, d, dem, cap, tw, svc, nb, ops, max_moves))


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
    routes, d, nb, max_moves = _prepare_tsp(tour, dist, neighbours, k, max_iterations)
    n = d.shape[0]
    ops = _operator_mask(operators)
    out = _run_kernel(routes, d, np.zeros(n), np.inf, None, None, nb, ops, max_moves)
    return np.asarray(out[0][:-1], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Plain-Python reference (same move order and acceptance rule, evaluated from scratch)
# ----------------------------------------------------------------------------------------------


def _reference_search(routes, d_arr, dem_arr, capacity, tw_arr, svc_arr, nb, ops, max_moves):
    """Plain-Python twin of :func:`_search_kernel` over lists of routes (modified in place)."""
    d = d_arr.tolist()
    dem = dem_arr.tolist()
    tw = None if tw_arr is None else tw_arr.tolist()
    svc = [0.0] * len(d) if svc_arr is None else svc_arr.tolist()
    where: dict[int, tuple[int, int]] = {}

    def index() -> None:
        where.clear()
        for r, route in enumerate(routes):
            for p, c in enumerate(route):
                if c != 0:
                    where[c] = (r, p)

    def cost(route: list[int]) -> float:
        return sum(d[a][b] for a, b in zip(route[:-1], route[1:]))

    def feasible(route: list[int]) -> bool:
        if sum(dem[c] for c in route) > capacity + EPS:
            return False
        if tw is None:
            return True
        t = tw[0][0]
        prev = 0
        for c in route[1:-1]:
            t = max(t + d[prev][c], tw[c][0])
            if t > tw[c][1] + EPS:
                return False
            t = t + svc[c]
            prev = c
        return t + d[prev][0] <= tw[0][1] + EPS

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
        a, b = routes[ra], routes[rb]
        return attempt([(ra, a[: ia + 1] + b[ib + 1 :]), (rb, b[: ib + 1] + a[ia + 1 :])])

    def reverse(r: int, lo: int, hi: int) -> bool:
        a = routes[r]
        return attempt([(r, a[:lo] + a[lo : hi + 1][::-1] + a[hi + 1 :])])

    def try_pair(u: int, v: int) -> bool:
        ru, i = where[u]
        if v != 0:
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
        if ops & _RELOCATE and (relocate(u, ru, 0) or relocate(u, ru, last)):
            return True
        if ops & _TWO_OPT:
            if i >= 2 and reverse(ru, 1, i):
                return True
            if i <= last - 1 and reverse(ru, i, last):
                return True
        if ops & _RELOCATE:
            empty = next((r for r, route in enumerate(routes) if len(route) == 2), None)
            if empty is not None and relocate(u, empty, 0):
                return True
        return False

    index()
    n = len(d)
    moves = 0
    improved = True
    while improved and moves < max_moves:
        improved = False
        for u in range(1, n):
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
    neighbours: np.ndarray | None = None,
    k: int = 20,
    max_iterations: int = 10_000,
    operators: Sequence[str] | None = None,
) -> np.ndarray:
    """Plain-Python reference of :func:`local_search_vrp` (same arguments, identical result).

    Every candidate move builds its new routes as lists and is evaluated by recomputing the cost
    of the touched routes and re-checking their feasibility from scratch.
    """
    routes, d, dem, cap, tw, svc, nb, max_moves = _prepare_vrp(
        routes_flat, dist, demand, capacity, time_windows, service_time, neighbours, k,
        max_iterations,
    )  # fmt: skip
    ops = _operator_mask(operators)
    return _join_routes(_reference_search(routes, d, dem, cap, tw, svc, nb, ops, max_moves))


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
    routes, d, nb, max_moves = _prepare_tsp(tour, dist, neighbours, k, max_iterations)
    n = d.shape[0]
    ops = _operator_mask(operators)
    out = _reference_search(routes, d, np.zeros(n), np.inf, None, None, nb, ops, max_moves)
    return np.asarray(out[0][:-1], dtype=np.int64)
