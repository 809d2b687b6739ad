"""CVRPTW: specs, generator, feasible random rollouts, reward = -cost, checker, exhaustive masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import nco.envs as E
from nco.envs import cvrptw
from tests.envs.helpers import enumerate_sequences, random_rollout, route_partitions, routes_length

P = E.get_problem("cvrptw")


def test_check_env_specs():
    check_env_specs(E.make("cvrptw", num_loc=10, seed=0))


@pytest.mark.parametrize("distribution", ["uniform", "clustered"])
def test_random_rollouts_feasible_and_reward_is_minus_cost(distribution):
    env = E.make("cvrptw", num_loc=20, distribution=distribution)
    data = env.generator(1000, seed=11)
    actions, ret = random_rollout(env, data)
    assert all(not v for v in P.check(data, actions))
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)


def test_generator_follows_routefinder():
    td = P.generator(num_loc=50)(256, seed=0)
    tw, st, locs = td["time_windows"], td["service_time"], td["locs"]
    assert torch.all(tw[:, 0] == torch.tensor([0.0, 4.6]))
    assert torch.all(st[:, 0] == 0) and st[:, 1:].min() >= 0.15 and st[:, 1:].max() <= 0.18
    length = tw[:, 1:, 1] - tw[:, 1:, 0]
    assert length.min() >= 0.18 - 1e-5 and length.max() <= 0.2 + 1e-5
    d0 = (locs[:, 1:] - locs[:, :1]).norm(dim=-1)
    # Reachable from the depot, and serving at the latest start still returns by the horizon.
    assert torch.all(tw[:, 1:, 0] >= d0 - 1e-5)
    assert torch.all(tw[:, 1:, 1] + st[:, 1:] + d0 <= 4.6 + 1e-4)


def _hand_instance() -> TensorDict:
    locs = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.3, 0.4]]])
    return TensorDict(
        {
            "locs": locs,
            "demand": torch.tensor([[0.0, 0.5, 0.5]]),
            "capacity": torch.tensor([2.0], dtype=torch.float64),
            "time_windows": torch.tensor([[[0.0, 3.0], [0.0, 0.5], [0.0, 1.0]]]),
            "service_time": torch.tensor([[0.0, 0.1, 0.1]]),
        },
        batch_size=[1],
    )


def test_checker_catches_late_arrival_and_late_return():
    td = _hand_instance()
    kinds = lambda t: sorted({v.kind for v in P.check(td, torch.tensor([t]))[0]})  # noqa: E731
    assert kinds([1, 2, 0]) == []  # 1 at 0.3, leave 0.4, 2 at 0.8 <= 1.0, back 1.4
    assert kinds([2, 1, 0]) == ["time_window"]  # 2 at 0.5, leave 0.6, 1 at 1.0 > 0.5
    assert kinds([1, 0]) == ["missing"]
    tight = td.clone()
    tight["time_windows"][0, 0, 1] = 1.2  # depot closes before the route can return (1.4)
    assert sorted({v.kind for v in P.check(tight, torch.tensor([[1, 2, 0]]))[0]}) == ["depot_return"]
    # Cost by hand: 0.3 + 0.4 + 0.5.
    assert P.cost(td, torch.tensor([[1, 2, 0]])).item() == pytest.approx(1.2, abs=1e-6)


def test_env_masks_late_customers_and_unreturnable_ones():
    td = _hand_instance()
    env = E.make("cvrptw", num_loc=2)
    state = env.reset(td)
    state["action"] = torch.tensor([2])
    state = env.step(state)["next"]
    # From node 2 at time 0.6, node 1 would be reached at 1.0 > 0.5: only the depot is allowed.
    assert state["action_mask"].tolist() == [[True, False, False]]
    tight = td.clone()
    tight["time_windows"][0, 0, 1] = 0.75  # serving 2 (start 0.5, leave 0.6) cannot return by 0.75
    state = env.reset(tight)
    assert state["action_mask"].tolist() == [[False, True, False]]


def _brute_force(dist, demand, tw, st) -> float:
    ok = (r for r in route_partitions(len(demand) - 1) if not cvrptw.check_core(dist, demand, 1.0, tw, st, r))
    return min(routes_length(dist, r) for r in ok)


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_reach_brute_force_optimum(seed):
    n = 6
    data = P.generator(num_loc=n, capacity=15)(1, seed=seed)
    seqs, ret = enumerate_sequences(E.make("cvrptw", num_loc=n), data, 2 * n + 1)
    assert all(not v for v in P.check(data.expand(len(seqs)), seqs))
    torch.testing.assert_close(ret, -P.cost(data.expand(len(seqs)), seqs).double(), rtol=1e-5, atol=1e-5)
    f = lambda k: data[k][0].double().numpy()  # noqa: E731
    locs = f("locs")
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    opt = _brute_force(dist, f("demand"), f("time_windows"), f("service_time"))
    assert (-ret).min().item() == pytest.approx(opt, rel=1e-5)


def test_solomon_instance_through_env(instances_dir):
    inst = E.load(instances_dir / "C101.txt")
    td = P.from_instance(inst)
    env = E.make("cvrptw", num_loc=inst.num_customers)
    actions, _ = random_rollout(env, td.expand(8).clone())
    for seq in actions:
        sol = E.Solution.from_routes(inst, P.tours_to_routes(seq.tolist()))
        # Truncated Solomon distances never exceed the Euclidean ones the env used, so windows
        # hold. The env's fleet is unlimited; the file's 25 vehicles are the checker's job, and
        # random routes use more, which must be reported rather than hidden.
        kinds = {v.kind for v in sol.violations}
        assert kinds <= {"vehicles"}, sol.violations[:3]
        assert (len(sol.routes) > 25) == ("vehicles" in kinds)


def test_features():
    td = E.make("cvrptw", num_loc=5).reset(P.generator(num_loc=5)(2, seed=0))
    assert P.node_features(td).shape == (2, 6, 7)
    assert P.state_features(td).shape == (2, 2)
