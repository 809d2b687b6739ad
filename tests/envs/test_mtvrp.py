"""MTVRP: variants, generator, specs, feasible rollouts of all 16 variants, checker and cost on
planted violations, masks against brute force, and an untrained POMO policy on a mixed batch."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs, step_mdp

import nco.envs as E
from nco.envs import mtvrp
from nco.envs.mtvrp import (
    TRAIN_VARIANTS,
    VARIANT_NAMES,
    VARIANTS,
    MTVRPGenerator,
    make_instances,
    to_variant,
)
from nco.policies import build_policy
from nco.policies.decoding import DecodeConfig
from tests.envs.helpers import enumerate_sequences, random_rollout, route_partitions

P = E.get_problem("mtvrp")


def kinds(td: TensorDict, tour: list[int]) -> list[str]:
    return sorted({v.kind for v in P.check(td, torch.tensor([tour]))[0]})


def full_instances(num_loc: int, batch: int, seed: int, **kw) -> TensorDict:
    """Instances with every attribute (OVRPBLTW), to derive any variant from."""
    return MTVRPGenerator(num_loc, variants=("OVRPBLTW",), **kw)(batch, seed=seed)


# ----------------------------------------------------------------------------- variants, registry
def test_variant_table_and_registry():
    core = {tuple(VARIANTS[n]) for n in VARIANT_NAMES}
    assert len(VARIANT_NAMES) == 16 and len(core) == 16
    assert {c[:4] for c in core} == set(itertools.product((False, True), repeat=4))
    assert all(c[4:] == (False, False) for c in core)
    # 48 in all: B may be mixed (M), and any of them multi-depot (MD)
    assert len(mtvrp.ALL_VARIANT_NAMES) == 48 == len(set(VARIANTS.values()))
    assert mtvrp.ALL_VARIANT_NAMES[:16] == VARIANT_NAMES
    assert all(v.backhaul for v in VARIANTS.values() if v.mixed_backhaul)
    assert VARIANTS["VRPMB"] == (False, True, False, False, True, False)
    assert VARIANTS["MDOVRPMBLTW"] == (True,) * 6 and VARIANTS["MDVRP"].multi_depot
    assert set(TRAIN_VARIANTS) <= set(VARIANT_NAMES)
    assert VARIANTS["OVRPBLTW"] == (True, True, True, True, False, False)
    assert VARIANTS["CVRP"] == (False,) * 6
    assert VARIANTS["VRPLTW"] == mtvrp.Variant(
        open_route=False, backhaul=False, distance_limit=True, time_windows=True
    )
    assert "mtvrp" in E.available() and P.name == "mtvrp" and P.has_depot
    assert E.make("mtvrp", num_loc=7).generator.num_loc == 7
    for bad in ("VRPX", "VRPMBB", "MDCVRP", "VRPM"):
        with pytest.raises(ValueError):
            MTVRPGenerator(5, variants=(bad,))
    with pytest.raises(ValueError):
        MTVRPGenerator(5, variants=("CVRP", "OVRP"), variant_probs=(1.0,))


def test_check_env_specs():
    check_env_specs(E.make("mtvrp", num_loc=10, seed=0))


# ----------------------------------------------------------------------------- generator
def test_generator_is_deterministic_and_variant_independent():
    g = MTVRPGenerator(12)
    a, b = g(64, seed=5), g(64, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a.keys())
    assert not torch.equal(a["locs"], g(64, seed=6)["locs"])
    # The data is drawn before the variant: same seed, same geometry for any variant set.
    c = MTVRPGenerator(12, variants=("VRPTW",))(64, seed=5)
    assert torch.equal(a["locs"], c["locs"])


def test_generator_respects_variant_probabilities():
    only = MTVRPGenerator(10, variants=("VRPTW",))(500, seed=0)
    assert set(mtvrp.variant_names(only)) == {"VRPTW"}
    g = MTVRPGenerator(10, variants=("CVRP", "VRPTW", "OVRP"), variant_probs=(0.0, 0.25, 0.75))
    counts = Counter(mtvrp.variant_names(g(4000, seed=1)))
    assert counts["CVRP"] == 0 and abs(counts["VRPTW"] / 4000 - 0.25) < 0.03
    mixed = Counter(mtvrp.variant_names(MTVRPGenerator(10)(1600, seed=2)))
    assert set(mixed) == set(VARIANT_NAMES) and min(mixed.values()) > 60
    train = Counter(mtvrp.variant_names(MTVRPGenerator(10, variants=TRAIN_VARIANTS)(600, seed=3)))
    assert set(train) == set(TRAIN_VARIANTS)


def test_generator_follows_routefinder():
    n = 50
    td = full_instances(n, 256, seed=0)
    lh, bh, cap = td["demand_linehaul"], td["demand_backhaul"], td["capacity"]
    assert torch.all(cap == 40.0)
    assert torch.all(lh[:, 0] == 0) and torch.all(bh[:, 0] == 0)
    assert torch.all((lh[:, 1:] > 0) ^ (bh[:, 1:] > 0))  # each customer is one or the other
    units = (lh + bh)[:, 1:] * 40.0
    assert (
        torch.allclose(units, units.round(), atol=1e-4)
        and units.min() >= 1 - 1e-4
        and units.max() <= 9 + 1e-4
    )
    assert abs((bh[:, 1:] > 0).float().mean().item() - 0.2) < 0.02
    d0 = (td["locs"][:, 1:] - td["locs"][:, :1]).norm(dim=-1)
    low = 2 * d0.max(1).values
    lim = td["distance_limit"]
    assert torch.all(lim >= low) and torch.all(lim <= torch.clamp(low + 1e-5, min=2.8))
    tw, st = td["time_windows"], td["service_time"]
    assert torch.all(tw[:, 0] == torch.tensor([0.0, 4.6]))
    assert st[:, 1:].min() >= 0.15 and st[:, 1:].max() <= 0.18
    assert torch.all(tw[:, 1:, 0] >= d0 - 1e-5) and torch.all(
        tw[:, 1:, 1] + st[:, 1:] + d0 <= 4.6 + 1e-4
    )
    assert td["open_route"].all() and td["has_backhaul"].all() and td["has_time_windows"].all()
    fixed = full_instances(10, 8, seed=0, distance_limit=3.0)
    assert torch.all(fixed["distance_limit"] == 3.0)


def test_switched_off_attributes_are_neutral():
    full = full_instances(10, 4, seed=1)
    cvrp_like = to_variant(full, "CVRP")
    assert mtvrp.variant_names(cvrp_like) == ["CVRP"] * 4
    assert not cvrp_like["open_route"].any() and torch.all(cvrp_like["demand_backhaul"] == 0)
    torch.testing.assert_close(
        cvrp_like["demand_linehaul"], full["demand_linehaul"] + full["demand_backhaul"]
    )
    assert torch.all(torch.isinf(cvrp_like["distance_limit"]))
    assert torch.all(cvrp_like["time_windows"][..., 0] == 0) and torch.all(
        torch.isinf(cvrp_like["time_windows"][..., 1])
    )
    assert torch.all(cvrp_like["service_time"] == 0)
    # Generated variants without an attribute have neutral data for it.
    td = MTVRPGenerator(10)(400, seed=4)
    assert torch.all(td["demand_backhaul"][~td["has_backhaul"]] == 0)
    assert torch.all(torch.isinf(td["distance_limit"][~td["has_distance_limit"]]))
    assert torch.all(torch.isinf(td["time_windows"][~td["has_time_windows"]][..., 1]))
    assert torch.all(td["service_time"][~td["has_time_windows"]] == 0)
    # Attributes a variant needs cannot be invented.
    with pytest.raises(ValueError):
        to_variant(cvrp_like, "VRPTW")
    assert mtvrp.variant_names(to_variant(cvrp_like, "OVRP")) == ["OVRP"] * 4


# ----------------------------------------------------------------------------- env rollouts
@pytest.mark.parametrize("variant", mtvrp.ALL_VARIANT_NAMES)
def test_random_rollouts_of_every_variant_are_feasible(variant):
    env = E.make("mtvrp", num_loc=20, variants=(variant,))
    data = env.generator(200, seed=11)
    assert set(mtvrp.variant_names(data)) == {variant}
    actions, ret = random_rollout(env, data)
    violations = P.check(data, actions)
    assert all(not v for v in violations), next(v for v in violations if v)[:3]
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("variant", "relaxed", "kind"),
    [
        ("VRPB", "CVRP", "backhaul_order"),
        ("VRPL", "CVRP", "distance_limit"),
        ("VRPTW", "CVRP", "time_window"),
        ("VRPBLTW", "VRPLTW", "backhaul_order"),
        ("VRPLTW", "VRPTW", "distance_limit"),
        ("VRPL", "OVRPL", "distance_limit"),
        ("VRPB", "VRPMB", "backhaul_order"),
        ("OVRPBTW", "OVRPMBTW", "backhaul_order"),
    ],
)
def test_masks_enforce_what_the_relaxed_variant_breaks(variant, relaxed, kind):
    """Random routes of the relaxed variant violate the attribute (so it binds and the checker
    sees it), while the env of the full variant never produces such routes. (The depot's
    closing time never binds on generated data: every window ends early enough to return, so
    ``depot_return`` is tested on hand-made instances.)"""
    data = to_variant(full_instances(20, 200, seed=2), variant)
    loose = to_variant(data, relaxed)
    env = E.make("mtvrp", num_loc=20)
    actions, _ = random_rollout(env, loose)
    assert all(not v for v in P.check(loose, actions))
    found = Counter(v.kind for vs in P.check(data, actions) for v in vs)
    assert found[kind] > 0, found
    actions, _ = random_rollout(env, data)
    assert all(not v for v in P.check(data, actions))


# ----------------------------------------------------------------------------- planted violations
def _hand(**kw) -> TensorDict:
    """Depot (0, 0); 1 (0.3, 0) and 2 (0.3, 0.4) linehauls 5 and 6; 3 (0, 0.4) and 4 (0, 0.2)
    backhauls 7 and 3; capacity 10."""
    locs = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.3, 0.4], [0.0, 0.4], [0.0, 0.2]]])
    return make_instances(
        locs,
        torch.tensor([[0.0, 5.0, 6.0, 0.0, 0.0]]),
        demand_backhaul=torch.tensor([[0.0, 0.0, 0.0, 7.0, 3.0]]),
        capacity=10.0,
        **kw,
    )


def _heavy() -> TensorDict:
    td = _hand()
    td["demand_backhaul"][0, 4] = 0.5
    return td


def test_checker_catches_capacity_and_backhaul_order():
    td = _hand()
    assert mtvrp.variant_names(td) == ["VRPB"]
    assert kinds(td, [1, 0, 2, 3, 0, 4, 0]) == []
    assert kinds(td, [1, 2, 0, 3, 0, 4, 0]) == ["capacity"]  # linehaul 11 > 10
    assert kinds(td, [1, 0, 2, 0, 3, 4, 0]) == []  # backhaul 7 + 3 fits exactly
    assert kinds(_heavy(), [1, 0, 2, 0, 3, 4, 0]) == ["capacity"]  # backhaul 7 + 5 > 10
    assert kinds(td, [3, 2, 0, 1, 0, 4, 0]) == ["backhaul_order"]  # linehaul 2 after backhaul 3
    assert kinds(td, [1, 0, 2, 3, 0]) == ["missing"]
    assert kinds(td, [1, 0, 2, 3, 0, 4, 1, 0]) == ["backhaul_order", "duplicate"]


def test_checker_catches_distance_limit_unless_the_route_is_open():
    closed = _hand(distance_limit=1.0)
    tour = [2, 3, 0, 1, 0, 4, 0]  # route [2, 3]: 0.5 + 0.3 + 0.4 = 1.2 closed, 0.8 open
    assert kinds(closed, tour) == ["distance_limit"]
    assert kinds(_hand(distance_limit=1.0, open_route=True), tour) == []
    assert kinds(closed, [2, 0, 3, 0, 1, 0, 4, 0]) == []  # 2 and back is exactly 1.0


def test_checker_catches_time_windows_and_depot_return():
    tw = torch.tensor([[[0.0, 1.2], [0.0, 1.0], [0.0, 0.6], [0.0, 1.0], [0.0, 1.0]]])
    st = torch.full((1, 5), 0.1)
    st[0, 0] = 0.0
    closed = _hand(time_windows=tw, service_time=st)
    assert kinds(closed, [2, 0, 1, 0, 3, 0, 4, 0]) == []
    # route [1, 2]: 2 reached at 0.8 > 0.6 (and back at 1.4 > 1.2; linehaul 11 > 10)
    assert kinds(closed, [1, 2, 0, 3, 0, 4, 0]) == ["capacity", "depot_return", "time_window"]
    # route [2, 3]: 2 at 0.5, 3 at 0.9, back at 1.4 > 1.2
    assert kinds(closed, [2, 3, 0, 1, 0, 4, 0]) == ["depot_return"]
    opened = _hand(time_windows=tw, service_time=st, open_route=True)
    assert mtvrp.variant_names(opened) == ["OVRPBTW"]
    assert kinds(opened, [2, 3, 0, 1, 0, 4, 0]) == []


def test_cost_of_open_routes_skips_the_return_leg():
    tour = torch.tensor([[2, 3, 0, 1, 0, 4, 0, 0, 0]])  # trailing depot padding is free
    # closed: (0.5 + 0.3 + 0.4) + (0.3 + 0.3) + (0.2 + 0.2) = 2.2; open: 0.8 + 0.3 + 0.2 = 1.3
    assert P.cost(_hand(), tour).item() == pytest.approx(2.2, abs=1e-6)
    assert P.cost(_hand(open_route=True), tour).item() == pytest.approx(1.3, abs=1e-6)
    both = torch.cat([_hand(), _hand(open_route=True)])
    torch.testing.assert_close(P.cost(both, tour.expand(2, -1)), torch.tensor([2.2, 1.3]))
    # The env's rewards agree, the free return leg included.
    env = E.make("mtvrp", num_loc=4)
    state, total = env.reset(both), torch.zeros(2)
    for a in tour[0]:
        state["action"] = a.expand(2)
        state = env.step(state)
        total += state["next", "reward"].squeeze(-1)
        state = step_mdp(state)
    assert state["done"].all()
    torch.testing.assert_close(-total, torch.tensor([2.2, 1.3]))


def test_env_masks_each_attribute():
    env = E.make("mtvrp", num_loc=4)

    def after(td, *actions):
        state = env.reset(td)
        for a in actions:
            state["action"] = torch.tensor([a])
            state = env.step(state)["next"]
        return state["action_mask"][0].tolist()

    # backhauls: after backhaul 3 only backhaul 4 (and the depot) remain; both capacities
    assert after(_hand(), 3) == [True, False, False, False, True]
    assert after(_hand(), 1) == [True, False, False, True, True]  # 2 would carry 11 > 10
    assert after(_heavy(), 1, 3) == [True, False, False, False, False]  # 4: backhaul 12 > 10
    # distance limit 1.0: after 2 (0.5), 3 needs 0.3 + 0.4 back; open routes need no way back
    assert after(_hand(distance_limit=1.0), 2) == [True, False, False, False, False]
    assert after(_hand(distance_limit=1.0, open_route=True), 2) == [True, False, False, True, True]
    # time windows: depot closes at 0.75: 2 (back at 1.1) and 3 (0.9) only when open
    tw = torch.tensor([[[0.0, 0.75], [0.0, 9.0], [0.0, 9.0], [0.0, 9.0], [0.0, 9.0]]])
    st = torch.tensor([[0.0, 0.1, 0.1, 0.1, 0.1]])
    assert after(_hand(time_windows=tw, service_time=st)) == [False, True, False, False, True]
    assert after(_hand(time_windows=tw, service_time=st, open_route=True)) == [
        False,
        True,
        True,
        True,
        True,
    ]


# ----------------------------------------------------------------------------- masks vs brute force
def _brute_force(td: TensorDict, n: int) -> float:
    f = lambda k: td[k][0].double().numpy()  # noqa: E731
    locs = f("locs")
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    lim, opened = float(td["distance_limit"][0]), bool(td["open_route"][0])
    best = np.inf
    for routes in route_partitions(n):
        if mtvrp.check_core(
            dist,
            f("demand_linehaul"),
            f("demand_backhaul"),
            1.0,
            f("time_windows"),
            f("service_time"),
            lim,
            opened,
            routes,
        ):
            continue
        length = sum(
            dist[0, r[0]]
            + sum(dist[a, b] for a, b in zip(r, r[1:]))
            + (0.0 if opened else dist[r[-1], 0])
            for r in routes
        )
        best = min(best, length)
    return best


@pytest.mark.parametrize(
    ("variant", "seed"), [("VRPBLTW", 0), ("OVRPBLTW", 1), ("VRPBL", 2), ("OVRPB", 3)]
)
def test_masks_reach_brute_force_optimum(variant, seed):
    n = 6
    data = MTVRPGenerator(n, variants=(variant,), capacity=15, backhaul_ratio=0.4)(1, seed=seed)
    seqs, ret = enumerate_sequences(E.make("mtvrp", num_loc=n), data, 2 * n + 1)
    rows = data.expand(len(seqs))
    assert all(not v for v in P.check(rows, seqs))
    torch.testing.assert_close(ret, -P.cost(rows, seqs).double(), rtol=1e-5, atol=1e-5)
    assert (-ret).min().item() == pytest.approx(_brute_force(data, n), rel=1e-5)


# ----------------------------------------------------------------------------- policy interface
def test_features_shapes():
    td = MTVRPGenerator(5)(3, seed=0)
    state = E.make("mtvrp", num_loc=5).reset(td)
    feats = P.node_features(td)
    assert feats.shape == (3, 6, len(mtvrp.NODE_FEATURES)) and torch.isfinite(feats).all()
    assert torch.all(feats[:, 1:, 7:14] == 0) and torch.all(
        feats[..., -1] == torch.tensor([1.0, 0, 0, 0, 0, 0])
    )
    sf = P.state_features(state)
    assert sf.shape == (3, 7) and torch.isfinite(sf).all() and sf.min() >= 0 and sf.max() <= 1
    torch.testing.assert_close(sf[:, 5:], td["locs"][:, 0])  # the route's depot
    md = MTVRPGenerator(5, variants=("MDVRP",), num_depots=3)(2, seed=0)
    assert torch.all(P.node_features(md)[..., -1] == torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0]))


def _all_variants(num_loc: int, per_variant: int, seed: int) -> TensorDict:
    full = full_instances(num_loc, per_variant, seed=seed)
    return torch.cat([to_variant(full, v) for v in VARIANT_NAMES])


def test_untrained_pomo_rolls_out_a_mixed_batch_feasibly():
    torch.manual_seed(0)
    n = 10
    td = _all_variants(n, 2, seed=5)
    assert Counter(mtvrp.variant_names(td)) == dict.fromkeys(VARIANT_NAMES, 2)
    env = E.make("mtvrp", num_loc=n)
    policy = build_policy("pomo", P).eval()
    with torch.no_grad():
        out = policy(td, env, DecodeConfig(strategy="multistart_greedy"))
    b, m, t = out.actions.shape
    assert (b, m) == (32, n)
    rows = td[torch.arange(b).repeat_interleave(m)]
    flat = out.actions.reshape(b * m, t)
    violations = P.check(rows, flat)
    assert all(not v for v in violations), next(v for v in violations if v)[:3]
    cost = P.cost(rows, flat)
    torch.testing.assert_close(-out.reward.reshape(-1), cost)
    # the env's own step rewards add up to the same cost
    state, total = env.reset(rows.clone()), torch.zeros(b * m)
    for step in range(t):
        state["action"] = flat[:, step]
        state = env.step(state)
        total += state["next", "reward"].squeeze(-1)
        state = step_mdp(state)
    assert state["done"].all()
    torch.testing.assert_close(-total, cost, rtol=1e-5, atol=1e-5)


def _first_logits(policy, td: TensorDict) -> torch.Tensor:
    env = E.make("mtvrp", num_loc=td["locs"].shape[1] - 1)
    emb, _ = policy.encoder(P.node_features(td))
    state = env.reset(td)
    b = td.batch_size[0]
    logits, _ = policy.decoder(
        policy.decoder.precompute(emb),
        state["current_node"].view(b, 1),
        None,
        P.state_features(state).view(b, 1, -1),
        state["action_mask"].view(b, 1, -1),
    )
    return logits[:, 0]


def test_policy_output_depends_on_every_attribute():
    torch.manual_seed(1)
    policy = build_policy("pomo", P).eval()
    td = _all_variants(8, 1, seed=7)  # the same instance as each of the 16 variants
    with torch.no_grad():
        emb, _ = policy.encoder(P.node_features(td))
        logits = _first_logits(policy, td)
    for i, j in itertools.combinations(range(16), 2):
        assert (emb[i] - emb[j]).abs().max() > 1e-4, (VARIANT_NAMES[i], VARIANT_NAMES[j])
        assert (logits[i] - logits[j]).abs().max() > 1e-5, (VARIANT_NAMES[i], VARIANT_NAMES[j])
    # flipping a flag alone (same data) changes the output too: no flag is ignored
    base = td[:1]
    with torch.no_grad():
        ref = _first_logits(policy, base)
        for key in (
            "open_route",
            "has_backhaul",
            "has_distance_limit",
            "has_time_windows",
            "has_mixed_backhaul",
            "has_multi_depot",
        ):
            flipped = base.clone()
            flipped[key] = ~flipped[key]
            assert (_first_logits(policy, flipped) - ref).abs().max() > 1e-5, key


# ----------------------------------------------------------------------------- M and MD
def test_mixed_backhauls_keep_the_load_on_board_within_capacity():
    """M: the vehicle leaves with all the route's linehauls; any order, but the load on board
    (linehauls not yet dropped + backhauls picked up) never exceeds the capacity."""
    td = _hand(mixed_backhaul=True)
    assert mtvrp.variant_names(td) == ["VRPMB"]
    env = E.make("mtvrp", num_loc=4)

    def after(data, *actions):
        state = env.reset(data)
        for a in actions:
            state["action"] = torch.tensor([a])
            state = env.step(state)["next"]
        return state["action_mask"][0].tolist()

    # after backhaul 4 (3 on board): linehaul 1 (5 at the start, 8 after 4) and 2 both fit
    assert after(td, 4) == [True, True, True, True, False]
    assert after(_hand(), 4) == [True, False, False, True, False]  # classic B: no linehaul
    # after 4 then 1: the start load 5 + 3 = 8 peak leaves no room for linehaul 2 (6)
    assert after(td, 4, 1) == [True, False, False, True, False]
    # after backhaul 3 (7 on board) no linehaul fits: it would ride along from the depot
    assert after(td, 3) == [True, False, False, False, True]
    assert kinds(td, [4, 1, 3, 0, 2, 0]) == []
    assert kinds(_hand(), [4, 1, 3, 0, 2, 0]) == ["backhaul_order"]
    assert kinds(td, [3, 1, 0, 2, 4, 0]) == ["capacity"]  # 5 + 7 = 12 on board after 3
    assert kinds(td, [2, 4, 1, 0, 3, 0]) == ["capacity"]  # starts with 11 linehauls
    feasible = E.make("mtvrp", num_loc=4)
    tours, ret = random_rollout(feasible, td.expand(64).clone(), seed=3)
    assert all(not v for v in P.check(td.expand(64), tours))


def _two_depots(**kw) -> TensorDict:
    """Depots 0 (0, 0) and 1 (1, 1); customers 2 (0.9, 1) and 3 (1, 0.9) near depot 1, 4
    (0.1, 0) near depot 0; demands 4, 4, 4, capacity 10."""
    locs = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.9, 1.0], [1.0, 0.9], [0.1, 0.0]]])
    return make_instances(
        locs, torch.tensor([[0.0, 0.0, 4.0, 4.0, 4.0]]), capacity=10.0, num_depots=2, **kw
    )


def test_multi_depot_routes_return_to_their_own_depot():
    td = _two_depots()
    assert mtvrp.variant_names(td) == ["MDVRP"]
    env = E.make("mtvrp", num_loc=4)
    state = env.reset(td)
    # at the start: any customer from depot 0, or a switch to depot 1 (not depot 0 itself)
    assert state["action_mask"][0].tolist() == [False, True, True, True, True]
    trace = []
    for a in (1, 2, 3, 1, 0, 4, 0):
        state["action"] = torch.tensor([a])
        state = env.step(state)["next"]
        trace.append((state["action_mask"][0].tolist(), float(state["reward"])))
    # a switch costs nothing and is not repeated before a route; a route returns to its depot
    assert trace[0] == ([False, False, True, True, True], 0.0)
    assert trace[1][0] == [False, True, False, True, True]  # from 2: only depot 1 of the depots
    assert trace[4][0] == [False, False, False, False, True]  # switched back to depot 0
    assert state["done"].all()
    tour = torch.tensor([[1, 2, 3, 1, 0, 4, 0]])
    want = 0.1 + 0.1 * np.sqrt(2) + 0.1 + 0.1 + 0.1  # 1-2-3-1, switch, 0-4-0
    assert float(P.cost(td, tour)) == pytest.approx(want, rel=1e-5)
    assert -sum(r for _, r in trace) == pytest.approx(want, rel=1e-5)
    assert kinds(td, [1, 2, 3, 1, 0, 4, 0]) == []
    assert kinds(td, [1, 2, 3, 0, 4, 0]) == ["depot_mismatch"]  # from depot 1 back to 0
    # from depot 0 the same customers cost the long way round
    assert float(P.cost(td, torch.tensor([[2, 3, 0, 4, 0]]))) > want + 2.0
    # open routes: the return leg is free, but the route still ends at its own depot
    opened = _two_depots(open_route=True)
    assert float(P.cost(opened, tour)) == pytest.approx(0.1 + 0.1 * np.sqrt(2) + 0.1, rel=1e-5)
    assert kinds(opened, [1, 2, 3, 0, 4, 0]) == ["depot_mismatch"]


def test_multi_depot_time_windows_close_at_the_route_depot():
    tw = torch.tensor([[[0.0, 9.0], [0.0, 0.5], [0.0, 9.0], [0.0, 9.0], [0.0, 9.0]]])
    td = _two_depots(time_windows=tw, service_time=torch.zeros(1, 5))
    env = E.make("mtvrp", num_loc=4)
    state = env.reset(td)
    state["action"] = torch.tensor([1])
    state = env.step(state)["next"]
    # from depot 1 (closing at 0.5): customer 4 is 1.35 away, no way back in time
    assert state["action_mask"][0].tolist() == [False, False, True, True, False]
    assert kinds(td, [1, 4, 1, 0, 2, 3, 0]) == ["depot_return"]


def test_switches_go_only_to_depots_that_can_serve_so_no_policy_loops():
    # depot 1 closes at 0.05: no customer can be served from it, so it is never a switch target
    tw = torch.tensor([[[0.0, 9.0], [0.0, 0.05], [0.0, 9.0], [0.0, 9.0], [0.0, 9.0]]])
    td = _two_depots(time_windows=tw, service_time=torch.zeros(1, 5))
    env = E.make("mtvrp", num_loc=4)
    state = env.reset(td)
    assert state["action_mask"][0].tolist() == [False, False, True, True, True]
    # three depots where customer 5 is served only from depot 2: a policy that always prefers
    # the lowest allowed depot (it looped 1 <-> 0 before) must reach customer 5 within 3n steps
    locs = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.1, 0.0], [0.9, 1.0], [0.0, 0.98]]])
    dem = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    tw = torch.tensor([[[0, 9], [0, 9], [0, 9], [0, 9], [0, 9], [0, 0.05]]], dtype=torch.float32)
    td = make_instances(locs, dem, capacity=3.0, num_depots=3, time_windows=tw,
                        service_time=torch.zeros(1, 6))  # fmt: skip
    env = E.make("mtvrp", num_loc=5)
    state = env.reset(td)
    seq = []
    for _ in range(3 * 6 + 2):
        if state["done"].all():
            break
        mask = state["action_mask"][0]
        cust = mask.clone()
        cust[:3] = False
        a = int(cust.nonzero()[0]) if cust.any() else int(mask.nonzero()[0])
        seq.append(a)
        state["action"] = torch.tensor([a])
        state = env.step(state)["next"]
    assert state["done"].all(), seq
    assert kinds(td, seq) == []
    assert 2 in seq and seq[seq.index(5) - 1] == 2  # customer 5 reached from depot 2


def test_non_md_instances_in_an_md_batch_have_one_depot_in_effect():
    g = MTVRPGenerator(10, variants=("CVRP", "MDVRP"), num_depots=3)
    td = g(200, seed=0)
    plain = td["variant"] == mtvrp.variant_index("CVRP")
    assert td["locs"].shape[1] == 13 and plain.any() and (~plain).any()
    assert torch.all(td["locs"][plain][:, 1:3] == td["locs"][plain][:, :1])
    env = E.make("mtvrp", generator=g)
    state = env.reset(td)
    assert not state["action_mask"][plain][:, :3].any()  # no switches for one depot
    tours, _ = random_rollout(env, td, seed=1)
    assert all(not v for v in P.check(td, tours))
    assert not (tours[plain] == 1).any() and not (tours[plain] == 2).any()


def test_untrained_pomo_decodes_all_48_variants_feasibly():
    torch.manual_seed(0)
    n = 8
    full = MTVRPGenerator(n, variants=("MDOVRPBLTW",), num_depots=2)(1, seed=9)
    td = torch.cat([to_variant(full, v) for v in mtvrp.ALL_VARIANT_NAMES])
    env = E.make("mtvrp", num_loc=n)
    policy = build_policy("pomo", P).eval()
    with torch.no_grad():
        out = policy(td, env, DecodeConfig(strategy="multistart_greedy"))
    b, m, t = out.actions.shape
    assert (b, m) == (48, n)
    rows = td[torch.arange(b).repeat_interleave(m)]
    flat = out.actions.reshape(b * m, t)
    violations = P.check(rows, flat)
    assert all(not v for v in violations), next(v for v in violations if v)[:3]
    torch.testing.assert_close(-out.reward.reshape(-1), P.cost(rows, flat))


# ----------------------------------------------------------------------------- duration limits
def _duration_instances(n: int, b: int, seed: int, open_route: bool = False) -> TensorDict:
    """RouteFinder windows (much waiting) with a duration limit that binds: between the
    longest customer alone (2 d0 + service) and 1.6 times it."""
    base = MTVRPGenerator(n, variants=("VRPTW",))(b, seed=seed)
    cap = base["capacity"][:, None].float()
    d0 = (base["locs"][:, 1:] - base["locs"][:, :1]).norm(dim=-1)
    alone = (2 * d0 + base["service_time"][:, 1:]).max(1).values
    g = torch.Generator().manual_seed(seed)
    limit = alone * (1.0 + 0.6 * torch.rand(b, generator=g)) + 1e-4
    return make_instances(
        base["locs"],
        base["demand_linehaul"] * cap,
        capacity=base["capacity"],
        time_windows=base["time_windows"],
        service_time=base["service_time"],
        max_duration=limit,
        open_route=open_route,
    )


@pytest.mark.parametrize("open_route", [False, True])
def test_duration_mask_is_the_checkers_least_duration(open_route):
    """Along random rollouts, a customer the other constraints allow is allowed exactly when
    the checker's route_duration of the route extended by it (and closed, unless open) is
    within the limit; the state's least duration so far is route_duration of the route."""
    n, b = 10, 24
    td = _duration_instances(n, b, seed=3, open_route=open_route)
    free = td.exclude("duration_limit")
    env = E.make("mtvrp", num_loc=n)
    state = env.reset(td.clone())
    g = torch.Generator().manual_seed(0)
    lim = td["duration_limit"].double().numpy()
    routes: list[list[int]] = [[] for _ in range(b)]
    checked = refused = 0
    while not state["done"].all():
        relaxed = mtvrp.mtvrp_mask(
            free,
            state["used_capacity_linehaul"],
            state["used_capacity_backhaul"],
            state["visited"],
            state["current_node"],
            state["current_time"],
            state["current_route_length"],
            state["peak_load"],
            state["route_depot"],
            state["depot_switched"],
        )
        mask = state["action_mask"]
        assert not (mask & ~relaxed).any()
        for i in range(b):
            dist, tw = E.common.numpy_distance(td, i), td["time_windows"][i].double().numpy()
            st = td["service_time"][i].double().numpy()
            if routes[i]:
                so_far = mtvrp.route_duration(dist, tw, st, 0, routes[i], True)
                opening = float(state["time_windows"][i, 0, 0])
                shift = min(float(state["route_wait"][i]), float(state["route_slack"][i]))
                least = float(state["current_time"][i]) - opening - max(shift, 0.0)
                assert least == pytest.approx(so_far, abs=1e-5)
            for j in range(1, n + 1):
                if not relaxed[i, j]:
                    continue
                dur = mtvrp.route_duration(dist, tw, st, 0, [*routes[i], j], open_route)
                if abs(dur - lim[i]) < 1e-4:
                    continue  # float32 against float64 at the boundary
                assert bool(mask[i, j]) == (dur <= lim[i]), (i, routes[i], j, dur, lim[i])
                checked += 1
                refused += int(not mask[i, j])
        action = torch.multinomial(mask.float(), 1, generator=g).squeeze(-1)
        for i, a in enumerate(action.tolist()):
            routes[i] = [] if a == 0 else [*routes[i], a]
        state["action"] = action
        state = env._step(state)
    assert checked > 500 and refused > 20  # the limit binds


