"""Integer boundary, fleet bound, errors and the registry (no solver runs)."""

from __future__ import annotations

import numpy as np
import pytest

import nco.envs as E
from nco.baselines import (
    ORTOOLS_SCALE,
    Solver,
    SolverUnavailableError,
    UnsupportedProblemError,
    available_solvers,
    get_solver,
    register_solver,
)
from nco.baselines import registry as reg
from nco.baselines.protocol import fleet_bound, integer_data, require
from nco.envs.instance import FEAS_TOL


def _generated(problem: str, n: int = 12, seed: int = 3) -> E.Instance:
    prob = E.get_problem(problem)
    return prob.to_instance(prob.generator(num_loc=n)(1, seed=seed), name=f"{problem}{n}")


def test_integer_data_exact_for_integer_and_tenth_conventions() -> None:
    coords = np.array([[0, 0], [3, 4], [10, 1], [7, 7]], dtype=float)
    inst = E.Instance.from_arrays(
        coords=coords, demand=[0, 1, 2, 3], capacity=5, edge_weight="EUC_2D"
    )
    data = integer_data(inst)
    assert data.exact and data.scale == 1.0
    np.testing.assert_array_equal(data.distance, inst.distance.astype(np.int64))
    tw = np.array([[0, 100], [0, 50], [5, 60], [0, 80]], dtype=float)
    solomon = E.Instance.from_arrays(
        coords=coords,
        demand=[0, 1, 2, 3],
        capacity=5,
        time_windows=tw,
        service_time=[0, 1, 1, 1],
        edge_weight="SOLOMON",
    )
    data = integer_data(solomon)
    assert data.exact and data.scale == 10.0
    np.testing.assert_array_equal(data.travel, np.rint(solomon.distance * 10).astype(np.int64))


def test_integer_data_scales_unit_square_and_rounds_safely() -> None:
    inst = _generated("cvrptw")
    data = integer_data(inst)
    assert not data.exact
    assert data.scale == pytest.approx(ORTOOLS_SCALE / inst.distance.max())
    assert int(data.distance.max()) == ORTOOLS_SCALE
    s = data.scale
    # Times only ever grow and deadlines only shrink (within half the checker's tolerance),
    # so an integer-feasible schedule is feasible for the float checker.
    assert (data.travel >= inst.distance * s - 1e-6).all()
    assert (data.service[1:] >= inst.service_time[1:] * s - 1e-6).all()
    assert (data.tw[:, 0] >= inst.time_windows[:, 0] * s - 1e-6).all()
    tol = FEAS_TOL * max(1.0, inst.time_windows[0, 1])
    assert (data.tw[:, 1] <= (inst.time_windows[:, 1] + tol) * s).all()
    assert data.service[0] == 0


def test_integer_data_fractional_demands_round_capacity_safely() -> None:
    inst = E.Instance.from_arrays(
        coords=np.random.default_rng(0).random((5, 2)),
        demand=[0, 0.3, 0.25, 0.45, 0.1],
        capacity=0.7,
    )
    data = integer_data(inst)
    assert data.capacity is not None and data.demand is not None
    # [1, 2, 3] weighs 1.0 > 0.7 in floats and must not fit in integers either.
    assert data.demand[[1, 2, 4]].sum() <= data.capacity  # 0.65 fits
    assert data.demand[[1, 3]].sum() > data.capacity  # 0.75 does not


def test_fleet_bound() -> None:
    tsp = _generated("tsp")
    assert fleet_bound(tsp) == 1
    inst = E.Instance.from_arrays(
        coords=np.random.default_rng(1).random((7, 2)), demand=[0, 5, 5, 5, 5, 5, 5], capacity=10
    )
    assert fleet_bound(inst) == 6 + 1 - 1  # min(n=6, ceil(2*30/10)+1=7) = 6
    inst = E.Instance.from_arrays(
        coords=np.random.default_rng(1).random((7, 2)), demand=[0, 1, 1, 1, 1, 1, 1], capacity=10
    )
    assert fleet_bound(inst) == 3
    assert fleet_bound(inst, extra=5) == 5
    tw = _generated("cvrptw")
    assert fleet_bound(tw) == tw.num_customers


def test_registry_lists_and_builds_solvers() -> None:
    assert available_solvers()[:3] == ["ortools", "hgs", "pyvrp"]
    for name in ("ortools", "hgs", "pyvrp"):
        solver = get_solver(name)
        assert isinstance(solver, Solver)
        assert solver.name == name
    with pytest.raises(ValueError, match="unknown solver 'nope'.*ortools"):
        get_solver("nope")


def test_register_solver_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_FACTORIES", dict(reg._FACTORIES))

    class Dummy:
        name = "dummy"

        def supports(self, problem: str) -> bool:
            return problem == "tsp"

        def solve(self, instance, *, time_limit, seed=0, initial_routes=None):  # noqa: ANN001, ANN201
            return E.Solution.from_routes(
                instance, [list(range(instance.num_nodes))], solver=self.name
            )

    register_solver("dummy", lambda **kw: Dummy())
    assert "dummy" in available_solvers()
    sol = get_solver("dummy").solve(_generated("tsp"), time_limit=1)
    assert sol.feasible and sol.solver == "dummy"
    with pytest.raises(ValueError, match="already registered"):
        register_solver("dummy", lambda **kw: Dummy())


def test_missing_package_names_pip_command() -> None:
    with pytest.raises(SolverUnavailableError, match="pip install no-such-pkg") as info:
        require("fancy", "no_such_module_xyz", "no-such-pkg")
    assert isinstance(info.value, ImportError)
    assert "fancy" in str(info.value)


def test_unsupported_problem_error_is_value_error() -> None:
    err = UnsupportedProblemError("hgs", "cvrptw", ("tsp", "cvrp"))
    assert isinstance(err, ValueError)
    assert "hgs" in str(err) and "cvrptw" in str(err)
