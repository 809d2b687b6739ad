"""Tests for nco.kernels.local_search: numba kernels against the plain-Python references.

The feasibility checker below is written independently of the module (it shares no code with it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nco.kernels.local_search import (
    OPERATORS,
    local_search_tsp,
    local_search_tsp_reference,
    local_search_vrp,
    local_search_vrp_reference,
    neighbour_lists,
    route_cost,
)

TOL = 1e-9

# ----------------------------------------------------------------------------------------------
# Instances, initial solutions and an independent checker
# ----------------------------------------------------------------------------------------------


def _dist(rng: np.random.Generator, n: int, asym: bool, scale: float = 1.0) -> np.ndarray:
    xy = rng.random((n, 2)) * scale
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    if asym:
        d = d * rng.uniform(0.6, 1.4, (n, n))
        np.fill_diagonal(d, 0.0)
    return d


def _demand(rng: np.random.Generator, n: int) -> np.ndarray:
    dem = rng.integers(1, 10, n).astype(np.float64)
    dem[0] = 0.0
    return dem


def _split_by_capacity(
    rng: np.random.Generator, dem: np.ndarray, cap: float, spare: int = 0
) -> list[list[int]]:
    """Random customer order cut greedily into capacity-feasible routes (+ spare empty routes)."""
    routes: list[list[int]] = [[]]
    load = 0.0
    for c in rng.permutation(np.arange(1, len(dem))).tolist():
        if load + dem[c] > cap and routes[-1]:
            routes.append([])
            load = 0.0
        routes[-1].append(c)
        load += dem[c]
    return routes + [[] for _ in range(spare)]


def _flat(routes: list[list[int]]) -> np.ndarray:
    out = [0]
    for r in routes:
        out += [*r, 0]
    return np.asarray(out, dtype=np.int64)


def _routes_of(flat: np.ndarray) -> list[list[int]]:
    routes, cur = [], []
    for node in flat.tolist()[1:]:
        if node == 0:
            routes.append(cur)
            cur = []
        else:
            cur.append(node)
    return routes


def _time_windows(
    rng: np.random.Generator, d: np.ndarray, routes: list[list[int]], width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Time windows around the schedule of ``routes`` (which is therefore feasible)."""
    n = d.shape[0]
    service = rng.uniform(0.0, 0.1, n)
    service[0] = 0.0
    tw = np.zeros((n, 2))
    horizon = 0.0
    for r in routes:
        t, prev = 0.0, 0
        for c in r:
            t += d[prev, c]
            tw[c] = [max(0.0, t - rng.uniform(0, width)), t + rng.uniform(0, width)]
            t += service[c]
            prev = c
        horizon = max(horizon, t + d[prev, 0])
    tw[0] = [0.0, horizon + rng.uniform(0, width)]
    return tw, service


def _route_violations(route, d, dem, cap, tw=None, service=None) -> list[str]:
    out = []
    load = float(np.sum(dem[route])) if route else 0.0
    if load > cap + TOL:
        out.append(f"load {load} > {cap}")
    if tw is not None:
        clock = tw[0, 0]
        path = [0, *route]
        for a, b in zip(path[:-1], path[1:]):
            clock = max(clock + d[a, b], tw[b, 0])
            if clock > tw[b, 1] + TOL:
                out.append(f"late at {b}")
            clock += service[b]
        if clock + d[path[-1], 0] > tw[0, 1] + TOL:
            out.append("late at depot")
    return out


def _check_vrp(flat, n, d, dem, cap, tw=None, service=None) -> list[str]:
    """Independent checker: format, visits, capacity and time windows; [] when feasible."""
    flat = np.asarray(flat)
    errors = []
    if flat[0] != 0 or flat[-1] != 0:
        errors.append("must start and end at the depot")
    visited = sorted(int(c) for c in flat if c != 0)
    if visited != list(range(1, n)):
        errors.append("customers not visited exactly once")
    for r in _routes_of(flat):
        errors += _route_violations(r, d, dem, cap, tw, service)
    return errors


def _tour_cost(tour: np.ndarray, d: np.ndarray) -> float:
    return float(sum(d[tour[i], tour[(i + 1) % len(tour)]] for i in range(len(tour))))


def _cvrp(seed: int, n: int, asym: bool, spare: int = 0):
    rng = np.random.default_rng(seed)
    d = _dist(rng, n, asym)
    dem = _demand(rng, n)
    cap = float(max(dem.max(), rng.integers(10, 30)))
    routes = _split_by_capacity(rng, dem, cap, spare)
    return d, dem, cap, routes


