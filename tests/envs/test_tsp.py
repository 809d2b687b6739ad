"""TSP: specs, feasible random rollouts, reward = -cost, checker, exhaustive masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import nco.envs as E
from tests.envs.helpers import enumerate_sequences, random_rollout

P = E.get_problem("tsp")


def test_check_env_specs():
    check_env_specs(E.make("tsp", num_loc=10, seed=0))


@pytest.mark.parametrize("distribution", ["uniform", "clustered", "mixed"])
def test_random_rollouts_feasible_and_reward_is_minus_cost(distribution):
    env = E.make("tsp", num_loc=20, distribution=distribution)
    data = env.generator(1000, seed=3)
    actions, ret = random_rollout(env, data)
    assert actions.shape == (1000, 20)
    assert all(not v for v in P.check(data, actions))
    torch.testing.assert_close(ret, -P.cost(data, actions).double(), rtol=1e-5, atol=1e-4)


def test_cost_matches_hand_computation():
    # Unit square corners: the perimeter tour has length 4, the crossing one 2 + 2*sqrt(2).
    td = TensorDict({"locs": torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])}, batch_size=[1])
    assert P.cost(td, torch.tensor([[0, 1, 2, 3]])).item() == pytest.approx(4.0)
    assert P.cost(td, torch.tensor([[0, 2, 1, 3]])).item() == pytest.approx(2 + 2 * np.sqrt(2), rel=1e-6)


def test_checker_catches_planted_violations():
    td = P.generator(num_loc=5)(1, seed=0)
    kinds = lambda t: sorted({v.kind for v in P.check(td, torch.tensor([t]))[0]})  # noqa: E731
    assert kinds([0, 1, 2, 3, 4]) == []
    assert kinds([0, 1, 2, 3]) == ["missing"]
    assert kinds([0, 1, 2, 3, 3]) == ["duplicate", "missing"]
    assert kinds([0, 1, 2, 3, 7]) == ["missing", "unknown_node"]


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_reach_brute_force_optimum(seed):
    n = 7
    data = P.generator(num_loc=n)(1, seed=seed)
    seqs, ret = enumerate_sequences(E.make("tsp", num_loc=n), data, n)
    assert len(seqs) == 5040  # every permutation is allowed
    torch.testing.assert_close(ret, -P.cost(data.expand(len(seqs)), seqs).double(), rtol=1e-5, atol=1e-5)
    locs = data["locs"][0].double().numpy()
    d = np.sqrt(((locs[:, None] - locs[None]) ** 2).sum(-1))
    opt = min(d[0, p[0]] + sum(d[a, b] for a, b in zip(p, p[1:])) + d[p[-1], 0] for p in itertools.permutations(range(1, n)))
    assert (-ret).min().item() == pytest.approx(opt, rel=1e-5)


def test_padding_after_done():
    env = E.make("tsp", num_loc=4)
    data = env.generator(2, seed=0)
    td = env.reset(data)
    for a in range(4):
        td["action"] = torch.full((2,), a)
        td = env.step(td)["next"]
    assert td["done"].all()
    assert td["action_mask"].sum(-1).tolist() == [1, 1]
    td["action"] = td["action_mask"].int().argmax(-1)
    assert (env.step(td)["next", "reward"] == 0).all()


def test_features_and_starts():
    td = E.make("tsp", num_loc=6).reset(P.generator(num_loc=6)(2, seed=0))
    assert P.node_features(td).shape == (2, 6, 2)
    assert P.state_features(td).shape == (2, 0)
    assert P.num_starts(td) == 6 and P.start_nodes(td, 6)[1].tolist() == list(range(6))
