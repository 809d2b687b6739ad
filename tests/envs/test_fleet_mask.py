"""MTVRP fleet limits: ``depot_vehicles`` (vehicles based at each depot slot) and
``max_vehicles`` (vehicles in all), +inf or absent for none.

Unlimited (or never binding) fleets give exactly the masks without a fleet; binding per-depot
limits (with a depot that can serve everyone) are never exceeded by random rollouts, a total
that the demand's lower bound makes exact is always met and a slightly looser one nearly
always, and ``depot_routes`` counts the routes started from each slot; an impossible fleet
never leaves a step without an action; the fleet round-trips through :class:`Instance`; and
on the shared PR11A file the 10 vehicles of each depot hold until every vehicle is used.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from tensordict import TensorDict

import nco
import nco.envs as E
from nco.envs import Instance, mtvrp
from nco.envs.mtvrp import FLEET_KEYS, MTVRPGenerator, make_instances, split_depot_routes

P = E.get_problem("mtvrp")
INF = math.inf

#: Every attribute at least once (windows, backhauls in order and mixed, limits, open routes)
#: and a single-depot variant among the MD ones.
MD_VARIANTS = ("MDVRP", "MDVRPTW", "MDVRPB", "MDOVRPLTW", "MDVRPMBTW", "MDVRPBLTW", "VRPTW")


def rollout(
    env,
    data: TensorDict,
    seed: int = 0,
    greedy: bool = False,
    on_state: Callable[[TensorDict], None] | None = None,
) -> tuple[torch.Tensor, TensorDict]:
    """Uniformly random allowed actions (or the nearest allowed customer, a depot only when
    none is allowed) until every episode is done, asserting at every step that some action is
    allowed; ``on_state`` sees each state before its action. -> (actions [B, T], last state)."""
    g = torch.Generator().manual_seed(seed)
    state = env.reset(data.clone())
    acts = []
    for _ in range(4 * data["locs"].shape[1] + 2):
        if state["done"].all():
            break
        mask = state["action_mask"]
        assert mask.any(1).all(), "a state with no allowed action"
        if on_state is not None:
            on_state(state)
        if greedy:
            cust = mask & ~mtvrp.is_depot_node(state)
            d = E.common.distance_rows(state, state["current_node"])
            near = torch.where(cust, d, torch.full_like(d, INF)).argmin(1)
            action = torch.where(cust.any(1), near, mask.float().argmax(1))
        else:
            action = torch.multinomial(mask.float(), 1, generator=g).squeeze(-1)
        state["action"] = action
        acts.append(action)
        state = env._step(state)
    assert state["done"].all(), "episodes did not finish"
    assert (state["visited"] | mtvrp.is_depot_node(state)).all(), "a customer was left unserved"
    return torch.stack(acts, 1), state


def route_starts(row: list[int], k: int) -> list[int]:
    """The slot each route of an action sequence starts from (an unfinished one included)."""
    return split_depot_routes(row, k)[1]


def counted(acts: torch.Tensor, k: int) -> torch.Tensor:
    """[B, K] routes started from each depot slot, counted from the action sequences."""
    out = torch.zeros(acts.shape[0], k)
    for b, row in enumerate(acts.tolist()):
        for d, c in Counter(route_starts(row, k)).items():
            out[b, d] = c
    return out


def with_fleet(td: TensorDict, per: torch.Tensor | None, total: torch.Tensor | None) -> TensorDict:
    out = td.clone()
    if per is not None:
        out["depot_vehicles"] = per.float()
    if total is not None:
        out["max_vehicles"] = total.float()
    return out


def free_mask(state: TensorDict) -> torch.Tensor:
    """The mask of the same state without a fleet."""
    return mtvrp.mtvrp_mask(state.exclude(*FLEET_KEYS), *_state_args(state)[:-1])


def unit_demands(b: int, n: int, num_depots: int = 1, seed: int = 0) -> TensorDict:
    """CVRP-like instances with n customers of demand 1 and capacity 4: exactly n / 4 full
    routes are needed, and the mask's lower bound on the routes left is exact."""
    g = torch.Generator().manual_seed(seed)
    locs = torch.rand(b, n + num_depots, 2, generator=g)
    dem = torch.cat([torch.zeros(b, num_depots), torch.ones(b, n)], 1)
    return make_instances(locs, dem, capacity=4.0, num_depots=num_depots)