def _cvrptw(seed: int, n: int, asym: bool, spare: int = 0):
    d, dem, cap, routes = _cvrp(seed, n, asym, spare)
    rng = np.random.default_rng(seed + 1_000)
    tw, service = _time_windows(rng, d, routes, width=float(rng.choice([0.1, 0.5, 2.0])))
    return d, dem, cap, routes, tw, service


# ----------------------------------------------------------------------------------------------
# Neighbour lists and helpers
# ----------------------------------------------------------------------------------------------


def test_neighbour_lists_sorted_without_self():
    rng = np.random.default_rng(0)
    d = _dist(rng, 12, asym=True)
    nb = neighbour_lists(d, 5)
    assert nb.shape == (12, 5) and nb.dtype == np.int64
    for i in range(12):
        assert i not in nb[i]
        others = [j for j in np.argsort(d[i], kind="stable") if j != i]
        assert nb[i].tolist() == others[:5]
    assert neighbour_lists(d, 50).shape == (12, 11)


def test_route_cost():
    d = np.arange(16, dtype=float).reshape(4, 4)
    assert (
        route_cost(np.array([0, 1, 0, 2, 3, 0]), d)
        == d[0, 1] + d[1, 0] + d[0, 2] + d[2, 3] + d[3, 0]
    )


def test_invalid_inputs_rejected():
    d = np.ones((4, 4))
    dem = np.ones(4)
    for bad in ([1, 2, 3, 0], [0, 1, 2, 0], [0, 1, 1, 2, 3, 0], [0, 1, 2, 5, 0]):
        with pytest.raises(ValueError):
            local_search_vrp(np.array(bad), d, dem, 10.0)
        with pytest.raises(ValueError):
            local_search_vrp_reference(np.array(bad), d, dem, 10.0)
    with pytest.raises(ValueError):
        local_search_tsp(np.array([0, 1, 1, 2]), d)
    with pytest.raises(ValueError):
        local_search_vrp(np.array([0, 1, 2, 3, 0]), d, dem, 10.0, operators=["3opt"])


# ----------------------------------------------------------------------------------------------
# Kernel == reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_parity_cvrp(seed, asym):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 30))
    d, dem, cap, routes = _cvrp(seed, n, asym, spare=seed % 2)
    k = int(rng.choice([3, 6, 20]))
    sol = _flat(routes)
    a = local_search_vrp(sol, d, dem, cap, k=k)
    b = local_search_vrp_reference(sol, d, dem, cap, k=k)
    np.testing.assert_array_equal(a, b)
    assert route_cost(a, d) < route_cost(sol, d)


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_parity_cvrptw(seed, asym):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(5, 30))
    d, dem, cap, routes, tw, service = _cvrptw(seed, n, asym, spare=1 + seed % 2)
    k = int(rng.choice([4, 8, 20]))
    sol = _flat(routes)
    a = local_search_vrp(sol, d, dem, cap, tw, service, k=k)
    b = local_search_vrp_reference(sol, d, dem, cap, tw, service, k=k)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_parity_tsp(seed, asym):
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(3, 40))
    d = _dist(rng, n, asym)
    tour = rng.permutation(n)
    k = int(rng.choice([3, 8, 20]))
    a = local_search_tsp(tour, d, k=k)
    b = local_search_tsp_reference(tour, d, k=k)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "ops", [("relocate",), ("swap",), ("2opt",), ("2opt*",), ("swap", "2opt*")]
)
def test_parity_operator_subsets_and_iteration_cap(ops):
    d, dem, cap, routes, tw, service = _cvrptw(7, 25, asym=True, spare=1)
    sol = _flat(routes)
    for max_it in (0, 1, 3, 10_000):
        a = local_search_vrp(sol, d, dem, cap, tw, service, max_iterations=max_it, operators=ops)
        b = local_search_vrp_reference(
            sol, d, dem, cap, tw, service, max_iterations=max_it, operators=ops
        )
        np.testing.assert_array_equal(a, b)
        if max_it == 0:
            np.testing.assert_array_equal(a, _flat([r for r in routes if r]))


def test_parity_infeasible_input_and_custom_neighbours():
    rng = np.random.default_rng(11)
    n = 20
    d = _dist(rng, n, asym=True)
    dem = _demand(rng, n)
    cut = np.sort(rng.choice(np.arange(1, n - 1), 3, replace=False))
    routes = [r.tolist() for r in np.split(rng.permutation(np.arange(1, n)), cut)]
    tw, service = _time_windows(rng, d, _split_by_capacity(rng, dem, 20.0), width=0.3)
    nb = rng.integers(0, n, (n, 7))  # arbitrary lists, may contain u itself and repeats
    sol = _flat(routes)
    a = local_search_vrp(sol, d, dem, 20.0, tw, service, neighbours=nb)
    b = local_search_vrp_reference(sol, d, dem, 20.0, tw, service, neighbours=nb)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------
