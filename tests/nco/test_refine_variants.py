"""``refine=True`` on the VRP variants: the local search's plans pass the library's checker.

For each of the 16 core mtvrp variants, mixed backhauls (MB), several depots (MD) and duration
limits, small generated instances are refined from the network's plan and from one route per
customer, and the refined plan (re-checked by ``Solution.from_routes``) is feasible and no
costlier; ``NeuralSolver(refine=True)`` refines them (nothing is skipped) and keeps each route's
depot; spare vehicles of several depots respect the fleet; and on one file of each shared
variant set (VRPB, MDVRPTW, Gehring-Homberger VRPTW) a PyVRP or network plan refined for a few
seconds stays feasible and no costlier.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import nco.solvers as S
from nco.baselines import get_solver
from nco.envs import Instance, Solution, get_problem, load
from nco.envs.mtvrp import VARIANT_NAMES, MTVRPGenerator

P = get_problem("mtvrp")

pytestmark = [
    # the shipped network is trained at n=50 on six variants: size and zero-shot warnings
    pytest.mark.filterwarnings("ignore:neural. :UserWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]

#: The 16 core variants, mixed backhauls and several depots (with the other attributes).
VARIANTS = [
    *VARIANT_NAMES,
    "VRPMB", "OVRPMBLTW", "VRPMBTW",
    "MDVRP", "MDVRPTW", "MDOVRPBLTW", "MDVRPMBL",
]  # fmt: skip
SEEDS = (0, 1, 2)
TOL = 1e-9


def generated(variant: str, seed: int, n: int = 20) -> Instance:
    return P.to_instance(
        MTVRPGenerator(num_loc=n, variants=(variant,))(1, seed=seed)[0], name=f"{variant}-{seed}"
    )


def with_duration_limit(inst: Instance, factor: float) -> Instance:
    """``inst`` with a duration limit ``factor`` times the longest dedicated round trip."""
    nd = inst.num_depots
    st = inst.service_time if inst.service_time is not None else np.zeros(inst.num_nodes)
    trip = inst.distance[0, nd:] + st[nd:] + inst.distance[nd:, 0]
    return Instance.from_arrays(
        coords=inst.coords,
        demand=inst.demand,
        capacity=inst.capacity,
        time_windows=inst.time_windows,
        service_time=inst.service_time,
        backhaul=inst.backhaul,
        mixed_backhaul=inst.mixed_backhaul,
        open_routes=inst.open_routes,
        max_duration=float(trip.max()) * factor,
        num_depots=nd,
        name=f"{inst.name}-duration",
    )


#: Duration limits (the generator draws none): with and without windows, open, backhauls.
DURATION = {
    f"{v}+duration": (v, factor)
    for v, factor in (("CVRP", 1.5), ("VRPTW", 1.3), ("OVRPBTW", 1.3), ("VRPMB", 2.0))
}


def instance(name: str, seed: int) -> Instance:
    if name in DURATION:
        variant, factor = DURATION[name]
        return with_duration_limit(generated(variant, seed), factor)
    return generated(name, seed)


def singletons(inst: Instance) -> tuple[list[list[int]], list[int] | None]:
    """One route per customer, from depot 0 (which serves everyone in generated instances)."""
    routes = [[c] for c in range(inst.num_depots, inst.num_nodes)]
    return routes, ([0] * len(routes) if inst.num_depots > 1 else None)


def refined(inst: Instance, routes, depots, **kw) -> Solution:
    routes = [list(r) for r in routes]
    if depots is None:
        return Solution.from_routes(inst, S.refine_routes(inst, routes, **kw))
    out, deps = S.refine_routes(inst, routes, depots=list(depots), **kw)
    assert len(deps) == len(out) and all(0 <= d < inst.num_depots for d in deps)
    return Solution.from_routes(inst, out, depots=deps)


def assert_improves(inst: Instance, start: Solution, after: Solution) -> None:
    assert start.feasible, start.violations[:3]
    assert after.feasible, (inst.variant, after.violations[:3])
    assert after.cost <= start.cost + TOL
    served = sorted(c for r in after.routes for c in r)
    assert served == list(range(inst.num_depots, inst.num_nodes))


# ----------------------------------------------------------------------------- generated
@pytest.mark.parametrize("name", [*VARIANTS, *DURATION])
def test_refined_singletons_are_checked_feasible_and_cheaper(name):
    for seed in SEEDS:
        inst = instance(name, seed)
        routes, depots = singletons(inst)
        start = Solution.from_routes(inst, routes, depots=depots)
        after = refined(inst, routes, depots)
        assert_improves(inst, start, after)
        assert after.cost < start.cost - TOL  # one route per customer is never a local optimum
        # a deadline: slices of moves (with several depots, spares offered again after each)
        timed = refined(inst, routes, depots, deadline=time.perf_counter() + 30)
        assert_improves(inst, start, timed)


@pytest.mark.parametrize("name", VARIANTS)
def test_refined_network_plans_are_checked_feasible_and_no_costlier(name):
    insts = [instance(name, seed) for seed in SEEDS]
    for inst, base in zip(insts, S.NeuralSolver(augment=1).solve_many(insts)):
        assert (base.route_depots is not None) == (inst.num_depots > 1)
        assert_improves(inst, base, refined(inst, base.routes, base.route_depots))


@pytest.mark.parametrize("name", VARIANTS)
def test_neural_solver_refines_every_variant(name):
    insts = [instance(name, seed) for seed in SEEDS]
    base = S.NeuralSolver(augment=1).solve_many(insts)
    sols = S.NeuralSolver(augment=1, refine=True).solve_many(insts)
    for inst, b, sol in zip(insts, base, sols):
        assert S._refine_refusal(inst) is None
        assert "refine_skipped" not in sol.metadata and "refined_cost" in sol.metadata
        assert sol.metadata["construction_cost"] == pytest.approx(b.cost)
        again = Solution.from_routes(inst, sol.routes, depots=sol.route_depots)
        assert again.feasible and again.cost == pytest.approx(sol.cost)
        assert sol.cost <= b.cost + TOL
        if inst.num_depots > 1:
            assert sol.route_depots is not None and len(sol.route_depots) == len(sol.routes)


def test_refine_improves_the_network_plans_of_most_variants():
    # not a guarantee per instance, but the network's plans are rarely local optima
    gains = []
    for name in VARIANTS:
        insts = [instance(name, seed) for seed in SEEDS]
        for inst, base in zip(insts, S.NeuralSolver(augment=1).solve_many(insts)):
            gains.append(refined(inst, base.routes, base.route_depots).cost < base.cost - TOL)
    assert np.mean(gains) > 0.8


def test_several_depots_move_customers_between_depots():
    # every customer on depot 0's routes: the search moves some, or whole routes, to the other
    # depots' spare vehicles (in most instances: depot 0 may be the nearest for all)
    moved = 0
    for seed in SEEDS:
        inst = generated("MDVRP", seed)
        routes, depots = singletons(inst)
        out, deps = S.refine_routes(inst, routes, depots=depots)
        assert Solution.from_routes(inst, out, depots=deps).feasible
        moved += bool(set(deps) - {0})
    assert moved >= 2


def test_spare_vehicles_respect_the_fleet():
    base = generated("MDVRP", 0)
    routes, depots = singletons(base)
    nd = base.num_depots
    # every vehicle in use at depot 0 plus one idle vehicle at the last depot: one spare there
    vehicle_depots = [0] * len(routes) + [nd - 1]
    inst = Instance.from_arrays(
        coords=base.coords,
        demand=base.demand,
        capacity=base.capacity,
        num_depots=nd,
        vehicle_depots=vehicle_depots,
    )
    out, deps = S.refine_routes(inst, routes, depots=depots)
    sol = Solution.from_routes(inst, out, depots=deps)
    assert sol.feasible and set(deps) <= {0, nd - 1}
    assert sum(d == nd - 1 for d in deps) <= 1
    # a total fleet of the routes in use: no spare at all
    inst = Instance.from_arrays(
        coords=base.coords,
        demand=base.demand,
        capacity=base.capacity,
        num_depots=nd,
        num_vehicles=len(routes),
    )
    out, deps = S.refine_routes(inst, routes, depots=depots)
    assert set(deps) == {0} and Solution.from_routes(inst, out, depots=deps).feasible


def test_multi_depot_routes_need_their_depots():
    inst = generated("MDVRP", 0)
    routes, depots = singletons(inst)
    with pytest.raises(ValueError, match="depots="):
        S.refine_routes(inst, routes)
    with pytest.raises(ValueError, match="depots given"):
        S.refine_routes(inst, routes, depots=depots[:-1])


# ----------------------------------------------------------------------------- shared files
#: One file of each shared variant set, its load options and where its first plan comes from
#: (the network has no form for MDVRPTW's duration limit with windows: PyVRP's plan there).
FILES = {
    "vrpb": ("vrpb/X-n524-50-k125.vrp", {}, "neural"),
    "mdvrptw": ("mdvrptw/PR11A.vrp", {"edge_weight": "EUC_2D", "scale": 1000.0}, "pyvrp"),
    "vrptw-gh1000": ("vrptw-gh1000/C1_10_1.vrp", {"edge_weight": "SOLOMON"}, "neural"),
}


@pytest.mark.parametrize("name", list(FILES))
def test_refine_a_plan_of_each_shared_variant_set(shared_data, name):
    rel, options, source = FILES[name]
    inst = load(shared_data / rel, **options)
    if source == "neural":
        start = S.NeuralSolver(augment=1).solve(inst, time_limit=3.0)
    else:
        start = get_solver("pyvrp").solve(inst, time_limit=1.0)
    t0 = time.perf_counter()
    after = refined(inst, start.routes, start.route_depots, deadline=t0 + 3.0)
    assert time.perf_counter() - t0 < 3.0 + 2.0
    assert_improves(inst, start, after)
    if inst.num_depots > 1:
        assert after.route_depots is not None


# ----------------------------------------------------------------------------------------------
# Fleet repair: plans with more routes than the fleet
# ----------------------------------------------------------------------------------------------
def absorbable() -> tuple[Instance, list[list[int]]]:
    """A CVRP with 2 vehicles and a 3-route plan whose last route joins the second."""
    inst = Instance.from_arrays(
        coords=[[0, 0], [1, 0], [2, 0], [0, 1], [0, 2]],
        demand=[0, 2, 1, 1, 1],
        capacity=3,
        num_vehicles=2,
        name="absorbable",
    )
    return inst, [[1, 2], [3], [4]]


def unabsorbable() -> tuple[Instance, list[list[int]]]:
    """5 units of demand for two vehicles of 2: no route can be emptied."""
    inst = Instance.from_arrays(
        coords=[[0, 0], [1, 0], [2, 0], [0, 1], [0, 2], [1, 1]],
        demand=[0, 1, 1, 1, 1, 1],
        capacity=2,
        num_vehicles=2,
        name="unabsorbable",
    )
    return inst, [[1, 2], [3, 4], [5]]


@pytest.fixture
def network_plans(monkeypatch):
    """Make every constructed (or fallback) plan of the network the given one."""

    def use(plan: tuple[list[list[int]], list[int] | None]) -> None:
        monkeypatch.setattr(S, "_split_tour", lambda problem, inst, tour: plan)
        monkeypatch.setattr(S, "_fallback_routes", lambda inst: plan)

    return use


def test_refine_routes_repairs_the_fleet_first():
    inst, plan = absorbable()
    assert [v.kind for v in Solution.from_routes(inst, plan).violations] == ["vehicles"]
    report: dict = {}
    out = S.refine_routes(inst, plan, report=report)
    sol = Solution.from_routes(inst, out)
    assert sol.feasible and len(sol.routes) == 2
    assert report["routes_before"] == 3 and report["routes_after"] == 2
    assert report["excess_before"] == 1 and report["excess_after"] == 0
    assert report["fleet"] == 2 and report["seconds"] >= 0 and report["repairs"] == 1
    # a plan that fits: no repair, nothing reported
    report = {}
    S.refine_routes(inst, out, report=report)
    assert report == {}
    # under a deadline
    out = S.refine_routes(inst, plan, deadline=time.perf_counter() + 5)
    assert Solution.from_routes(inst, out).feasible
    # fleet only: the repair without the search; a plan that fits comes back as it is
    report = {}
    out = S.refine_routes(inst, plan, fleet_only=True, report=report)
    assert out == [[1, 2], [3, 4]] and "searched" not in report
    costly = [[3, 1], [2, 4]]
    assert S.refine_routes(inst, costly, fleet_only=True) == costly
    assert Solution.from_routes(inst, S.refine_routes(inst, costly)).cost < (
        Solution.from_routes(inst, costly).cost
    )


def test_refine_routes_keeps_a_route_that_cannot_be_absorbed():
    inst, plan = unabsorbable()
    report: dict = {}
    out = S.refine_routes(inst, plan, report=report)
    sol = Solution.from_routes(inst, out)
    assert len(sol.routes) == 3 and [v.kind for v in sol.violations] == ["vehicles"]
    assert report["routes_before"] == report["routes_after"] == 3
    assert report["excess_after"] == 1


def test_refine_routes_moves_routes_to_depots_with_spare_vehicles():
    # two depots with one vehicle each; both routes start at depot 0
    inst = Instance.from_arrays(
        coords=[[0, 0], [10, 0], [1, 0], [9, 0], [2, 0]],
        demand=[0, 0, 1, 1, 1],
        capacity=2,
        num_depots=2,
        vehicle_depots=[0, 1],
    )
    report: dict = {}
    out, deps = S.refine_routes(inst, [[2, 4], [3]], depots=[0, 0], report=report)
    sol = Solution.from_routes(inst, out, depots=deps)
    assert sol.feasible and sorted(deps) == [0, 1]
    assert report["excess_before"] == 1 and report["excess_after"] == 0
    assert report["vehicles_per_depot"] == [1, 1]


def test_neural_solver_repairs_a_plan_that_breaks_only_the_fleet(network_plans):
    inst, plan = absorbable()
    network_plans((plan, None))
    sol = S.NeuralSolver(augment=1).solve(inst)
    rep = sol.metadata["fleet_repair"]
    assert sol.feasible and len(sol.routes) == 2
    assert rep["routes_before"] == 3 and rep["routes_after"] == 2 and rep["kept"]
    assert rep["feasible"] and rep["cost_after"] == pytest.approx(sol.cost)
    assert sol.metadata["construction_cost"] == pytest.approx(rep["cost_before"])
    # with refine=True, the refinement repairs it (and reports it)
    sol = S.NeuralSolver(augment=1, refine=True).solve(inst)
    assert sol.feasible and len(sol.routes) == 2
    assert sol.metadata["fleet_repair"]["routes_after"] == 2 and sol.metadata["refine_kept"]


def test_neural_solver_keeps_an_unrepairable_plan_marked(network_plans):
    inst, plan = unabsorbable()
    network_plans((plan, None))
    for refine in (False, True):
        sol = S.NeuralSolver(augment=1, refine=refine).solve(inst, time_limit=5.0)
        assert len(sol.routes) == 3 and not sol.feasible
        assert [v.kind for v in sol.violations] == ["vehicles"]
        rep = sol.metadata["fleet_repair"]
        assert rep["routes_before"] == rep["routes_after"] == 3 and not rep["feasible"]


def test_neural_solver_skips_the_repair_when_construction_used_the_time(network_plans):
    inst, plan = absorbable()
    network_plans((plan, None))
    sol = S.NeuralSolver(augment=1).solve(inst, time_limit=1e-4)
    assert "used by construction" in sol.metadata["fleet_repair"]["skipped"]
    assert len(sol.routes) == 3 and not sol.feasible


def test_neural_solver_leaves_a_plan_with_other_violations_alone(network_plans):
    # the capacity is broken as well: not a fleet-only plan, no repair without refine
    inst, plan = absorbable()
    network_plans(([[1, 2, 3], [4]], None))
    sol = S.NeuralSolver(augment=1).solve(inst)
    assert "fleet_repair" not in sol.metadata
    assert {v.kind for v in sol.violations} == {"capacity"}


def test_fleet_repair_of_a_shared_mdvrptw_file(shared_data):
    """PR11A (360 customers, 4 depots x 10 vehicles): the network's plan for 20 s is feasible
    or has fewer routes over the fleet than constructed; and a plan with every route cut in
    two (twice the fleet) is repaired to a feasible one well within a second."""
    inst = load(shared_data / "mdvrptw/PR11A.vrp", edge_weight="EUC_2D", scale=1000.0)
    t0 = time.perf_counter()
    from nco import solve

    sol = solve(inst, solver="neural", time_limit=20)
    assert time.perf_counter() - t0 < 20 + 5
    rep = sol.metadata.get("fleet_repair")
    if rep is not None and "skipped" not in rep:
        assert rep["excess_after"] < rep["excess_before"] or sol.feasible
    assert sol.feasible or S._fleet_excess(inst, sol.routes, sol.route_depots) < len(sol.routes)
    halves, deps = [], []
    for r, d in zip(sol.routes, sol.route_depots):
        h = max(1, len(r) // 2)
        for part in (r[:h], r[h:]):
            if part:
                halves.append(list(part))
                deps.append(d)
    start = Solution.from_routes(inst, halves, depots=deps)
    assert {v.kind for v in start.violations} == {"vehicles"}
    report: dict = {}
    plan = S._repair_fleet(inst, (halves, deps), time.perf_counter() + 10, report)
    after = Solution.from_routes(inst, plan[0], depots=plan[1])
    assert after.feasible, after.violations[:3]
    assert len(after.routes) <= inst.num_vehicles < len(halves)
    assert report["seconds"] < 1.0 and after.cost < start.cost