def test_rollouts_with_a_duration_limit_pass_the_instance_checker():
    env = E.make("mtvrp", num_loc=10)
    for open_route in (False, True):
        td = _duration_instances(10, 16, seed=7, open_route=open_route)
        actions, _ = random_rollout(env, td, seed=4)
        assert all(not v for v in P.check(td, actions))
        for i in range(td.batch_size[0]):
            inst = P.to_instance(td[i : i + 1])
            assert inst.max_duration is not None and inst.max_distance is None
            sol = E.Solution.from_routes(inst, P.tours_to_routes(actions[i].tolist()))
            assert sol.feasible, sol.violations[:3]
    # the tensor checker measures durations too: one route with every customer is too long
    tour = torch.arange(1, 11)[None]
    assert "duration" in kinds(td[:1], tour.tolist()[0])


def test_an_infinite_duration_limit_changes_nothing():
    """The shipped checkpoints see the same masks and features on the variants they solve:
    without a duration limit (absent, or +inf) nothing the policy reads changes."""
    td = MTVRPGenerator(10, variants=mtvrp.ALL_VARIANT_NAMES)(64, seed=2)
    inf = td.clone()
    inf["duration_limit"] = torch.full((64,), float("inf"))
    env = E.make("mtvrp", num_loc=10)
    a, b = env.reset(td.clone()), env.reset(inf)
    torch.testing.assert_close(P.node_features(a), P.node_features(b), rtol=0, atol=0)
    g = torch.Generator().manual_seed(1)
    while not a["done"].all():
        assert torch.equal(a["action_mask"], b["action_mask"])
        torch.testing.assert_close(P.state_features(a), P.state_features(b), rtol=0, atol=0)
        act = torch.multinomial(a["action_mask"].float(), 1, generator=g).squeeze(-1)
        a["action"], b["action"] = act, act.clone()
        a, b = env._step(a), env._step(b)