# Properties on random instances and random feasible (or infeasible) initial solutions
# ----------------------------------------------------------------------------------------------

_instances = st.tuples(
    st.integers(0, 2**31 - 1),  # seed
    st.integers(2, 22),  # N (depot included)
    st.integers(1, 12),  # k
    st.booleans(),  # asymmetric
    st.integers(0, 2),  # spare empty routes
)


@settings(max_examples=40, deadline=None)
@given(_instances)
def test_property_cvrp(params):
    seed, n, k, asym, spare = params
    d, dem, cap, routes = _cvrp(seed, n, asym, spare)
    sol = _flat(routes)
    assert _check_vrp(sol, n, d, dem, cap) == []
    out = local_search_vrp(sol, d, dem, cap, k=k)
    assert _check_vrp(out, n, d, dem, cap) == []
    assert route_cost(out, d) <= route_cost(sol, d) + TOL
    assert len(_routes_of(out)) <= len(routes)


@settings(max_examples=40, deadline=None)
@given(_instances)
def test_property_cvrptw(params):
    seed, n, k, asym, spare = params
    d, dem, cap, routes, tw, service = _cvrptw(seed, n, asym, spare)
    sol = _flat(routes)
    assert _check_vrp(sol, n, d, dem, cap, tw, service) == []
    out = local_search_vrp(sol, d, dem, cap, tw, service, k=k)
    assert _check_vrp(out, n, d, dem, cap, tw, service) == []
    assert route_cost(out, d) <= route_cost(sol, d) + TOL


@settings(max_examples=40, deadline=None)
@given(_instances)
def test_property_tsp(params):
    seed, n, k, asym, _ = params
    rng = np.random.default_rng(seed)
    d = _dist(rng, n, asym)
    tour = rng.permutation(n)
    out = local_search_tsp(tour, d, k=k)
    assert sorted(out.tolist()) == list(range(n)) and out[0] == 0
    assert _tour_cost(out, d) <= _tour_cost(tour, d) + TOL


@settings(max_examples=30, deadline=None)
@given(_instances)
def test_property_infeasible_input_creates_no_violation(params):
    """Routes that are infeasible in the output are untouched routes of the input."""
    seed, n, k, asym, spare = params
    rng = np.random.default_rng(seed)
    d = _dist(rng, n, asym)
    dem = _demand(rng, n)
    cap = 15.0
    n_cut = int(rng.integers(0, max(1, min(4, n - 1))))
    cut = np.sort(rng.choice(np.arange(1, n), n_cut, replace=False)) if n > 1 else []
    routes = [r.tolist() for r in np.split(rng.permutation(np.arange(1, n)), cut)]
    routes += [[] for _ in range(spare)]
    tw, service = _time_windows(rng, d, _split_by_capacity(rng, dem, cap), width=0.3)
    sol = _flat(routes)
    out = local_search_vrp(sol, d, dem, cap, tw, service, k=k)
    assert sorted(int(c) for c in out if c != 0) == list(range(1, n))
    assert route_cost(out, d) <= route_cost(sol, d) + TOL
    for r in _routes_of(out):
        if _route_violations(r, d, dem, cap, tw, service):
            assert r in routes


# ----------------------------------------------------------------------------------------------
# It improves: random CVRP50, a crossing tour, one case per inter-route operator
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_improves_random_cvrp50(seed):
    """Random order cut by capacity -> local optimum at least 30% shorter (typically ~60%)."""
    rng = np.random.default_rng(seed)
    n = 51
    d = _dist(rng, n, asym=False)
    dem = _demand(rng, n)
    routes = _split_by_capacity(rng, dem, 40.0)
    sol = _flat(routes)
    out = local_search_vrp(sol, d, dem, 40.0)
    assert _check_vrp(out, n, d, dem, 40.0) == []
    assert route_cost(out, d) <= 0.7 * route_cost(sol, d)


