"""Rollout and enumeration helpers for the environment tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.envs import EnvBase
from torchrl.envs.utils import step_mdp


def random_rollout(env: EnvBase, data: TensorDict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly random feasible actions until every episode is done.

    Returns (actions [B, T], summed rewards [B]), stepping through the public TorchRL API.
    """
    g = torch.Generator().manual_seed(seed)
    td = env.reset(data.clone())
    actions, total = [], torch.zeros(data.batch_size[0], dtype=torch.float64)
    for _ in range(4 * data["locs"].shape[1] + 2):
        if td["done"].all():
            break
        mask = td["action_mask"]
        assert mask.any(-1).all(), "a state with no allowed action"
        td["action"] = torch.multinomial(mask.float(), 1, generator=g).squeeze(-1)
        actions.append(td["action"])
        td = env.step(td)
        total += td["next", "reward"].squeeze(-1).double()
        td = step_mdp(td)
    assert td["done"].all(), "episodes did not finish"
    return torch.stack(actions, 1), total


def enumerate_sequences(env: EnvBase, data: TensorDict, max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every complete action sequence the env's masks allow for ONE instance.

    Breadth-first over a batch of partial sequences (each row a state), so the whole tree is
    stepped in max_steps batched transitions. Returns (sequences [M, T], rewards [M]).
    """
    assert data.batch_size == torch.Size([1])
    td = env.reset(data.clone())
    seqs = torch.zeros(1, 0, dtype=torch.int64)
    ret = torch.zeros(1, dtype=torch.float64)
    for _ in range(max_steps):
        if td["done"].all():
            break
        mask = td["action_mask"]
        rows, acts = mask.nonzero(as_tuple=True)
        td = td[rows]
        seqs = torch.cat([seqs[rows], acts[:, None]], 1)
        ret = ret[rows]
        td["action"] = acts
        td = env.step(td)
        ret = ret + td["next", "reward"].squeeze(-1).double()
        td = step_mdp(td)
    assert td["done"].all()
    return seqs, ret


def route_partitions(n: int):
    """Every way to visit customers 1..n as an ordered list of routes (orders x cut points)."""
    import itertools

    for perm in itertools.permutations(range(1, n + 1)):
        for cuts in range(2 ** (n - 1)):
            routes, cur = [], [perm[0]]
            for j in range(1, n):
                if (cuts >> (j - 1)) & 1:
                    routes.append(cur)
                    cur = []
                cur.append(perm[j])
            routes.append(cur)
            yield routes


def routes_length(dist, routes) -> float:
    """Total length of depot-based routes on a distance matrix."""
    return sum(dist[0, r[0]] + dist[r[-1], 0] + sum(dist[a, b] for a, b in zip(r, r[1:])) for r in routes)
