"""The classical solvers on VRP variants (``problem == "mtvrp"`` instances): PyVRP and OR-Tools
return plans that pass nco's checker (and, as a cross-check, PyVRP's own ``is_feasible()`` on
the data the PyVRP solver builds) on generated variants of every attribute (O, B, MB, L as a
distance or a duration limit, TW, MD) and on one file of each shared variant set; HGS refuses
the variants naming their attributes; multi-depot warm starts need their depots."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import nco.envs as E
from nco.baselines import UnsupportedProblemError, get_solver
from nco.baselines.protocol import fleet_per_depot, integer_data
from nco.envs import Instance, Solution, mtvrp
from nco.envs.instance import FEAS_TOL
from nco.envs.mtvrp import MTVRPGenerator

pytest.importorskip("pyvrp")
pytest.importorskip("ortools")

LIMIT = 0.2  # seconds per solve on generated instances
SOLVERS = ("pyvrp", "ortools")

#: Each attribute alone, then combinations of all of them.
VARIANTS = (
    "OVRP", "VRPB", "VRPMB", "VRPL", "VRPTW", "MDVRP",
    "OVRPBLTW", "VRPMBLTW", "MDVRPBTW", "MDOVRPMBLTW",
)  # fmt: skip

#: Each set's loading convention (as tests/envs/test_variants.py) and the file used here.
SETS = {
    "vrpb": ("X-n524-50-k125", {}),
    "vrptw-gh1000": ("C1_10_1", {"edge_weight": "SOLOMON"}),
    "mdvrptw": ("PR11A", {"edge_weight": "EUC_2D", "scale": 1000.0}),
}


def _generated(variant: str, n: int = 12, seed: int = 0) -> Instance:
    td = MTVRPGenerator(n, variants=(variant,))(1, seed=seed)
    return mtvrp.to_instance(td, name=variant)


def _pyvrp_feasible(inst: Instance, sol: Solution) -> bool:
    """PyVRP's own verdict on a plan, on the data the PyVRP solver builds for ``inst``."""
    solver = get_solver("pyvrp")
    problem, meta = solver.problem_data(inst)
    deps = None if sol.route_depots is None else list(sol.route_depots)
    plan = solver.pyvrp_solution(problem, meta, inst, [list(r) for r in sol.routes], deps)
    return bool(plan.is_feasible())


def _assert_checked(inst: Instance, sol: Solution, solver: str) -> None:
    assert sol.solver == solver
    assert sol.feasible, (solver, inst.variant, sol.violations[:3])
    served = sorted(v for r in sol.routes for v in r)
    assert served == list(range(inst.num_depots, inst.num_nodes))
    if inst.num_depots > 1:
        assert sol.route_depots is not None and len(sol.route_depots) == len(sol.routes)
        assert set(sol.route_depots) <= set(range(inst.num_depots))
    assert sol.cost == pytest.approx(inst.route_cost(sol.routes, sol.route_depots), abs=0)
    assert _pyvrp_feasible(inst, sol)


# ----------------------------------------------------------------------------- generated
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_generated_variants_solved_and_checked(solver: str, variant: str) -> None:
    inst = _generated(variant, seed=VARIANTS.index(variant))
    assert inst.problem == "mtvrp" and inst.variant == variant
    assert get_solver(solver).supports("mtvrp")
    sol = get_solver(solver).solve(inst, time_limit=LIMIT, seed=1)
    _assert_checked(inst, sol, solver)
    if solver == "pyvrp":
        assert sol.metadata["pyvrp_feasible"]


def _with_duration_limit(inst: Instance, unlimited: Solution) -> Instance:
    """``inst`` with a duration limit that binds: 70% of the longest route of a plan found
    without it, but no less than what a dedicated vehicle needs for any customer."""
    st = inst.service_time if inst.service_time is not None else np.zeros(inst.num_nodes)
    durs = [
        mtvrp.route_duration(inst.distance, inst.time_windows, st, 0, r, inst.open_routes)
        for r in unlimited.routes
    ]
    ret = 0 if inst.open_routes else inst.distance[1:, 0]
    needed = float((inst.distance[0, 1:] + st[1:] + ret).max()) * 1.01
    return dataclasses.replace(inst, max_duration=max(0.7 * max(durs), needed))