def _state_args(state: TensorDict) -> tuple[torch.Tensor, ...]:
    keys = (
        "used_capacity_linehaul", "used_capacity_backhaul", "visited", "current_node",
        "current_time", "current_route_length", "peak_load", "route_depot", "depot_switched",
        "route_wait", "route_slack", "depot_routes",
    )  # fmt: skip
    return tuple(state[key] for key in keys)


# ----------------------------------------------------------------------------- unlimited fleets
@pytest.mark.parametrize("form", ["both_inf", "per_depot_inf", "total_inf", "never_binding"])
def test_unlimited_fleet_gives_the_masks_without_a_fleet(form):
    """+inf in either key or both (or n vehicles at every depot and n in all, which no plan of
    n customers can use up) leaves every mask of a random rollout, and every other piece of
    state, as without the keys; ``depot_routes`` is tracked all the same."""
    n, b, k = 15, 48, 3
    td = MTVRPGenerator(n, variants=MD_VARIANTS, num_depots=k)(b, seed=4)
    per = {"both_inf": INF, "per_depot_inf": INF, "total_inf": None, "never_binding": n}[form]
    total = {"both_inf": INF, "per_depot_inf": None, "total_inf": INF, "never_binding": n}[form]
    fleet = with_fleet(
        td,
        None if per is None else torch.full((b, k), float(per)),
        None if total is None else torch.full((b,), float(total)),
    )
    env = E.make("mtvrp", num_loc=n)
    a, f = env.reset(td.clone()), env.reset(fleet)
    assert "depot_routes" not in a.keys() and (f["depot_routes"] == 0).all()
    g = torch.Generator().manual_seed(1)
    acts, steps, restricted = [], 0, 0
    while not a["done"].all():
        assert torch.equal(a["action_mask"], f["action_mask"]), steps
        # the helpers see no limit (not merely a mask that falls back to the free one)
        routes = f["depot_routes"]
        todo = ~(f["visited"] | mtvrp.is_depot_node(f)).all(1)
        assert mtvrp.vehicles_left(f, routes)[todo, :k].all()
        if form != "never_binding":
            assert torch.isinf(mtvrp.spare_vehicles(f, routes)).all()
        for key in a.keys():
            if key not in ("action", "next"):
                assert torch.equal(a[key], f[key]), key
        # the same state with a finite, binding total restricts it (the comparison can fail)
        tight = f.clone()
        tight["max_vehicles"] = torch.ones(b)
        restricted += int(
            (mtvrp.mtvrp_mask(tight, *_state_args(f)) != f["action_mask"]).any(1).sum()
        )
        act = torch.multinomial(a["action_mask"].float(), 1, generator=g).squeeze(-1)
        acts.append(act)
        a["action"], f["action"] = act, act.clone()
        a, f = env._step(a), env._step(f)
        steps += 1
        torch.testing.assert_close(f["depot_routes"], counted(torch.stack(acts, 1), k))
    assert f["done"].all() and steps > 2 * n
    assert restricted > 0


