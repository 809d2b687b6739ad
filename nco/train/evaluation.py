"""Costs of a policy's deterministic decoding: validation and the rollout baseline's test."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.envs import EnvBase

from nco.policies import AttentionPolicy, DecodeConfig

__all__ = ["decode_costs"]


@torch.no_grad()
def decode_costs(
    policy: AttentionPolicy,
    td: TensorDict,
    env: EnvBase,
    *,
    strategy: str = "greedy",
    batch_size: int = 500,
    augment: int = 1,
) -> Tensor:
    """Costs [B] of the best solution per instance under a deterministic decoding, in eval mode.

    Parameters
    ----------
    policy : the policy (its train/eval mode is restored afterwards).
    td : instances [B] (any device; moved to the policy's device batch by batch).
    strategy : ``greedy`` or ``multistart_greedy`` (or any strategy; sampling uses a fixed seed).
    batch_size : instances per decoding call.
    """
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    out = []
    try:
        for s in range(0, td.batch_size[0], batch_size):
            part = td[s : s + batch_size].to(device)
            cfg = DecodeConfig(
                strategy=strategy, augment=augment, select_best=True, return_actions=False, seed=0
            )
            out.append(-policy(part, env, cfg).best_reward.float())
    finally:
        policy.train(was_training)
    return torch.cat(out)