@pytest.mark.parametrize("base", ["CVRP", "VRPTW", "OVRPTW"])
@pytest.mark.parametrize("solver", SOLVERS)
def test_duration_limit_binds_and_holds(solver: str, base: str) -> None:
    inst = _generated(base, n=14, seed=5)
    if inst.service_time is None:  # durations = length + service without windows
        st = np.full(inst.num_nodes, 0.05)
        st[0] = 0.0
        inst = dataclasses.replace(inst, service_time=st)
    free = get_solver("pyvrp").solve(inst, time_limit=LIMIT, seed=0)
    limited = _with_duration_limit(inst, free)
    assert limited.max_duration is not None and "L" in limited.variant
    # the plan found without the limit breaks it, so the limit is a real constraint
    assert "duration" in {v.kind for v in Solution.from_routes(limited, free.routes).violations}
    sol = get_solver(solver).solve(limited, time_limit=LIMIT, seed=1)
    _assert_checked(limited, sol, solver)


def test_backhaul_precedence_seen_by_pyvrps_own_verdict() -> None:
    inst = _generated("VRPB", n=12, seed=2)
    sol = get_solver("pyvrp").solve(inst, time_limit=LIMIT, seed=0)
    assert inst.backhaul is not None
    lines = [v for v in range(1, inst.num_nodes) if inst.backhaul[v] == 0]
    backs = [v for v in range(1, inst.num_nodes) if inst.backhaul[v] > 0]
    # one route per customer, except one route serving a backhaul before a linehaul
    routes = [[backs[0], lines[0]]] + [[v] for v in lines[1:] + backs[1:]]
    bad = Solution.from_routes(inst, routes)
    assert {v.kind for v in bad.violations} == {"backhaul_order"}
    assert not _pyvrp_feasible(inst, bad)
    assert _pyvrp_feasible(inst, sol)
    # in mixed backhauls the same order is fine for both
    mixed = dataclasses.replace(inst, mixed_backhaul=True)
    assert Solution.from_routes(mixed, routes).feasible
    assert _pyvrp_feasible(mixed, Solution.from_routes(mixed, routes))


def test_open_routes_pay_no_return_leg_in_either_model() -> None:
    inst = _generated("OVRP", n=10, seed=4)
    sol = get_solver("ortools").solve(inst, time_limit=LIMIT)
    closed = dataclasses.replace(inst, open_routes=False)
    assert sol.cost < closed.route_cost(sol.routes)
    solver = get_solver("pyvrp")
    problem, meta = solver.problem_data(inst)
    plan = solver.pyvrp_solution(problem, meta, inst, [list(r) for r in sol.routes])
    assert plan.distance() / meta["scale"] == pytest.approx(sol.cost, rel=1e-5)


def test_integer_data_for_variants_is_conservative() -> None:
    inst = _generated("VRPBLTW", n=12, seed=3)
    inst = dataclasses.replace(inst, max_duration=50.0, capacity=inst.capacity * 1.03)
    data = integer_data(inst)
    assert not data.exact and data.backhaul is not None
    f = 1e6 / inst.capacity  # loads share one factor (rounded up), the capacity rounds down
    assert data.capacity <= inst.capacity * f * (1 + FEAS_TOL)
    assert (data.backhaul >= inst.backhaul * f - 1e-6).all()
    assert ((data.backhaul > 0) == (inst.backhaul > 0)).all()
    assert inst.max_distance is not None
    for lim, lim_i in ((inst.max_distance, data.max_distance), (50.0, data.max_duration)):
        assert lim_i is not None
        assert lim_i <= (lim + FEAS_TOL * lim) * data.scale
        assert lim_i >= lim * data.scale - 1
    assert (data.travel >= inst.distance * data.scale - 1e-6).all()


