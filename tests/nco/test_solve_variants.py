"""Variant instances (``"mtvrp"``) through the solvers and ``nco solve``.

The shipped multi-variant checkpoint solves generated instances of each core attribute (O, B,
L, TW, MB, MD) with checked plans, multi-depot routes keeping their depots; refinement runs on
every variant and never returns a worse or infeasible plan; an instance the network cannot represent (a duration limit with
time windows) is refused by name while the hybrid still returns the backend's checked plan;
and ``nco solve`` returns checked plans on one file of each shared variant set (VRPB,
Gehring-Homberger VRPTW, MDVRPTW) with pyvrp, ortools, neural and hybrid.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch

import nco.solvers as S
from nco.baselines import UnsupportedProblemError
from nco.commands import solve as solve_cmd
from nco.envs import Instance, Solution, get_problem, load, load_solution, write_instance
from nco.envs.mtvrp import MTVRPGenerator
from nco.references import reference_from_sol
from tests.envs.helpers import random_rollout

P = get_problem("mtvrp")

# the shipped network is trained at n=50 on six variants: its size and zero-shot warnings are
# expected here (and asserted where they matter)
pytestmark = [
    pytest.mark.filterwarnings("ignore:neural. :UserWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

#: One file of each shared variant set and its `nco solve` load options (README "Variant files").
FILES = {
    "vrpb": ("vrpb/X-n524-50-k125.vrp", []),
    "vrptw-gh1000": ("vrptw-gh1000/C1_10_1.vrp", ["--edge-weight", "SOLOMON"]),
    "mdvrptw": ("mdvrptw/PR11A.vrp", ["--edge-weight", "EUC_2D", "--scale", "1000"]),
}
LOAD = {
    "vrpb": {},
    "vrptw-gh1000": {"edge_weight": "SOLOMON"},
    "mdvrptw": {"edge_weight": "EUC_2D", "scale": 1000.0},
}




def generated(variant: str, n: int = 20, seed: int = 1) -> Instance:
    return P.to_instance(
        MTVRPGenerator(num_loc=n, variants=(variant,))(1, seed=seed)[0], name=variant
    )


def rechecked(inst: Instance, sol: Solution) -> Solution:
    """The plan checked again from its routes and depots (what a reader of the .sol gets)."""
    return Solution.from_routes(inst, sol.routes, depots=sol.route_depots)


def truncated(inst: Instance, customers: int) -> Instance:
    """The depots and the first ``customers`` customers of ``inst`` (a fast OR-Tools case)."""
    nd = inst.num_depots
    keep = np.r_[0:nd, nd : nd + customers]

    def sub(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else x[keep]

    return Instance.from_arrays(
        problem=inst.problem,
        coords=sub(inst.coords),
        distance=inst.distance[np.ix_(keep, keep)],
        edge_weight=inst.edge_weight if inst.edge_weight != "SOLOMON" else "EXPLICIT",
        demand=sub(inst.demand),
        capacity=inst.capacity,
        time_windows=sub(inst.time_windows),
        service_time=sub(inst.service_time),
        num_vehicles=inst.num_vehicles,
        name=f"{inst.name}-{customers}",
        backhaul=sub(inst.backhaul),
        mixed_backhaul=inst.mixed_backhaul,
        open_routes=inst.open_routes,
        max_distance=inst.max_distance,
        max_duration=inst.max_duration,
        num_depots=nd,
        vehicle_depots=inst.vehicle_depots,
    )


# ----------------------------------------------------------------------------- neural
@pytest.mark.parametrize(
    "variant", ["OVRP", "VRPB", "VRPL", "VRPTW", "VRPMB", "MDVRP", "MDOVRPBLTW"]
)
def test_neural_on_generated_variants_returns_checked_feasible_plans(variant):
    inst = generated(variant)
    assert inst.problem == "mtvrp" and inst.variant == variant
    with pytest.warns(UserWarning):  # trained at n=50 and (for most) on other variants
        sol = S.NeuralSolver(augment=1).solve(inst)
    assert sol.feasible, sol.violations[:3]
    assert sol.metadata["model_problem"] == "mtvrp"
    again = rechecked(inst, sol)
    assert again.feasible and again.cost == pytest.approx(sol.cost)
    if inst.num_depots > 1:
        assert sol.route_depots is not None and len(sol.route_depots) == len(sol.routes)
        assert set(sol.route_depots) <= set(range(inst.num_depots))
    else:
        assert sol.route_depots is None


def test_neural_keeps_the_depots_of_multi_depot_routes():
    # with windows relative to depot 0 the decode switches to the other depots once depot 0
    # can serve no one: some route must leave from depot > 0
    insts = [generated("MDVRPTW", seed=s) for s in range(4)]
    sols = S.NeuralSolver(augment=1).solve_many(insts)
    assert all(s.feasible for s in sols)
    assert any(d > 0 for s in sols for d in (s.route_depots or ()))
    for inst, s in zip(insts, sols):
        assert s.cost == pytest.approx(inst.route_cost(s.routes, s.route_depots))


@pytest.mark.parametrize("variant", ["OVRP", "MDVRP", "MDOVRPTW"])
def test_best_indices_rank_by_the_variant_cost(variant):
    # open routes pay no return leg, multi-depot routes return to their own depot
    inst = generated(variant)
    td = P.from_instance(inst)
    env = P.make_env(num_loc=inst.num_customers)
    seqs = random_rollout(env, torch.cat([td] * 8, 0), seed=0)[0].numpy()
    costs = []
    for seq in seqs:
        routes, depots = S._split_tour(P, inst, seq.tolist())
        costs.append(Solution.from_routes(inst, routes, depots=depots).cost)
    assert S._best_indices(inst, seqs, 1) == [int(np.argmin(costs))]
    assert S._best_indices(inst, seqs, 3) == list(np.argsort(costs, kind="stable")[:3])


def test_fallback_plan_of_a_multi_depot_instance_is_checked():
    inst = generated("MDVRPTW")
    routes, depots = S._fallback_routes(inst)
    assert depots is not None and len(routes) == inst.num_customers
    assert Solution.from_routes(inst, routes, depots=depots).feasible


def test_mtvrp_checkpoint_takes_cvrp_and_others_refuse_variants():
    neural = S.NeuralSolver("mtvrp50", augment=1)
    assert neural.supports("mtvrp") and neural.supports("cvrp") and neural.supports("cvrptw")
    assert not neural.supports("tsp")
    cvrp = Instance.from_arrays(
        coords=np.random.default_rng(0).random((21, 2)), demand=[0] + [1] * 20, capacity=6
    )
    with pytest.warns(UserWarning):
        sol = neural.solve(cvrp)
    assert cvrp.problem == "cvrp" and sol.feasible and sol.metadata["model_problem"] == "mtvrp"
    with pytest.raises(S.ModelMismatchError, match=r"'mtvrp' \(VRPB\) instance"):
        S.NeuralSolver("cvrp50").solve(generated("VRPB"))


# ----------------------------------------------------------------------------- refusal
def with_duration_limit(inst: Instance, limit: float, *, windows: bool = True) -> Instance:
    return Instance.from_arrays(
        coords=inst.coords,
        demand=inst.demand,
        capacity=inst.capacity,
        time_windows=inst.time_windows if windows else None,
        service_time=inst.service_time,
        max_duration=limit,
        name="duration",
    )


def test_neural_solves_a_duration_limit_with_windows():
    """Travel + waiting + service within VEHICLES_MAX_DURATION: the env's exact tensor form
    (PyVRP's least duration over departure times), so every plan passes the checker."""
    base = generated("VRPTW")  # horizon 4.6; the unlimited plan has routes lasting 3-4
    inst = with_duration_limit(base, 2.5)
    neural = S.NeuralSolver(augment=1)
    assert neural.refusal(inst) is None
    unlimited = neural.solve(base)
    assert any(v.kind == "duration" for v in rechecked(inst, unlimited).violations)
    sol = neural.solve(inst)
    assert sol.feasible and rechecked(inst, sol).feasible


def test_neural_refuses_service_times_and_a_duration_limit_without_windows_by_name():
    inst = with_duration_limit(generated("VRPTW"), 100.0, windows=False)
    neural = S.NeuralSolver(augment=1)
    assert "VEHICLES_MAX_DURATION" in (neural.refusal(inst) or "")
    with pytest.raises(UnsupportedProblemError, match="VEHICLES_MAX_DURATION"):
        neural.solve(inst)
    assert neural.refusal(generated("VRPL")) is None


def test_hybrid_returns_the_backends_plan_when_the_network_refuses():
    inst = with_duration_limit(generated("VRPTW"), 100.0, windows=False)
    hybrid = S.HybridSolver(backend="pyvrp")
    hybrid.prepare(inst)  # no error: the backend will solve it alone
    sol = hybrid.solve(inst, time_limit=1.0)
    assert sol.feasible and rechecked(inst, sol).feasible
    meta = sol.metadata
    assert "VEHICLES_MAX_DURATION" in meta["neural_skipped"]
    assert meta["returned"] == "pyvrp" and meta["warm_start"] is False
    assert meta["neural_time"] == 0.0 and "network skipped" in meta["summary"]


class _Spy:
    """A backend that records its keyword arguments and delegates."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.name, self.calls = backend, backend.name, []

    def supports(self, problem: str) -> bool:
        return self.backend.supports(problem)

    def solve(self, instance: Instance, **kwargs: Any) -> Solution:
        self.calls.append(kwargs)
        return self.backend.solve(instance, **kwargs)


@pytest.mark.parametrize("backend", ["pyvrp", "ortools"])
def test_hybrid_warm_starts_a_multi_depot_backend_with_the_depots(backend):
    inst = generated("MDVRP")
    hybrid = S.HybridSolver(backend=backend, neural_share=0.5)
    spy = _Spy(hybrid.backend)
    hybrid.backend = spy
    assert hybrid.supports("mtvrp")
    with pytest.warns(UserWarning):
        sol = hybrid.solve(inst, time_limit=1.5)
    assert sol.feasible and sol.route_depots is not None
    assert rechecked(inst, sol).cost == pytest.approx(sol.cost)
    (call,) = spy.calls
    assert sol.metadata["warm_start"] is True
    assert len(call["initial_depots"]) == len(call["initial_routes"])
    warm = Solution.from_routes(inst, call["initial_routes"], depots=call["initial_depots"])
    assert warm.feasible and warm.cost == pytest.approx(sol.metadata["neural_cost"])


# ----------------------------------------------------------------------------- refine
@pytest.mark.parametrize("variant", ["VRPB", "VRPMB", "OVRP", "VRPL", "MDVRP"])
def test_refine_models_the_variant_constraints(variant):
    # the local search models backhauls, open routes, route limits and several depots: the
    # refinement runs (more in tests/nco/test_refine_variants.py)
    inst = generated(variant)
    base = S.NeuralSolver(augment=1).solve(inst)
    sol = S.NeuralSolver(augment=1, refine=True).solve(inst)
    assert S._refine_refusal(inst) is None
    assert "refine_skipped" not in sol.metadata and "refined_cost" in sol.metadata
    assert sol.feasible and rechecked(inst, sol).feasible
    assert sol.cost <= base.cost + 1e-9
    if inst.num_depots > 1:
        assert sol.route_depots is not None and len(sol.route_depots) == len(sol.routes)


@pytest.mark.parametrize("variant", ["CVRP", "VRPTW"])
def test_refine_on_modelled_variants_is_never_worse(variant):
    inst = generated(variant, n=30)
    assert inst.problem == "mtvrp"
    base = S.NeuralSolver(augment=1).solve(inst)
    sol = S.NeuralSolver(augment=1, refine=True).solve(inst)
    assert "refine_skipped" not in sol.metadata and "refined_cost" in sol.metadata
    assert sol.feasible and rechecked(inst, sol).feasible
    assert sol.cost <= base.cost + 1e-9


def test_refine_never_returns_a_plan_that_breaks_a_constraint(monkeypatch):
    inst = generated("VRPTW", n=30)
    base = S.NeuralSolver(augment=1).solve(inst)
    # a "refinement" into one route: cheaper, but over capacity and late
    one = [[c for r in base.routes for c in r]]
    assert Solution.from_routes(inst, one).cost < base.cost
    monkeypatch.setattr(S, "refine_routes", lambda i, routes, deadline=None: one)
    sol = S.NeuralSolver(augment=1, refine=True).solve(inst)
    assert sol.feasible and sol.cost == pytest.approx(base.cost)
    assert sol.metadata["refine_kept"] is False


# ----------------------------------------------------------------------------- nco solve
def run_solve(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = solve_cmd.main(argv)
    return code, capsys.readouterr().out


def checked_sol_file(out: str, inst: Instance) -> Solution:
    (path,) = re.findall(r"-> (\S+\.sol)", out)
    sol = load_solution(path, inst)
    assert sol.feasible, sol.violations[:3]
    return sol


#: (solver, time limit): enough for a first plan of PyVRP on these files (~1000 customers).
SOLVERS = {"pyvrp": 1.0, "neural": 1.5, "hybrid": 1.5}


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("name", list(FILES))
def test_nco_solve_each_variant_set(shared_data, tmp_path, capsys, name, solver):
    rel, opts = FILES[name]
    path = shared_data / rel
    inst = load(path, **LOAD[name])
    out_file = tmp_path / f"{inst.name}.sol"
    argv = [str(path), *opts, "--solver", solver, "--time-limit", str(SOLVERS[solver])]
    code, out = run_solve([*argv, "--out", str(out_file)], capsys)
    if code == 1 and solver == "neural" and name == "mdvrptw":
        # the network may use more vehicles than the file has (it is marked, never hidden);
        # every other constraint holds (the duration limit included)
        assert "INFEASIBLE" in out and "vehicles" in out, out
        (path_out,) = re.findall(r"-> (\S+\.sol)", out)
        sol = load_solution(path_out, inst)
        assert sol.violations and {v.kind for v in sol.violations} == {"vehicles"}, sol.violations
        return
    assert code == 0, out
    assert "feasible" in out and "gap +" in out
    sol = checked_sol_file(out, inst)
    gap = float(re.search(r"gap ([+-][\d.]+)%", out).group(1))
    ref = reference_from_sol(path, inst)
    assert ref is not None and gap == pytest.approx(100 * (sol.cost / ref - 1), abs=0.01)
    if inst.num_depots > 1:
        assert sol.route_depots is not None


@pytest.mark.parametrize("name", list(FILES))
def test_nco_solve_ortools_on_each_variant_set(shared_data, tmp_path, capsys, name):
    # OR-Tools needs seconds for a first plan of 1000 windowed customers: the first 60
    rel, _ = FILES[name]
    small = truncated(load(shared_data / rel, **LOAD[name]), 60)
    path = write_instance(small, tmp_path / f"{small.name}.vrp")
    inst = load(path)
    assert inst.variant == small.variant
    assert inst.distance == pytest.approx(small.distance)
    code, out = run_solve(
        [str(path), "--solver", "ortools", "--time-limit", "1", "--out", str(tmp_path)], capsys
    )
    assert code == 0 and "feasible" in out, out
    checked_sol_file(out, inst)


def test_nco_solve_plots_a_multi_depot_plan(shared_data, tmp_path, capsys):
    rel, opts = FILES["mdvrptw"]
    png = tmp_path / "md.png"
    code, out = run_solve(
        [
            str(shared_data / rel),
            *opts,
            "--time-limit",
            "1",
            "--out",
            str(tmp_path),
            "--plot",
            str(png),
        ],
        capsys,
    )
    assert code == 0 and png.is_file() and png.stat().st_size > 0, out


def test_nco_solve_rejects_an_unknown_edge_weight(shared_data, capsys):
    code = solve_cmd.main([str(shared_data / FILES["vrpb"][0]), "--edge-weight", "FOO"])
    assert code == 2
    assert "--edge-weight must be one of" in capsys.readouterr().err


def test_reference_cost_of_a_multi_depot_sol_reads_its_depots(shared_data):
    path = shared_data / FILES["mdvrptw"][0]
    bks = 6655548  # bks.csv, PyVRP's scaled integer units
    assert reference_from_sol(path, load=LOAD["mdvrptw"]) == pytest.approx(bks)
    assert reference_from_sol(path, load(path, **LOAD["mdvrptw"])) == pytest.approx(bks)
    vrpb = shared_data / FILES["vrpb"][0]
    assert reference_from_sol(vrpb) == pytest.approx(154156)
