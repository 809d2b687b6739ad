"""REINFORCE baselines: a value per rollout and an epoch-end update, chosen by name.

Every baseline is an ``nn.Module`` (its state is part of the LightningModule's ``state_dict``,
so of every checkpoint); :data:`BASELINE_REGISTRY` maps the names of ``TrainConfig.baseline`` to
factories ``(config, policy, problem) -> baseline`` (the ``from_config`` of the baselines with
options).
"""

from __future__ import annotations

import copy
import math
from typing import Protocol

import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torchrl.envs import EnvBase

from nco.envs import Problem
from nco.policies import AttentionPolicy, DecodeConfig
from nco.train.evaluation import decode_costs
from nco.train_config import _STREAM_BASELINE_SET, TrainConfig, batch_seed

__all__ = [
    "BASELINE_REGISTRY",
    "Baseline",
    "BaselineFactory",
    "ExponentialBaseline",
    "NoBaseline",
    "RolloutBaseline",
    "SharedBaseline",
    "make_baseline",
    "paired_ttest_one_sided",
]


def paired_ttest_one_sided(candidate: Tensor, baseline: Tensor) -> tuple[float, float]:
    """One-sided paired t-test of H1 "candidate costs < baseline costs" -> (t, p).

    Uses ``scipy.stats.ttest_rel`` when scipy imports, else the normal approximation of the t
    distribution (accurate for the hundreds of paired samples the rollout baseline uses).
    """
    a = candidate.detach().double().cpu().numpy()
    b = baseline.detach().double().cpu().numpy()
    d = a - b
    if d.size < 2 or not np.any(d):
        return 0.0, 1.0
    try:
        from scipy.stats import ttest_rel

        t, p_two = ttest_rel(a, b)
        t, p_two = float(t), float(p_two)
        p = p_two / 2 if t < 0 else 1 - p_two / 2
    except ImportError:
        t = float(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)))
        p = 0.5 * math.erfc(-t / math.sqrt(2))  # P(T <= t) under H0
    return t, p


class Baseline(Protocol):
    """What REINFORCE needs from a baseline: a value per rollout and an epoch-end hook.

    Baselines are ``nn.Module`` objects so that their state (frozen policy, EMA value) is part of
    the LightningModule's ``state_dict`` and therefore of every checkpoint.
    """

    name: str

    def value(self, td: TensorDict, reward: Tensor, env: EnvBase) -> Tensor:
        """Baseline value broadcastable to ``reward`` [B, M] (no gradient)."""
        ...

    def epoch_end(self, policy: AttentionPolicy, env: EnvBase, epoch: int) -> dict[str, float]:
        """Update at the end of a training epoch; returns metrics to log."""
        ...


class BaselineFactory(Protocol):
    """Builds a baseline module for a run (an entry of :data:`BASELINE_REGISTRY`)."""

    def __call__(self, config: TrainConfig, policy: AttentionPolicy, problem: Problem) -> nn.Module:
        """The baseline for ``config`` (resolved), the run's initial ``policy`` and ``problem``."""
        ...


class NoBaseline(nn.Module):
    """Plain REINFORCE: advantage = reward."""

    name = "none"

    def value(self, td: TensorDict, reward: Tensor, env: EnvBase) -> Tensor:
        return torch.zeros_like(reward)

    def epoch_end(self, policy: AttentionPolicy, env: EnvBase, epoch: int) -> dict[str, float]:
        return {}


class SharedBaseline(nn.Module):
    """POMO's shared baseline: the mean reward over all M rollouts of an instance (starts x
    samples x augmentations)."""

    name = "shared"

    def value(self, td: TensorDict, reward: Tensor, env: EnvBase) -> Tensor:
        return reward.mean(dim=1, keepdim=True)

    def epoch_end(self, policy: AttentionPolicy, env: EnvBase, epoch: int) -> dict[str, float]:
        return {}