# ----------------------------------------------------------------------------- refusals
def test_hgs_refuses_variants_naming_the_attribute() -> None:
    pytest.importorskip("hygese")
    hgs = get_solver("hgs")
    assert not hgs.supports("mtvrp")
    for variant, named in (
        ("VRPB", "backhauls (BACKHAUL_SECTION)"),
        ("VRPMB", "mixed backhauls"),
        ("OVRP", "open routes"),
        ("VRPL", "distance limit (VEHICLES_MAX_DISTANCE)"),
        ("VRPTW", "time windows"),
        ("MDVRP", "several depots"),
    ):
        with pytest.raises(UnsupportedProblemError, match=r"'hgs'.*'mtvrp'.*" + re.escape(named)):
            hgs.solve(_generated(variant), time_limit=1)
    # an mtvrp instance without any attribute is a CVRP
    plain = _generated("CVRP")
    assert hgs.solve(plain, time_limit=0.2).feasible


@pytest.mark.parametrize("solver", SOLVERS)
def test_shared_fleet_over_several_depots_is_refused(solver: str) -> None:
    inst = dataclasses.replace(_generated("MDVRP"), num_vehicles=6)
    with pytest.raises(UnsupportedProblemError, match="VEHICLES_DEPOT_SECTION"):
        get_solver(solver).solve(inst, time_limit=LIMIT)
    with pytest.raises(ValueError, match="cannot be split"):
        fleet_per_depot(inst)


@pytest.mark.parametrize("solver", SOLVERS)
def test_multi_depot_warm_start_needs_depots(solver: str) -> None:
    inst = _generated("MDVRPTW", n=10, seed=6)
    first = get_solver("pyvrp").solve(inst, time_limit=LIMIT, seed=0)
    routes = [list(r) for r in first.routes]
    with pytest.raises(ValueError, match="initial_depots"):
        get_solver(solver).solve(inst, time_limit=LIMIT, initial_routes=routes)
    assert first.route_depots is not None
    sol = get_solver(solver).solve(
        inst, time_limit=LIMIT, initial_routes=routes, initial_depots=list(first.route_depots)
    )
    _assert_checked(inst, sol, solver)
    assert sol.metadata["warm_start"]
    if solver == "pyvrp":
        assert sol.cost <= first.cost + 1e-9


# ----------------------------------------------------------------------------- shared files
def _head(inst: Instance, k: int) -> Instance:
    """The depots and the first ``k`` customers of an instance (same vehicles and limits)."""
    keep = np.r_[0 : inst.num_depots, inst.num_depots : inst.num_depots + k]

    def rows(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else x[keep]

    return dataclasses.replace(
        inst,
        distance=inst.distance[np.ix_(keep, keep)],
        coords=rows(inst.coords),
        demand=rows(inst.demand),
        backhaul=rows(inst.backhaul),
        time_windows=rows(inst.time_windows),
        service_time=rows(inst.service_time),
        name=f"{inst.name}-head{k}",
    )


@pytest.mark.parametrize("name", list(SETS))
def test_shared_variant_files_pyvrp(shared_data, name: str) -> None:
    stem, kw = SETS[name]
    inst = E.load(shared_data / name / f"{stem}.vrp", **kw)
    sol = get_solver("pyvrp").solve(inst, time_limit=1.0, seed=0)
    _assert_checked(inst, sol, "pyvrp")


@pytest.mark.parametrize("name", list(SETS))
def test_shared_variant_files_ortools(shared_data, name: str) -> None:
    stem, kw = SETS[name]
    inst = E.load(shared_data / name / f"{stem}.vrp", **kw)
    # OR-Tools needs several seconds for a first complete plan of the 360-1000-customer
    # windowed files; their first 100 customers keep every attribute.
    if inst.time_windows is not None:
        inst = _head(inst, 100)
    sol = get_solver("ortools").solve(inst, time_limit=1.0)
    _assert_checked(inst, sol, "ortools")
