"""Each solver on small generated instances: feasible, checked, refusing what it cannot do."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import nco.envs as E
from nco.baselines import SolverFailedError, UnsupportedProblemError, get_solver

SUPPORT = {
    "ortools": ("tsp", "cvrp", "cvrptw"),
    "hgs": ("tsp", "cvrp"),
    "pyvrp": ("tsp", "cvrp", "cvrptw"),
}
CASES = [(s, p) for s, ps in SUPPORT.items() for p in ps]


def _generated(problem: str, n: int = 12, seed: int = 7) -> E.Instance:
    prob = E.get_problem(problem)
    return prob.to_instance(prob.generator(num_loc=n)(1, seed=seed), name=f"{problem}{n}")


@pytest.mark.parametrize(("solver", "problem"), CASES)
def test_solver_finds_feasible_solution(solver: str, problem: str) -> None:
    inst = _generated(problem)
    sol = get_solver(solver).solve(inst, time_limit=0.5, seed=1)
    assert sol.feasible, sol.violations
    assert sol.solver == solver
    assert sol.cost == pytest.approx(inst.route_cost(sol.routes))
    visited = sorted(v for r in sol.routes for v in r)
    assert visited == (
        list(range(inst.num_nodes)) if problem == "tsp" else list(range(1, inst.num_nodes))
    )
    assert sol.runtime > 0


@pytest.mark.parametrize("problem", ["tsp", "cvrp", "cvrptw"])
def test_solvers_agree_on_tiny_instances(problem: str) -> None:
    # Six customers: every solver should reach the same optimum in well under a second.
    inst = _generated(problem, n=6, seed=11)
    costs = {
        s: get_solver(s).solve(inst, time_limit=0.3).cost for s in SUPPORT if problem in SUPPORT[s]
    }
    best = min(costs.values())
    assert all(c == pytest.approx(best, rel=1e-6) for c in costs.values()), costs


def test_hgs_refuses_time_windows_and_warm_starts() -> None:
    hgs = get_solver("hgs")
    assert not hgs.supports("cvrptw")
    with pytest.raises(UnsupportedProblemError, match="'hgs'.*'cvrptw'"):
        hgs.solve(_generated("cvrptw"), time_limit=1)
    with pytest.raises(ValueError, match="initial routes"):
        hgs.solve(_generated("cvrp"), time_limit=1, initial_routes=[[1, 2]])


@pytest.mark.parametrize("solver", ["ortools", "pyvrp", "hgs"])
def test_unknown_problem_refused(solver: str) -> None:
    inst = _generated("cvrp")
    fake = SimpleNamespace(
        **{k: getattr(inst, k) for k in ("distance", "demand", "capacity", "name")}, problem="pdptw"
    )
    with pytest.raises(UnsupportedProblemError, match=f"'{solver}'.*'pdptw'"):
        get_solver(solver).solve(fake, time_limit=1)  # type: ignore[arg-type]


def test_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_limit"):
        get_solver("pyvrp").solve(_generated("tsp"), time_limit=0)


def test_ortools_accepts_initial_routes() -> None:
    inst = _generated("cvrp", n=15)
    initial = [[v] for v in range(1, inst.num_nodes)]  # one route per customer: feasible, poor
    start = inst.route_cost(initial)
    sol = get_solver("ortools").solve(inst, time_limit=0.5, initial_routes=initial)
    assert sol.feasible and sol.metadata["warm_start"]
    assert sol.cost <= start + 1e-9
    tsp = _generated("tsp", n=10)
    tour = [[3, 4, 5, 6, 7, 8, 9, 0, 1, 2]]
    sol = get_solver("ortools").solve(tsp, time_limit=0.3, initial_routes=tour)
    assert sol.feasible and sol.cost <= tsp.route_cost(tour) + 1e-9


def test_ortools_rejects_infeasible_initial_routes() -> None:
    inst = _generated("cvrp", n=15)
    with pytest.raises(SolverFailedError, match="initial routes"):
        get_solver("ortools").solve(
            inst, time_limit=0.5, initial_routes=[list(range(1, inst.num_nodes))]
        )


@pytest.mark.parametrize("problem", ["tsp", "cvrp", "cvrptw"])
def test_pyvrp_warm_start_never_worse(problem: str) -> None:
    inst = _generated(problem, n=25)
    good = get_solver("pyvrp").solve(inst, time_limit=0.5, seed=2)
    again = get_solver("pyvrp").solve(
        inst, time_limit=0.05, seed=5, initial_routes=[list(r) for r in good.routes]
    )
    assert again.feasible and again.metadata["warm_start"]
    assert again.cost <= good.cost + 1e-9


def test_pyvrp_returns_initial_when_its_best_is_worse(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyvrp

    inst = _generated("cvrp", n=15)
    initial = [list(r) for r in get_solver("hgs").solve(inst, time_limit=0.3).routes]
    initial.sort(key=len)
    initial[0], initial[-1] = initial[-1], initial[0]  # longest route first (at most 8! orders)
    assert 3 <= len(initial[0]) <= 8

    # The same routes with the first one in its worst order: feasible but strictly worse.
    first = max(itertools.permutations(initial[0]), key=lambda r: inst.route_cost([r]))
    worse_routes = [list(first), *initial[1:]]
    assert inst.route_cost(worse_routes) > inst.route_cost(initial)

    def poor_solve(data, stop, seed=0, collect_stats=True, display=False, initial_solution=None):  # noqa: ANN001, ANN202
        worse = pyvrp.Solution(data, [[v - 1 for v in r] for r in worse_routes])
        return SimpleNamespace(best=worse, num_iterations=0)

    monkeypatch.setattr(pyvrp, "solve", poor_solve)
    sol = get_solver("pyvrp").solve(inst, time_limit=0.1, initial_routes=initial)
    assert sol.metadata["returned_initial"]
    assert [list(r) for r in sol.routes] == initial
    assert sol.cost == pytest.approx(inst.route_cost(initial))


def test_matrix_only_instances() -> None:
    # Explicit matrices, no coordinates: every solver uses the matrix as given.
    rng = np.random.default_rng(4)
    d = rng.integers(1, 100, (9, 9)).astype(float)
    np.fill_diagonal(d, 0)
    demand = [0, 3, 4, 5, 2, 6, 1, 4, 3]
    sym = E.Instance.from_arrays(distance=np.maximum(d, d.T), demand=demand, capacity=10)
    costs = [get_solver(s).solve(sym, time_limit=0.3).cost for s in ("ortools", "hgs", "pyvrp")]
    assert max(costs) <= min(costs) * 1.05
    asym = E.Instance.from_arrays(distance=d, demand=demand, capacity=10)
    costs = [get_solver(s).solve(asym, time_limit=0.3).cost for s in ("ortools", "pyvrp")]
    assert max(costs) <= min(costs) * 1.05
    with pytest.raises(ValueError, match="symmetric"):
        get_solver("hgs").solve(asym, time_limit=0.3)
