"""CVRP: specs, generator, feasible random rollouts, reward = -cost, checker, exhaustive masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import nco.envs as E
from nco.envs import cvrp
from nco.envs.common import standard_capacity
from tests.envs.helpers import enumerate_sequences, random_rollout, route_partitions, routes_length

P = E.get_problem("cvrp")


def test_check_env_specs():
    check_env_specs(E.make("cvrp", num_loc=12, seed=0))


@pytest.mark.parametrize("distribution", ["uniform", "clustered", "mixed"])
def test_random_rollouts_feasible_and_reward_is_minus_cost(distribution):
    env = E.make("cvrp", num_loc=20, distribution=distribution)
    data = env.generator(1000, seed=7)
    actions, ret = random_rollout(env, data)
    assert all(not v for v in P.check(data, actions))
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)


def test_generator_standard_capacities_and_demands():
    for n, cap in [(10, 20), (20, 30), (50, 40), (100, 50), (200, 80)]:
        assert standard_capacity(n) == cap
    assert standard_capacity(500) == 170 and standard_capacity(1000) == 320
    assert standard_capacity(75) == 45  # linear interpolation between 50->40 and 100->50
    td = P.generator(num_loc=50)(64, seed=3)
    dem = td["demand"] * td["capacity"][:, None]
    assert torch.all(dem[:, 0] == 0)
    ints = dem[:, 1:].round()
    torch.testing.assert_close(dem[:, 1:], ints, atol=1e-4, rtol=0)
    assert ints.min() >= 1 and ints.max() <= 9
    assert torch.all(td["capacity"] == 40)
    assert td["locs"].min() >= 0 and td["locs"].max() <= 1


def test_generator_is_seeded_and_pure():
    g = P.generator(num_loc=20, distribution="mixed")
    a, b, c = g(8, seed=1), g(8, seed=1), g(8, seed=2)
    assert torch.equal(a["locs"], b["locs"]) and torch.equal(a["demand"], b["demand"])
    assert not torch.equal(a["locs"], c["locs"])


def test_bad_generator_parameters():
    with pytest.raises(ValueError, match="distribution"):
        P.generator(num_loc=10, distribution="gaussian")
    with pytest.raises(ValueError, match="num_loc"):
        P.generator(num_loc=0)
    with pytest.raises(ValueError, match="capacity"):
        P.generator(num_loc=10, capacity=5)


def test_any_batch_shape():
    env = E.make("cvrp", num_loc=8)
    data = env.generator(6, seed=0).reshape(2, 3)
    td = env.reset(data)
    assert td.batch_size == torch.Size([2, 3]) and td["action_mask"].shape == (2, 3, 9)
    td["action"] = torch.ones(2, 3, dtype=torch.int64)
    nxt = env.step(td)["next"]
    assert nxt["reward"].shape == (2, 3, 1)
    # Generation on request: an empty td with a batch size.
    assert env.reset(TensorDict({}, batch_size=[5])).batch_size == torch.Size([5])


def _hand_instance() -> TensorDict:
    # depot (0,0); customers on a 3-4-5 triangle so distances are exact by hand.
    locs = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.3, 0.4], [0.0, 0.4]]])
    demand = torch.tensor([[0.0, 0.5, 0.5, 0.5]])
    return TensorDict({"locs": locs, "demand": demand, "capacity": torch.tensor([2.0], dtype=torch.float64)}, batch_size=[1])


def test_cost_matches_hand_computation():
    td = _hand_instance()
    # Route 1: 0-1-2-0 = 0.3 + 0.4 + 0.5 = 1.2; route 2: 0-3-0 = 0.8; total 2.0.
    tours = torch.tensor([[1, 2, 0, 3, 0, 0]])
    assert P.cost(td, tours).item() == pytest.approx(2.0, abs=1e-6)
    assert P.check(td, tours) == [[]]
    env = E.make("cvrp", num_loc=3)
    seqs, ret = enumerate_sequences(env, td, 8)
    # The capacity (two customers of 0.5 per route) forces two routes; by hand the best is
    # 0-3-2-0 (0.4 + 0.3 + 0.5) + 0-1-0 (0.6) = 1.8, or its mirror.
    assert (-ret).min().item() == pytest.approx(1.8, abs=1e-6)


def test_checker_catches_planted_violations():
    td = _hand_instance()
    kinds = lambda tours: sorted({v.kind for v in P.check(td, torch.tensor([tours]))[0]})  # noqa: E731
    assert kinds([1, 2, 0, 0]) == ["missing"]
    assert kinds([1, 2, 0, 3, 1, 0]) == ["duplicate"]
    assert kinds([1, 2, 0, 3, 1, 2, 0]) == ["capacity", "duplicate"]
    assert kinds([1, 2, 3, 0]) == ["capacity"]
    assert kinds([1, 2, 0, 3, 0]) == []


def _brute_force(dist: np.ndarray, demand: np.ndarray) -> float:
    """Optimum over all customer orders and all ways to cut them into routes."""
    # Exactly full routes sum to 1 only up to float rounding, hence the slack.
    ok = (r for r in route_partitions(len(demand) - 1) if all(demand[x].sum() <= 1 + 1e-6 for x in r))
    return min(routes_length(dist, r) for r in ok)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_reach_brute_force_optimum(seed):
    n = 6
    gen = P.generator(num_loc=n, capacity=12)
    data = gen(1, seed=seed)
    env = E.make("cvrp", num_loc=n)
    seqs, ret = enumerate_sequences(env, data, 2 * n + 1)
    # Every enumerated sequence is feasible and the env's return equals minus the cost function.
    assert all(not v for v in P.check(data.expand(len(seqs)), seqs))
    torch.testing.assert_close(ret, -P.cost(data.expand(len(seqs)), seqs).double(), rtol=1e-5, atol=1e-5)
    locs = data["locs"][0].double().numpy()
    dist = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    opt = _brute_force(dist, data["demand"][0].double().numpy())
    assert (-ret).min().item() == pytest.approx(opt, rel=1e-5)


def test_mask_has_no_empty_routes_and_depot_padding():
    env = E.make("cvrp", num_loc=5)
    td = env.reset(env.generator(4, seed=0))
    assert not td["action_mask"][:, 0].any(), "depot->depot must be masked while customers remain"
    data = env.generator(3, seed=1)
    actions, _ = random_rollout(env, data)
    td = env.reset(data)
    for t in range(actions.shape[1]):
        td["action"] = actions[:, t]
        td = env.step(td)["next"]
    assert td["done"].all()
    assert torch.equal(td["action_mask"], torch.nn.functional.one_hot(torch.zeros(3, dtype=torch.int64), 6).bool())


def test_instance_roundtrip_normalisation(instances_dir):
    inst = E.load(instances_dir / "X-n101-k25.vrp")
    td = P.from_instance(inst)
    assert td["locs"].min() >= 0 and td["locs"].max() <= 1 + 1e-6
    torch.testing.assert_close(td["demand"][0].double() * inst.capacity, torch.as_tensor(inst.demand), atol=1e-4, rtol=0)
    back = P.to_instance(td)
    np.testing.assert_allclose(back.coords, inst.coords, atol=1e-3)
    np.testing.assert_allclose(back.demand, inst.demand)
    # Tensor costs are normalised Euclidean; scaled back they approximate the rounded EUC_2D cost.
    routes = E.read_solution(instances_dir / "X-n101-k25.sol", inst)
    seq = torch.tensor([[v for r in routes for v in (*r, 0)]])
    approx = (P.cost(td, seq) * td["scale"]).item()
    assert approx == pytest.approx(inst.route_cost(routes), rel=5e-3)


def test_nan_instance_rejected():
    env = E.make("cvrp", num_loc=4)
    data = env.generator(2, seed=0)
    data["locs"][0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        env.reset(data)


def test_state_features_and_starts():
    td = E.make("cvrp", num_loc=7).reset(P.generator(num_loc=7)(3, seed=0))
    assert P.node_features(td).shape == (3, 8, 4)
    assert P.state_features(td).shape == (3, 1)
    assert P.num_starts(td) == 7
    assert P.start_nodes(td, 7)[0].tolist() == list(range(1, 8))
    assert cvrp.CAP_TOL < 1e-3
