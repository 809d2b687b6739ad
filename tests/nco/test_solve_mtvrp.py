"""Multi-variant VRP tensors through the one solving API: ``nco.solve`` / ``nco.solve_batch``
take an ``mtvrp`` TensorDict batch (each row converted with ``get_problem("mtvrp").to_instance``)
and return checked ``Solution``s, for the network (a trained checkpoint or the shipped one) and
for PyVRP / OR-Tools (``solver=``): every one of the 48 variants solved feasibly, brute-force
optima on 6 customers, PyVRP's own verdict agreeing with the checker on planted plans."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import nco
import nco.solvers as S
from nco.api import instances_from_tensors
from nco.baselines import SolverError, available_solvers, get_solver
from nco.checkpoints import read_info
from nco.envs import Solution, mtvrp
from nco.envs.mtvrp import VARIANT_NAMES, MTVRPGenerator
from tests.conftest import train_tiny_mtvrp
from tests.envs.helpers import route_partitions

LIMIT = 0.1  # seconds per classical solve


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny_mtvrp(tmp_path_factory.mktemp("m") / "tiny", "pomo", size=6)


def _same_instances_in_every_variant(variants, n: int, num: int, seed: int):
    """``num`` instances drawn with every attribute, switched to each variant (one batch)."""
    md = any(mtvrp.VARIANTS[v].multi_depot for v in variants)
    full = MTVRPGenerator(n, variants=("MDOVRPBLTW" if md else "OVRPBLTW",))(num, seed=seed)
    return torch.cat([mtvrp.to_variant(full, v) for v in variants])


def _tour(routes, slots: int = 1) -> torch.Tensor:
    """Routes of a single-depot instance as an action sequence [1, T] for ``mtvrp.cost`` on
    its tensor row (which repeats the depot in every one of the batch's ``slots``)."""
    out: list[int] = []
    for r in routes:
        out += [v + slots - 1 for v in r] + [0]
    return torch.tensor([out or [0]])


def _assert_consistent(td, sols) -> None:
    """One checked solution per row, of the row's variant, serving every customer once."""
    assert len(sols) == td.shape[0]
    names = mtvrp.variant_names(td)
    for b, sol in enumerate(sols):
        inst = sol.instance
        assert inst.problem == "mtvrp" and inst.variant == names[b] and inst.name == f"instance{b}"
        assert sorted(v for r in sol.routes for v in r) == list(
            range(inst.num_depots, inst.num_nodes)
        )
        assert sol.cost == pytest.approx(inst.route_cost(sol.routes, sol.route_depots), abs=0)
        assert (
            sol.violations
            == Solution.from_routes(inst, sol.routes, depots=sol.route_depots).violations
        )
        if inst.num_depots > 1:
            assert sol.route_depots is not None and len(sol.route_depots) == len(sol.routes)
        else:  # the tensor cost of the same plan (unit square: instance units = tensor units)
            one = td[b : b + 1]
            tour = _tour(sol.routes, int(one["num_depots"][0]))
            assert sol.cost == pytest.approx(float(mtvrp.cost(one, tour)[0]), rel=1e-5)


# ----------------------------------------------------------------------------- neural
def test_neural_solves_a_batch_mixing_all_48_variants_feasibly(tiny_model):
    td = _same_instances_in_every_variant(mtvrp.ALL_VARIANT_NAMES, 6, 2, seed=5)
    sols = nco.solve_batch(
        td, model=tiny_model, solver="neural", device="cpu", augment=8, batch_size=20
    )
    _assert_consistent(td, sols)
    assert all(s.feasible and s.solver == "neural" for s in sols)
    assert {s.instance.variant for s in sols} == set(mtvrp.ALL_VARIANT_NAMES)


def test_default_model_is_the_shipped_mtvrp_checkpoint():
    shipped = [p for p in S.shipped_checkpoints() if read_info(p)["problem"] == "mtvrp"]
    if not shipped:
        pytest.skip("no mtvrp checkpoint shipped in data/checkpoints")
    torch.set_num_threads(2)
    td = MTVRPGenerator(20, variants=("CVRP", "OVRPBLTW", "MDVRPTW"))(6, seed=2)
    sols = nco.solve_batch(td, solver="neural", device="cpu", augment=1)
    _assert_consistent(td, sols)
    assert all(s.feasible for s in sols)
    want = S.select_checkpoint("mtvrp", 20).resolve()
    assert all(Path(s.metadata["model"]).resolve() == want for s in sols)
    one = nco.solve(td[1], solver="neural", device="cpu", augment=1)  # one row (batch []) -> one Solution
    assert one.instance.variant == mtvrp.variant_names(td)[1]
    assert one.cost == pytest.approx(sols[1].cost)


# ----------------------------------------------------------------------------- classical
@pytest.mark.parametrize("solver", ["pyvrp", "ortools"])
def test_classical_solvers_solve_every_variant_feasibly(solver):
    pytest.importorskip(solver)
    td = _same_instances_in_every_variant(mtvrp.ALL_VARIANT_NAMES, 8, 1, seed=3)
    # OR-Tools' first solution can take longer than PyVRP's on a shared core
    limit = LIMIT if solver == "pyvrp" else 2.5 * LIMIT
    sols = nco.solve_batch(td, solver=solver, time_limit=limit, seed=1)
    _assert_consistent(td, sols)
    bad = [(s.instance.variant, s.violations[:2]) for s in sols if not s.feasible]
    assert not bad
    assert all(s.solver == solver and s.runtime > 0 for s in sols)


def _brute_force(td) -> float:
    f = lambda k: td[k][0].double().numpy()  # noqa: E731
    locs = f("locs")
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    lim, opened = float(td["distance_limit"][0]), bool(td["open_route"][0])
    args = (f("demand_linehaul"), f("demand_backhaul"), 1.0, f("time_windows"), f("service_time"))
    best = math.inf
    for routes in route_partitions(6):
        length = sum(
            dist[0, r[0]]
            + sum(dist[a, b] for a, b in zip(r, r[1:]))
            + (0.0 if opened else dist[r[-1], 0])
            for r in routes
        )
        if length < best and not mtvrp.check_core(dist, *args, lim, opened, routes):
            best = length
    return best


@pytest.mark.parametrize(("variant", "seed"), [("VRPBLTW", 0), ("OVRPBL", 3), ("OVRPTW", 1)])
def test_classical_solvers_reach_the_brute_force_optimum(variant: str, seed: int) -> None:
    pytest.importorskip("pyvrp")
    pytest.importorskip("ortools")
    td = MTVRPGenerator(6, variants=(variant,), capacity=15, backhaul_ratio=0.4)(1, seed=seed)
    best = _brute_force(td)
    for solver in ("pyvrp", "ortools"):
        (sol,) = nco.solve_batch(td, solver=solver, time_limit=0.3, seed=0)
        assert sol.feasible and sol.cost == pytest.approx(best, rel=1e-5), solver


def _plans(base, customers, rng, count):
    """The base plan, swaps of two of its customers and random splits of random orders."""
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
            for v in rng.permutation(customers).tolist():
                cur.append(v)
                if rng.random() < 0.35:
                    out.append(cur)
                    cur = []
            yield out + ([cur] if cur else [])


def test_pyvrp_model_agrees_with_the_checker_on_planted_plans() -> None:
    """PyVRP's own ``Solution.is_feasible()`` on the data the PyVRP solver builds accepts
    exactly the plans nco's checker accepts, feasible and infeasible, on the 16 core variants."""
    pytest.importorskip("pyvrp")
    rng = np.random.default_rng(0)
    pyvrp = get_solver("pyvrp")
    seen: set[str] = set()
    accepted = rejected = 0
    for k, variant in enumerate(VARIANT_NAMES):
        td = MTVRPGenerator(10, variants=(variant,))(1, seed=100 + k)
        (inst,) = instances_from_tensors(td)
        base = pyvrp.solve(inst, time_limit=0.05).routes
        problem, meta = pyvrp.problem_data(inst)
        for plan in _plans([list(r) for r in base], np.arange(1, 11), rng, 14):
            kinds = {v.kind for v in Solution.from_routes(inst, plan).violations}
            seen |= kinds
            ours = pyvrp.pyvrp_solution(problem, meta, inst, plan).is_feasible()
            assert ours == (not kinds), (variant, plan, kinds)
            accepted += not kinds
            rejected += bool(kinds)
    assert accepted > 20 and rejected > 20
    assert {"capacity", "backhaul_order", "time_window"} <= seen


def test_worker_processes_match_one_process() -> None:
    pytest.importorskip("ortools")
    td = MTVRPGenerator(6, variants=("OVRPBTW",))(2, seed=9)
    serial = nco.solve_batch(td, solver="ortools", time_limit=0.2)
    parallel = nco.solve_batch(td, solver="ortools", time_limit=0.2, workers=2)
    assert all(s.feasible for s in parallel)
    assert [s.cost for s in parallel] == pytest.approx([s.cost for s in serial])


# ----------------------------------------------------------------------------- errors
def test_bad_calls_name_what_is_wrong(tiny_model):
    td = MTVRPGenerator(6, variants=("VRPTW",))(2, seed=0)
    with pytest.raises(ValueError, match="solve_batch"):
        nco.solve(td)
    with pytest.raises(ValueError, match="'pyvrp' does not take the option.*augment"):
        nco.solve_batch(td, solver="pyvrp", augment=1)
    with pytest.raises(ValueError, match="does not take"):
        nco.solve_batch(td, solver="pyvrp", model=tiny_model)
    with pytest.raises(ValueError, match="pass problem="):
        nco.solve_batch(td.select("capacity"))
    with pytest.raises(ValueError, match="problem= applies to a tensor batch"):
        nco.solve_batch([], problem="mtvrp")
    if "hgs" in available_solvers():
        pytest.importorskip("hygese")
        with pytest.raises(SolverError, match="time windows"):
            nco.solve_batch(td, solver="hgs", time_limit=0.2)
    cvrp = [p for p in S.shipped_checkpoints() if read_info(p)["problem"] == "cvrp"]
    if cvrp:
        with pytest.raises(ValueError, match="'cvrp'"):
            nco.solve_batch(td, model=cvrp[0])