# ----------------------------------------------------------------------------- binding fleets
def test_per_depot_limits_hold_and_depot_routes_counts_the_starts():
    """Per-depot fleets that bind (0 to 2 vehicles at some depots, the depot that serves every
    customer with plenty) and a total of n or none: random rollouts never start more routes
    from a slot than it has vehicles (nor more than the total), the plans pass the checker
    (the fleet included), and ``depot_routes`` is, at every step, the routes the actions so
    far started from each slot. Without the fleet the same instances' plans exceed it."""
    n, b, k = 15, 96, 3
    td = MTVRPGenerator(n, variants=MD_VARIANTS, num_depots=k)(b, seed=3)
    g = torch.Generator().manual_seed(0)
    per = torch.randint(0, 3, (b, k), generator=g).float()
    # Generated MD data lets depot 0 serve every customer (windows and limits relative to
    # it); without windows and limits every depot serves every customer: there the ample
    # depot may be another one, and depot 0 may have no vehicle at all.
    plain = ~(td["has_time_windows"] | td["has_distance_limit"]) & td["has_multi_depot"]
    ample = torch.where(plain, torch.arange(b) % k, 0)
    per[torch.arange(b), ample] = float(n)
    total = torch.where(torch.arange(b) % 2 == 0, INF, float(n))
    fleet = with_fleet(td, per, total)
    assert (plain & (per[:, 0] == 0)).any()  # some rows have no vehicle at depot 0
    env = E.make("mtvrp", num_loc=n)
    seen: list[torch.Tensor] = []
    acts, last = rollout(env, fleet, seed=5, on_state=lambda s: seen.append(s["depot_routes"]))
    history = torch.stack([*seen[1:], last["depot_routes"]], 1)  # after each action
    assert (history <= per[:, None]).all()
    assert (history.sum(-1) <= total[:, None]).all()
    for t in range(0, acts.shape[1], 7):
        torch.testing.assert_close(history[:, t], counted(acts[:, : t + 1], k))
    torch.testing.assert_close(last["depot_routes"], counted(acts, k))
    assert all(not v for v in P.check(fleet, acts))
    # a single-depot row of the MD batch starts every route from slot 0
    single = ~td["has_multi_depot"]
    assert single.any() and (last["depot_routes"][single][:, 1:] == 0).all()
    # the limits bind: random plans without the fleet exceed it on many of these instances
    free_acts, _ = rollout(env, td, seed=5)
    over = (counted(free_acts, k) > per).any(1)
    assert over.float().mean() > 0.3
    vehicles = [any(v.kind == "vehicles" for v in vs) for vs in P.check(fleet, free_acts)]
    assert vehicles == over.tolist()  # the checker sees the same excess


def test_a_depot_without_vehicles_is_never_a_route_start_nor_a_switch_target():
    """No vehicle at depot 0 (where every episode begins), 4 at depot 1, unlimited at depot 2
    (every depot serves every customer without windows or limits): depot 0 is never an
    allowed action, routes start from depots 1 and 2 only, depot 1 at most 4 times."""
    n, b, k = 12, 32, 3
    td = MTVRPGenerator(n, variants=("MDVRP", "MDVRPB"), num_depots=k)(b, seed=8)
    per = torch.tensor([[0.0, 4.0, INF]]).expand(b, k)
    env = E.make("mtvrp", num_loc=n)
    masks: list[torch.Tensor] = []
    acts, last = rollout(
        env, with_fleet(td, per, None), seed=2, on_state=lambda s: masks.append(s["action_mask"])
    )
    assert not torch.stack(masks, 1)[..., 0].any()  # depot 0 is never allowed, not even first
    assert (last["depot_routes"][:, 0] == 0).all() and (last["depot_routes"][:, 1] <= 4).all()
    assert (last["depot_routes"][:, 1] == 4).any()  # depot 1's limit is reached
    assert all(not v for v in P.check(with_fleet(td, per, None), acts))


def test_max_vehicles_alone_bounds_the_routes_of_a_single_depot():
    """Unit demands (4 per route): the exact number of routes needed in all (through
    ``max_vehicles``) or at the depot (``depot_vehicles``) makes every random route full, so
    every plan uses exactly that many routes; without a fleet random plans use more."""
    n, b = 12, 64
    td = unit_demands(b, n)
    env = E.make("mtvrp", num_loc=n)
    for per, total in ((None, torch.full((b,), 3.0)), (torch.full((b, 1), 3.0), None)):
        acts, last = rollout(env, with_fleet(td, per, total), seed=0)
        assert (last["depot_routes"] == 3).all()
        for row in acts.tolist():
            routes = split_depot_routes(row, 1)[0]
            assert sorted(map(len, routes)) == [4, 4, 4]
    free_acts, _ = rollout(env, td, seed=0)
    assert (counted(free_acts, 1)[:, 0] > 3).float().mean() > 0.5