class ExponentialBaseline(nn.Module):
    """Exponential moving average of the batch-mean reward (Kool et al., ``beta`` = decay)."""

    name = "exponential"
    ema: Tensor  # buffers, declared for type checkers
    initialized: Tensor

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.register_buffer("ema", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(
        cls, config: TrainConfig, policy: AttentionPolicy, problem: Problem
    ) -> ExponentialBaseline:
        """The baseline of a run (see :data:`BASELINE_REGISTRY`)."""
        return cls(config.ema_beta)

    def value(self, td: TensorDict, reward: Tensor, env: EnvBase) -> Tensor:
        mean = reward.detach().float().mean()
        if self.training:
            # First batch initialises the average (no cold-start bias towards 0).
            new = torch.where(self.initialized, self.beta * self.ema + (1 - self.beta) * mean, mean)
            self.ema.copy_(new)
            self.initialized.fill_(True)
        return self.ema.expand_as(reward)

    def epoch_end(self, policy: AttentionPolicy, env: EnvBase, epoch: int) -> dict[str, float]:
        return {"baseline/value": float(self.ema)}


class RolloutBaseline(nn.Module):
    """Greedy rollout of a frozen copy of the policy (Kool et al. 2019).

    At every epoch end the candidate (current) policy and the frozen baseline policy decode a
    held set of ``eval_size`` instances greedily; the baseline is replaced when the candidate's
    mean cost is lower and the one-sided paired t-test gives ``p < alpha``. The held set is
    generated from ``(seed, version)``, so it is fixed between updates, renewed after each update
    (against over-fitting the test to one set, as Kool et al.), and identical after a resume.
    """

    name = "rollout"
    version: Tensor  # a buffer, declared for type checkers

    def __init__(
        self,
        policy: AttentionPolicy,
        *,
        problem: Problem,
        size: int,
        distribution: str,
        eval_size: int,
        alpha: float,
        seed: int,
        batch_size: int,
    ) -> None:
        super().__init__()
        self.policy = copy.deepcopy(policy)
        for p in self.policy.parameters():
            p.requires_grad_(False)
        self.register_buffer("version", torch.zeros((), dtype=torch.long))
        self._gen = problem.generator(num_loc=size, distribution=distribution)
        self.eval_size, self.alpha, self.seed, self.batch_size = eval_size, alpha, seed, batch_size
        self._held: tuple[int, TensorDict] | None = None

    @classmethod
    def from_config(
        cls, config: TrainConfig, policy: AttentionPolicy, problem: Problem
    ) -> RolloutBaseline:
        """The baseline of a run (see :data:`BASELINE_REGISTRY`): its held set is generated at
        the run's (largest) size and distribution."""
        return cls(
            policy,
            problem=problem,
            size=config.max_size,
            distribution=config.distribution,
            eval_size=config.bl_eval_size,
            alpha=config.bl_alpha,
            seed=config.seed,
            batch_size=config.val_batch_size,
        )

    @torch.no_grad()
    def value(self, td: TensorDict, reward: Tensor, env: EnvBase) -> Tensor:
        self.policy.eval()  # Lightning's model.train() also reaches this submodule
        out = self.policy(
            td,
            env,
            DecodeConfig(strategy="greedy", select_best=False, return_actions=False, seed=0),
        )
        return out.reward.detach()  # [B, 1], broadcast over M

    def _held_set(self) -> TensorDict:
        v = int(self.version)
        if self._held is None or self._held[0] != v:
            seed = batch_seed(self.seed, v, 0, 0, _STREAM_BASELINE_SET)
            self._held = (v, self._gen(self.eval_size, seed=seed))
        return self._held[1]

    def epoch_end(self, policy: AttentionPolicy, env: EnvBase, epoch: int) -> dict[str, float]:
        held = self._held_set()
        cand = decode_costs(policy, held, env, batch_size=self.batch_size).double()
        base = decode_costs(self.policy, held, env, batch_size=self.batch_size).double()
        t, p = paired_ttest_one_sided(cand, base)
        improved = bool(cand.mean() < base.mean()) and p < self.alpha
        if improved:
            self.policy.load_state_dict(policy.state_dict())
            self.version += 1
        return {
            "baseline/candidate_cost": float(cand.mean()),
            "baseline/baseline_cost": float(base.mean()),
            "baseline/p_value": p,
            "baseline/updated": float(improved),
            "baseline/version": float(self.version),
        }


def _without_options(cls: type[nn.Module]) -> BaselineFactory:
    """The factory of a baseline that takes nothing from the run."""

    def build(config: TrainConfig, policy: AttentionPolicy, problem: Problem) -> nn.Module:
        return cls()

    return build


#: The REINFORCE baselines by name (``TrainConfig.baseline``; the names are
#: :data:`nco.train_config.BASELINES`): name -> factory ``(config, policy, problem) -> module``.
BASELINE_REGISTRY: dict[str, BaselineFactory] = {
    RolloutBaseline.name: RolloutBaseline.from_config,
    ExponentialBaseline.name: ExponentialBaseline.from_config,
    SharedBaseline.name: _without_options(SharedBaseline),
    NoBaseline.name: _without_options(NoBaseline),
}


def make_baseline(config: TrainConfig, policy: AttentionPolicy, problem: Problem) -> nn.Module:
    """The baseline module named by ``config.baseline`` (call on a resolved config)."""
    factory = BASELINE_REGISTRY.get(str(config.baseline))
    if factory is None:
        raise ValueError(
            f"unknown baseline {config.baseline!r}; expected one of {', '.join(BASELINE_REGISTRY)}"
        )
    return factory(config, policy, problem)