def test_two_opt_fixes_crossing_tour():
    """8 points on a circle: the convex polygon is optimal; one crossing is fixed by 2-opt."""
    angles = 2 * np.pi * np.arange(8) / 8
    xy = np.stack([np.cos(angles), np.sin(angles)], 1)
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    optimum = 8 * d[0, 1]
    tour = np.array([0, 1, 2, 3, 7, 6, 5, 4])  # chords 3-7 and 4-0 cross
    assert _tour_cost(tour, d) > optimum + 0.5
    for fn in (local_search_tsp, local_search_tsp_reference):
        out = fn(tour, d, operators=["2opt"], max_iterations=1)
        assert out.tolist() in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 7, 6, 5, 4, 3, 2, 1])
        assert _tour_cost(out, d) == pytest.approx(optimum, abs=1e-12)
        assert _tour_cost(fn(tour, d), d) == pytest.approx(optimum, abs=1e-12)


def _brute_force_vrp(d, dem, cap, max_routes):
    """Optimal cost over all solutions with at most ``max_routes`` routes (tiny N only)."""
    n = d.shape[0]
    best = np.inf
    for perm in itertools.permutations(range(1, n)):
        for cuts in range(1 << (n - 2)):
            routes, cur = [], [perm[0]]
            for t in range(1, n - 1):
                if cuts >> (t - 1) & 1:
                    routes.append(cur)
                    cur = []
                cur.append(perm[t])
            routes.append(cur)
            if len(routes) > max_routes or any(dem[r].sum() > cap for r in routes):
                continue
            best = min(best, route_cost(_flat(routes), d))
    return best


# Fixed two-route cases (integer coordinates, Euclidean distances) where, from the given solution,
# no move of the other operators improves, and the named operator alone reaches the optimum.
SINGLE_OPERATOR_CASES = {
    "relocate": dict(
        xy=[[8, 8], [5, 0], [2, 8], [7, 2], [4, 2], [6, 8], [1, 4]],
        demand=[0, 2, 1, 3, 1, 2, 2],
        capacity=7.0,
        start=[0, 4, 6, 2, 5, 0, 3, 1, 0],
        result=[0, 6, 2, 5, 0, 3, 1, 4, 0],  # 4 moves from the first route to the second
    ),
    "swap": dict(
        xy=[[2, 5], [6, 3], [9, 6], [1, 7], [6, 5], [3, 3], [3, 6]],
        demand=[0, 3, 1, 2, 3, 1, 2],
        capacity=6.0,
        start=[0, 1, 2, 3, 0, 6, 4, 5, 0],
        result=[0, 4, 2, 3, 0, 6, 1, 5, 0],  # 1 and 4 change places
    ),
    "2opt*": dict(
        xy=[[1, 0], [3, 1], [0, 3], [4, 4], [2, 3], [9, 4], [6, 6]],
        demand=[0, 1, 1, 2, 1, 2, 2],
        capacity=7.0,
        start=[0, 3, 0, 1, 5, 6, 4, 2, 0],
        result=[0, 4, 2, 0, 1, 5, 6, 3, 0],  # the routes exchange their tails (3) and (4, 2)
    ),
}


@pytest.mark.parametrize("op", list(SINGLE_OPERATOR_CASES))
def test_single_operator_case(op):
    case = SINGLE_OPERATOR_CASES[op]
    xy = np.asarray(case["xy"], dtype=float)
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    dem = np.asarray(case["demand"], dtype=float)
    cap = case["capacity"]
    start = np.asarray(case["start"])
    others = [o for o in OPERATORS if o != op]
    optimum = _brute_force_vrp(d, dem, cap, max_routes=2)
    assert route_cost(start, d) > optimum + 1e-6
    for fn in (local_search_vrp, local_search_vrp_reference):
        np.testing.assert_array_equal(fn(start, d, dem, cap, operators=others), start)
        out = fn(start, d, dem, cap, operators=[op])
        assert out.tolist() == case["result"]
        assert route_cost(out, d) == pytest.approx(optimum, abs=1e-9)
        assert _check_vrp(out, 7, d, dem, cap) == []


def test_relocate_into_spare_empty_route():
    """A far customer is best served alone (squared distances): the spare empty route is used."""
    xy = np.array([[0, 0], [1, 0], [2, 0], [-10, 0]], dtype=float)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    dem = np.array([0, 1, 1, 1.0])
    start = np.array([0, 1, 3, 2, 0, 0])  # the second route is empty
    assert _brute_force_vrp(d, dem, 10.0, max_routes=1) == 226.0
    assert _brute_force_vrp(d, dem, 10.0, max_routes=2) == 206.0
    for fn in (local_search_vrp, local_search_vrp_reference):
        assert fn(start, d, dem, 10.0).tolist() == [0, 1, 2, 0, 3, 0]
        # Without a spare route the best the search can do is the best single route.
        assert route_cost(fn(start[:-1], d, dem, 10.0), d) == 226.0