def test_a_tight_total_on_random_cvrp_demands():
    """Random demands, a fleet of one more route than the demand needs: the env refuses a
    return only while a customer can be served and the vehicles left are fewer than the
    remaining demand needs (a lower bound: bin packing can still defeat it, so a few plans
    exceed the fleet), and nothing else; nearly every random plan then fits the fleet, far
    more than without it, and the checker reports exactly the plans that do not."""
    n, b = 15, 128
    td = MTVRPGenerator(n, variants=("CVRP",))(b, seed=1)
    need = torch.ceil(td["demand_linehaul"].sum(1) - 1e-4)
    fleet = with_fleet(td, None, need + 1)
    env = E.make("mtvrp", num_loc=n)
    refused = 0

    units = torch.round(td["demand_linehaul"].double() * td["capacity"][:, None])  # integers
    cap = td["capacity"].double()

    def inspect(state: TensorDict) -> None:
        nonlocal refused
        mask, free = state["action_mask"], free_mask(state)
        assert not (mask & ~free).any()  # one depot: the fleet only takes actions away
        diff = free & ~mask
        assert not diff[:, 1:].any()  # and only the return to the depot
        # refused exactly while a customer is allowed and the vehicles left are fewer than
        # the remaining demand needs (in whole routes, at least one)
        left = torch.where(state["visited"], 0.0, units).sum(1)
        routes_left = torch.ceil(left / cap).clamp_min((left > 0).double())
        spare = fleet["max_vehicles"].double() - state["depot_routes"][:, 0].double()
        at_customer = state["current_node"] > 0
        expected = at_customer & mask[:, 1:].any(1) & (spare < routes_left)
        assert torch.equal(diff[:, 0], expected)
        refused += int(expected.sum())

    acts, last = rollout(env, fleet, seed=0, on_state=inspect)
    assert refused > 50
    fits = last["depot_routes"][:, 0] <= need + 1
    assert fits.float().mean() > 0.95
    for ok, vs in zip(fits.tolist(), P.check(fleet, acts), strict=True):
        assert {v.kind for v in vs} == (set() if ok else {"vehicles"}), vs[:3]
    free_acts, _ = rollout(env, td, seed=0)
    assert (counted(free_acts, 1)[:, 0] <= need + 1).float().mean() < 0.8


def test_an_impossible_fleet_never_stalls_and_serves_everyone():
    """One vehicle for demand that needs several routes: the rollout still ends with every
    customer served (some action allowed at every step), every route goes on while a
    customer can be served, and the checker reports the excess (and nothing else)."""
    n, b = 15, 32
    td = MTVRPGenerator(n, variants=("CVRP", "VRPTW", "VRPB"))(b, seed=6)
    nobody = torch.zeros(td["demand_linehaul"].shape, dtype=torch.bool)
    td = td[mtvrp.routes_needed(td, nobody) > 1]
    assert td.batch_size[0] > 20
    fleet = with_fleet(td, None, torch.ones(td.batch_size[0]))
    env = E.make("mtvrp", num_loc=n)

    def keeps_going(state: TensorDict) -> None:
        mask = state["action_mask"]
        on_route = state["current_node"] > 0
        can_serve = mask[:, 1:].any(1)
        assert not mask[on_route & can_serve, 0].any()

    acts, last = rollout(env, fleet, seed=3, on_state=keeps_going)
    routes = counted(acts, 1)[:, 0]
    assert (routes > 1).all()
    torch.testing.assert_close(last["depot_routes"][:, 0], routes)
    for vs in P.check(fleet, acts):
        assert {v.kind for v in vs} == {"vehicles"}, vs[:3]


