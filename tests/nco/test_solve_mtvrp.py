"""``nco.solve_mtvrp``: checked results for batches mixing the multi-variant VRP variants, by the
network (a trained checkpoint or the shipped one) and by PyVRP / OR-Tools."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nco
import nco.solvers as S
from nco.baselines.mtvrp import routes_to_tour
from nco.envs import mtvrp
from nco.mtvrp_benchmark import make_test_set
from tests.conftest import train_tiny_mtvrp


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny_mtvrp(tmp_path_factory.mktemp("m") / "tiny", "pomo", size=6)


def _assert_consistent(td, results) -> None:
    """Each result re-costs and re-checks to what it says, and visits every customer once."""
    assert len(results) == td.shape[0]
    names = mtvrp.variant_names(td)
    for b, r in enumerate(results):
        one = td[b : b + 1]
        tour = routes_to_tour(r.routes, r.depots or None)
        assert r.variant == names[b]
        assert r.cost == pytest.approx(float(mtvrp.cost(one, tour)[0]), rel=1e-5)
        assert r.violations == mtvrp.check(one, tour)[0]
        k = int(one["num_depots"][0])
        n = int(one["locs"].shape[1])
        visited = sorted(v for route in r.routes for v in route)
        assert visited == list(range(k, n)), (r.variant, r.routes)


def test_neural_solves_a_batch_mixing_all_48_variants_feasibly(tiny_model):
    sets = make_test_set(mtvrp.ALL_VARIANT_NAMES, 6, 2, seed=5)
    td = torch.cat([sets[v] for v in mtvrp.ALL_VARIANT_NAMES])
    res = nco.solve_mtvrp(td, model=tiny_model, device="cpu", augment=8, batch_size=20)
    _assert_consistent(td, res)
    assert all(r.feasible and r.solver == "neural" for r in res)
    assert {r.variant for r in res} == set(mtvrp.ALL_VARIANT_NAMES)
    md = [r for r in res if r.variant.startswith("MD")]
    assert md and all(len(r.depots) == len(r.routes) for r in md)


@pytest.mark.parametrize("solver", ["pyvrp", "ortools"])
def test_classical_solvers_through_the_same_call(solver):
    pytest.importorskip(solver)
    td = mtvrp.MTVRPGenerator(6, variants=("VRPBTW", "OVRPL"))(2, seed=1)
    res = nco.solve_mtvrp(td, solver, time_limit=0.5)
    _assert_consistent(td, res)
    assert all(r.feasible and r.solver == solver for r in res)


def test_bad_calls_name_what_is_wrong(tiny_model):
    td = mtvrp.MTVRPGenerator(6)(2, seed=0)
    with pytest.raises(ValueError, match="needs time_limit"):
        nco.solve_mtvrp(td, "pyvrp")
    with pytest.raises(ValueError, match="takes no model"):
        nco.solve_mtvrp(td, "ortools", model=tiny_model, time_limit=1)
    with pytest.raises(ValueError, match="takes no time_limit"):
        nco.solve_mtvrp(td, model=tiny_model, time_limit=1)
    with pytest.raises(ValueError, match="unknown MTVRP solver 'hgs'"):
        nco.solve_mtvrp(td, "hgs")
    with pytest.raises(ValueError, match=r"batch \[B\]"):
        nco.solve_mtvrp(td[0], model=tiny_model)
    cvrp = [p for p in S.shipped_checkpoints() if S.checkpoint_info(p)["problem"] == "cvrp"]
    if cvrp:
        with pytest.raises(ValueError, match="'cvrp'"):
            nco.solve_mtvrp(td, model=cvrp[0])


def test_default_model_is_the_shipped_mtvrp_checkpoint():
    shipped = [p for p in S.shipped_checkpoints() if S.checkpoint_info(p)["problem"] == "mtvrp"]
    if not shipped:
        pytest.skip("no mtvrp checkpoint shipped in data/checkpoints")
    torch.set_num_threads(2)
    td = mtvrp.MTVRPGenerator(20, variants=("CVRP", "OVRPBLTW", "MDVRPTW"))(6, seed=2)
    res = nco.solve_mtvrp(td, device="cpu", augment=1)
    _assert_consistent(td, res)
    assert all(r.feasible for r in res)
    assert Path(res[0].metadata["model"]).resolve() == S.select_checkpoint("mtvrp", 20).resolve()