def test_the_network_sees_the_duration_limit():
    """The L feature holds the duration limit; the remaining-route state feature is the tighter
    of the length and duration budgets."""
    td = MTVRPGenerator(12, distribution="mdvrptw", num_depots=4)(8, seed=0)
    col = mtvrp.NODE_FEATURES.index("distance_limit")
    feats = P.node_features(td)
    torch.testing.assert_close(feats[:, 0, col], td["duration_limit"])
    assert (feats[:, 4:, col] == 0).all()  # global features in the depot rows only
    env = E.make("mtvrp", num_loc=12)
    state = env.reset(td.clone())
    assert (P.state_features(state)[:, 3] == 1).all()
    customers = state["action_mask"] & ~mtvrp.is_depot_node(state)
    assert customers.any(1).all()  # every customer can be served from depot 0
    state["action"] = customers.float().argmax(1)
    state = env._step(state)
    remaining = P.state_features(state)[:, 3]
    assert (remaining < 1).all()
    by_length = 1 - state["current_route_length"] / td["distance_limit"]
    assert (remaining <= by_length + 1e-6).all()


def test_untrained_pomo_decodes_mdvrptw_like_instances_feasibly():
    torch.manual_seed(0)
    n = 10
    td = MTVRPGenerator(n, distribution="mdvrptw", variants=mtvrp.ALL_VARIANT_NAMES, num_depots=3)(16, seed=1)
    env = E.make("mtvrp", num_loc=n)
    policy = build_policy("pomo", P).eval()
    with torch.no_grad():
        out = policy(td, env, DecodeConfig(strategy="multistart_greedy"))
    b, m, t = out.actions.shape
    rows = td[torch.arange(b).repeat_interleave(m)]
    flat = out.actions.reshape(b * m, t)
    violations = P.check(rows, flat)
    assert all(not v for v in violations), next(v for v in violations if v)[:3]