def test_single_depot_rows_of_an_md_batch_count_only_slot_0s_vehicles():
    """Unit demands, 3 vehicles at depot 0: with one depot slot every plan has 3 full routes;
    the same instances as CVRP rows of a 3-slot batch (slots 1, 2 copies of depot 0, never a
    route start) should too, whatever the copies' counts."""
    n, b = 12, 64
    env = E.make("mtvrp", num_loc=n)
    one = with_fleet(unit_demands(b, n), torch.full((b, 1), 3.0), None)
    _, last = rollout(env, one, seed=0)
    assert (last["depot_routes"] == 3).all()
    md = mtvrp.to_variant(unit_demands(b, n, num_depots=3), "CVRP")
    assert not md["has_multi_depot"].any() and (md["num_depots"] == 3).all()
    acts, last = rollout(env, with_fleet(md, torch.full((b, 3), 3.0), None), seed=0)
    assert (last["depot_routes"][:, 1:] == 0).all()
    assert (last["depot_routes"][:, 0] == 3).all()


def test_reset_refuses_malformed_fleets():
    td = MTVRPGenerator(6, variants=("MDVRP",), num_depots=2)(2, seed=0)
    env = E.make("mtvrp", num_loc=6)
    for key, value, match in (
        ("depot_vehicles", torch.ones(2, 3), "columns"),
        ("depot_vehicles", torch.tensor([[1.0, -1.0], [1.0, 1.0]]), "negative"),
        ("max_vehicles", torch.tensor([2.0, math.nan]), "NaN"),
    ):
        bad = td.clone()
        bad[key] = value
        with pytest.raises(ValueError, match=match):
            env.reset(bad)


# ----------------------------------------------------------------------------- Instance
def _md_instance(**fleet) -> Instance:
    """Two depots (0, 0) and (10, 0), four customers of demand 3, capacity 6."""
    coords = np.array([[0, 0], [10, 0], [1, 1], [2, 0], [9, 1], [8, 0]], dtype=float)
    return Instance.from_arrays(
        coords=coords, demand=np.array([0, 0, 3, 3, 3, 3]), capacity=6, num_depots=2,
        name="md", **fleet,
    )  # fmt: skip


def test_fleet_tensors_round_trip_through_instances():
    cases = (
        ({"vehicle_depots": [1, 0, 1]}, [[1.0, 2.0]], [3.0], [0, 1, 1], 3),
        ({"vehicle_depots": [1, 1]}, [[0.0, 2.0]], [2.0], [1, 1], 2),
        ({"num_vehicles": 4}, [[INF, INF]], [4.0], None, 4),
    )
    for fleet, per, total, depots, vehicles in cases:
        inst = _md_instance(**fleet)
        tensors = mtvrp.fleet_tensors(inst)
        assert (
            tensors["depot_vehicles"].tolist() == per and tensors["max_vehicles"].tolist() == total
        )
        td = P.from_instance(inst)
        assert td["depot_vehicles"].tolist() == per and td["max_vehicles"].tolist() == total
        back = P.to_instance(td)
        assert back.num_vehicles == vehicles
        if depots is None:
            assert back.vehicle_depots is None
        else:
            assert back.vehicle_depots.tolist() == depots
            assert back.vehicles_per_depot.tolist() == inst.vehicles_per_depot.tolist()
    inst = _md_instance()
    assert mtvrp.fleet_tensors(inst) == {} and not mtvrp.has_fleet(P.from_instance(inst))
    back = P.to_instance(P.from_instance(inst))
    assert back.num_vehicles is None and back.vehicle_depots is None
    # the env enforces the converted fleet: depot 0 has no vehicle, depot 1 two
    env = P.make_env(num_loc=4)
    td = P.from_instance(_md_instance(vehicle_depots=[1, 1])).expand(16).clone()
    acts, last = rollout(env, td, seed=0)
    assert (last["depot_routes"] == torch.tensor([0.0, 2.0])).all()
    for row in acts.tolist():
        routes, starts = P.tours_to_depot_routes(row, 2)
        assert E.Solution.from_routes(
            _md_instance(vehicle_depots=[1, 1]), routes, depots=starts
        ).feasible


