"""PyVRP and OR-Tools on MTVRP tensors: every variant solved feasibly (independent checker),
costs as ``mtvrp.cost``, each solver's model agreeing with the checker on planted plans (the
mapping of C, O, B with its precedence, L and TW), and brute-force optima on 6 customers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nco.baselines.mtvrp import (
    MTVRP_SOLVERS,
    integer_mtvrp,
    routes_to_tour,
    solve_mtvrp,
    solve_mtvrp_batch,
    solver_accepts,
)
from nco.envs import mtvrp
from nco.envs.mtvrp import VARIANT_NAMES, MTVRPGenerator, to_variant
from tests.envs.helpers import route_partitions

pytest.importorskip("pyvrp")
pytest.importorskip("ortools")

LIMIT = 0.2  # seconds per solve


def _instance(variant: str, n: int = 10, seed: int = 0, **kw):
    return MTVRPGenerator(n, variants=(variant,), **kw)(1, seed=seed)


def _length(td, routes, depots=None) -> float:
    """Plain numpy route lengths (return leg free when open), each from and back to its depot."""
    locs = td["locs"][0].double().numpy()
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    opened = bool(td["open_route"][0])
    total = 0.0
    for k, r in enumerate(routes):
        d = depots[k] if depots else 0
        path = [d, *r] if opened else [d, *r, d]
        total += sum(dist[a, b] for a, b in zip(path, path[1:]))
    return total


def _kinds(td, routes, depots=None) -> set[str]:
    return {v.kind for v in mtvrp.check(td, routes_to_tour(routes, depots))[0]}


def _customers(td) -> list[int]:
    return list(range(int(td["num_depots"][0]), td["locs"].shape[1]))


# ----------------------------------------------------------------------------- every variant
@pytest.mark.parametrize("variant", mtvrp.ALL_VARIANT_NAMES)
def test_both_solvers_solve_every_variant_feasibly(variant: str) -> None:
    td = _instance(variant, seed=mtvrp.ALL_VARIANT_NAMES.index(variant))
    for solver in MTVRP_SOLVERS:
        res = solve_mtvrp(td, solver, time_limit=LIMIT, seed=1)
        assert res.solver == solver and res.variant == variant
        assert res.feasible, (solver, res.violations)
        assert res.solver_feasible  # the solver's own verdict agrees with the checker
        assert sorted(v for r in res.routes for v in r) == _customers(td)
        assert len(res.depots) == len(res.routes)
        tour = routes_to_tour(res.routes, res.depots)
        assert res.cost == pytest.approx(float(mtvrp.cost(td, tour)[0]), abs=0)
        assert res.cost == pytest.approx(_length(td, res.routes, res.depots), rel=1e-5)
        assert res.runtime > 0 and res.metadata["seed"] == 1


def _plans(base: list[list[int]], n: int, rng: np.random.Generator, count: int, first: int = 1):
    """The base plan, swaps of two of its customers and random splits of random orders
    (customers ``first .. first + n - 1``)."""
    yield base
    cuts = [len(r) for r in base]
    flat = [v for r in base for v in r]
    for k in range(count):
        if k % 2 == 0:
            f = list(flat)
            i, j = rng.choice(len(f), 2, replace=False)
            f[i], f[j] = f[j], f[i]
            out, p = [], 0
            for c in cuts:
                out.append(f[p : p + c])
                p += c
            yield out
        else:
            out, cur = [], []
            for v in rng.permutation(np.arange(first, first + n)).tolist():
                cur.append(v)
                if rng.random() < 0.35:
                    out.append(cur)
                    cur = []
            yield out + ([cur] if cur else [])


def test_solver_models_agree_with_the_checker_on_planted_plans() -> None:
    """PyVRP's ``Solution.is_feasible()`` and OR-Tools' assignment restore accept exactly the
    plans our independent checker accepts, on every variant (feasible and infeasible plans)."""
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    accepted = rejected = 0
    for k, variant in enumerate(VARIANT_NAMES):
        td = _instance(variant, seed=100 + k)
        base = solve_mtvrp(td, "pyvrp", time_limit=0.05).routes
        for plan in _plans(base, 10, rng, 14):
            kinds = _kinds(td, plan)
            seen |= kinds
            for solver in MTVRP_SOLVERS:
                assert solver_accepts(td, plan, solver) == (not kinds), (variant, solver, plan)
            accepted += not kinds
            rejected += bool(kinds)
    assert accepted > 20 and rejected > 20
    assert {"capacity", "backhaul_order", "distance_limit", "time_window", "depot_return"} <= seen


@pytest.mark.parametrize("variant", ["VRPMB", "OVRPMBLTW", "VRPMBTW", "MDVRPTW", "MDOVRPMBLTW"])
def test_models_agree_with_the_checker_on_mixed_backhaul_and_multi_depot_plans(variant) -> None:
    """As above for M (load on board anywhere along the route) and MD (each route from and
    back to its own depot, depots drawn at random per route)."""
    rng = np.random.default_rng(1)
    td = _instance(variant, seed=7, backhaul_ratio=0.5, capacity=15)
    k = int(td["num_depots"][0])
    res = solve_mtvrp(td, "pyvrp", time_limit=0.05)
    accepted = rejected = 0
    seen: set[str] = set()
    for i, plan in enumerate(_plans(res.routes, 10, rng, 24, first=k)):
        depots = res.depots if i == 0 else rng.integers(0, k, len(plan)).tolist()
        kinds = _kinds(td, plan, depots)
        seen |= kinds
        for solver in MTVRP_SOLVERS:
            got = solver_accepts(td, plan, solver, depots)
            assert got == (not kinds), (variant, solver, plan, depots, kinds)
        accepted += not kinds
        rejected += bool(kinds)
    assert accepted >= 1 and rejected >= 3
    if "MB" in variant:
        assert "backhaul_order" not in seen


def test_mixed_backhaul_order_is_free_but_the_load_binds() -> None:
    """The reversed VRPB route that both models reject breaks no order under M (only, maybe,
    the load); a route picking up before it delivers can overload the vehicle, which both
    models reject."""
    td = _instance("VRPB", seed=3, backhaul_ratio=0.4)
    res = solve_mtvrp(td, "pyvrp", time_limit=LIMIT)
    bh = td["demand_backhaul"][0] > 0
    k = next(i for i, r in enumerate(res.routes) if bh[r].any() and not bh[r].all())
    plan = [list(r) for r in res.routes]
    plan[k] = plan[k][::-1]
    mixed = mtvrp.to_variant(td, "VRPMB")
    assert _kinds(td, plan) == {"backhaul_order"}
    # under M the order is free; backhauls first may overload the vehicle, or not
    verdict = _kinds(mixed, plan)
    assert verdict <= {"capacity"}
    for solver in MTVRP_SOLVERS:
        assert solver_accepts(mixed, res.routes, solver)
        assert solver_accepts(mixed, plan, solver) == (not verdict)
    assert integer_mtvrp(mixed).forbidden_arcs() == []
    # capacity 10: linehauls 1 (5) and 2 (4), backhaul 3 (6): [3, 1, 2] carries 9 + 6 after 3
    hand = mtvrp.make_instances(
        torch.tensor([[[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.0, 0.1]]]),
        torch.tensor([[0.0, 5.0, 4.0, 0.0]]),
        demand_backhaul=torch.tensor([[0.0, 0.0, 0.0, 6.0]]),
        capacity=10.0,
        mixed_backhaul=True,
    )
    assert _kinds(hand, [[3, 1, 2]]) == {"capacity"} and _kinds(hand, [[1, 3, 2]]) == set()
    for solver in MTVRP_SOLVERS:
        assert not solver_accepts(hand, [[3, 1, 2]], solver)
        assert solver_accepts(hand, [[1, 3, 2]], solver)
        assert solve_mtvrp(hand, solver, time_limit=LIMIT).feasible


def test_backhaul_precedence_is_enforced_by_both_models() -> None:
    """Reversing a closed VRPB route that mixes linehauls and backhauls changes neither its
    loads nor its length: only the linehaul-before-backhaul order breaks, and both solver
    models reject exactly that."""
    td = _instance("VRPB", seed=3, backhaul_ratio=0.4)
    res = solve_mtvrp(td, "pyvrp", time_limit=LIMIT)
    bh = td["demand_backhaul"][0] > 0
    k = next(i for i, r in enumerate(res.routes) if bh[r].any() and not bh[r].all())
    plan = [list(r) for r in res.routes]
    plan[k] = plan[k][::-1]
    assert _kinds(td, plan) == {"backhaul_order"}
    for solver in MTVRP_SOLVERS:
        assert solver_accepts(td, res.routes, solver)
        assert not solver_accepts(td, plan, solver)
    data = integer_mtvrp(td)
    assert len(data.forbidden_arcs()) == int(bh.sum()) * int((~bh[1:]).sum())


def test_backhaul_only_routes_are_allowed() -> None:
    td = _instance("VRPB", seed=5, backhaul_ratio=0.4)
    bh = [v for v in range(1, 11) if td["demand_backhaul"][0, v] > 0]
    lh = [v for v in range(1, 11) if v not in bh]
    plan = [[v] for v in lh] + [bh]
    if mtvrp.check(td, routes_to_tour(plan))[0]:
        pytest.skip("backhaul route over capacity")
    for solver in MTVRP_SOLVERS:
        assert solver_accepts(td, plan, solver)


def test_integer_data_is_conservative_and_open_return_is_free() -> None:
    td = _instance("OVRPBLTW", seed=2)
    data = integer_mtvrp(td)
    locs = td["locs"][0].double().numpy()
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    assert data.open_route and (data.arc[:, 0] == 0).all()
    assert (data.arc[:, 1:] >= dist[:, 1:] * data.scale - 1e-6).all()  # rounded up
    assert data.max_distance is not None
    assert data.max_distance <= float(td["distance_limit"][0]) * data.scale * (1 + 1e-5)
    assert data.time_windows is not None and data.time_windows[0, 1] == data.horizon  # late return
    # integral demands recovered exactly against the integer capacity
    cap = float(td["capacity"][0])
    assert data.capacity == int(cap)
    q = (td["demand_linehaul"][0] + td["demand_backhaul"][0]).double().numpy() * cap
    np.testing.assert_array_equal(data.linehaul + data.backhaul, np.rint(q))
    closed = integer_mtvrp(to_variant(td, "VRPBLTW"))
    assert closed.arc[1:, 0].min() > 0
    assert closed.time_windows is not None
    close = float(td["time_windows"][0, 0, 1])
    assert closed.time_windows[0, 1] == math.floor(close * (1 + 0.5e-5) * closed.scale)
    plain = integer_mtvrp(to_variant(td, "CVRP"))
    assert plain.time_windows is None and plain.max_distance is None and not plain.has_backhaul


# ----------------------------------------------------------------------------- optimality
def _brute_force(td) -> float:
    f = lambda k: td[k][0].double().numpy()  # noqa: E731
    locs = f("locs")
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    lim, opened = float(td["distance_limit"][0]), bool(td["open_route"][0])
    best = math.inf
    args = (f("demand_linehaul"), f("demand_backhaul"), 1.0, f("time_windows"), f("service_time"))
    for routes in route_partitions(6):
        length = _length_fast(dist, routes, opened)
        if length >= best:
            continue
        if not mtvrp.check_core(dist, *args, lim, opened, routes):
            best = length
    return best


def _length_fast(dist: np.ndarray, routes, opened: bool) -> float:
    total = 0.0
    for r in routes:
        total += dist[0, r[0]] + sum(dist[a, b] for a, b in zip(r, r[1:]))
        if not opened:
            total += dist[r[-1], 0]
    return total


@pytest.mark.parametrize(("variant", "seed"), [("VRPBLTW", 0), ("OVRPBL", 3), ("OVRPTW", 1)])
def test_solvers_reach_the_brute_force_optimum(variant: str, seed: int) -> None:
    td = _instance(variant, n=6, seed=seed, capacity=15, backhaul_ratio=0.4)
    best = _brute_force(td)
    for solver in MTVRP_SOLVERS:
        res = solve_mtvrp(td, solver, time_limit=0.3, seed=0)
        assert res.feasible and res.cost == pytest.approx(best, rel=1e-5), solver


# ----------------------------------------------------------------------------- batches, errors
def test_batch_matches_single_solves_in_order() -> None:
    td = MTVRPGenerator(8, variants=("VRPB", "OVRPLTW"))(3, seed=4)
    batch = solve_mtvrp_batch(td, "pyvrp", time_limit=0.05, seed=2)
    assert [r.variant for r in batch] == mtvrp.variant_names(td)
    for i, r in enumerate(batch):
        assert r.feasible
        assert r.cost == pytest.approx(float(mtvrp.cost(td[i : i + 1], routes_to_tour(r.routes))))
    single = solve_mtvrp(td[1], "ortools", time_limit=0.05)  # batch [] accepted
    assert single.feasible and single.variant == batch[1].variant


def test_batch_with_worker_processes() -> None:
    td = MTVRPGenerator(6, variants=("OVRPBTW",))(2, seed=9)
    serial = solve_mtvrp_batch(td, "ortools", time_limit=0.2)
    parallel = solve_mtvrp_batch(td, "ortools", time_limit=0.2, workers=2)
    assert all(r.feasible for r in parallel)
    assert [r.cost for r in parallel] == pytest.approx([r.cost for r in serial])


def test_errors() -> None:
    td = MTVRPGenerator(5)(2, seed=0)
    with pytest.raises(ValueError, match="ONE instance"):
        solve_mtvrp(td, "pyvrp", time_limit=0.1)
    with pytest.raises(ValueError, match="unknown MTVRP solver"):
        solve_mtvrp(td[:1], "hgs", time_limit=0.1)
    with pytest.raises(ValueError, match="time_limit"):
        solve_mtvrp(td[:1], "pyvrp", time_limit=0)
    with pytest.raises(ValueError, match="exactly once"):
        solver_accepts(td[:1], [[1, 2]], "pyvrp")
    assert routes_to_tour([[3, 1], [], [2]]).tolist() == [[3, 1, 0, 2, 0]]
    assert torch.equal(routes_to_tour([]), torch.tensor([[0]]))