def test_to_instance_refuses_a_fleet_an_instance_cannot_hold():
    td = P.from_instance(_md_instance(vehicle_depots=[0, 1, 1]))
    some = td.clone()
    some["depot_vehicles"] = torch.tensor([[2.0, INF]])  # per-depot counts on one depot only
    with pytest.raises(ValueError, match="no Instance form"):
        P.to_instance(some)
    below = td.clone()
    below["max_vehicles"] = torch.tensor([2.0])  # fewer in all than the depots' 3
    with pytest.raises(ValueError, match="no Instance form"):
        P.to_instance(below)
    above = td.clone()
    above["max_vehicles"] = torch.tensor([7.0])  # more in all: the depots' 3 bound it anyway
    assert P.to_instance(above).vehicle_depots.tolist() == [0, 1, 1]
    total_only = td.exclude("depot_vehicles")
    back = P.to_instance(total_only)
    assert back.num_vehicles == 3 and back.vehicle_depots is None


# ----------------------------------------------------------------------------- shared file
def test_pr11a_vehicles_per_depot_hold_until_the_fleet_is_used_up(shared_data):
    """PR11A (4 depots, 10 vehicles each, 40 in all): the fleet mask allows the best-known
    plan step by step; greedy and random rollouts never stall, ``depot_routes`` follows the
    plan, no depot starts an 11th route while a vehicle is left anywhere (the windows make
    these plans need more than 40 routes, so the excess comes only once all 40 are used),
    and the checker finds nothing but the fleet's excess."""
    path = shared_data / "mdvrptw" / "PR11A.vrp"
    inst = nco.load(path, edge_weight="EUC_2D", scale=1000)
    td = P.from_instance(inst)
    assert td["depot_vehicles"].tolist() == [[10.0] * 4] and td["max_vehicles"].tolist() == [40.0]
    env = P.make_env(num_loc=inst.num_customers)
    bks = E.load_solution(path.with_suffix(".sol"), inst)
    assert bks.route_depots is not None
    state, here = env.reset(td.clone()), 0
    for route, dep in zip(bks.routes, bks.route_depots, strict=True):
        for a in ([dep] if dep != here else []) + list(route) + [dep]:
            assert bool(state["action_mask"][0, a]), (route, a)
            state["action"] = torch.tensor([a])
            state = env._step(state)
        here = dep
    assert state["done"].all()
    used = Counter(d for r, d in zip(bks.routes, bks.route_depots, strict=True) if r)
    assert max(used.values()) <= 10
    assert state["depot_routes"][0].tolist() == [float(used[d]) for d in range(4)]

    for greedy, batch in ((True, td), (False, td.expand(3).clone())):
        seen: list[torch.Tensor] = []
        acts, last = rollout(
            env,
            batch,
            seed=2,
            greedy=greedy,
            on_state=lambda s, out=seen: out.append(s["depot_routes"]),
        )
        history = torch.stack([*seen, last["depot_routes"]], 1)  # before each action, and last
        for t in (50, 200, acts.shape[1]):
            torch.testing.assert_close(history[:, t], counted(acts[:, :t], 4))
        for b in range(acts.shape[0]):
            over = (history[b] > 10).any(1).nonzero()
            assert over.numel(), "the plan fits the fleet: expected it to need more routes"
            first = int(over[0])
            assert history[b, first - 1].tolist() == [10.0] * 4  # every vehicle used first
        for vs in P.check(batch, acts):
            assert {v.kind for v in vs} == {"vehicles"}, vs[:3]
