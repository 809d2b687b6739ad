"""REINFORCE training of construction policies with pluggable baselines (one LightningModule).

>>> from nco.train import TrainConfig, train
>>> cfg = TrainConfig(problem="tsp", size=20, preset="am", epochs=2)
>>> result = train(cfg, "runs/tsp20-am")            # doctest: +SKIP

Design
------
* :class:`REINFORCEModule` is the only LightningModule. Algorithms differ by composition: the
  policy preset (AM, POMO, MVMoE, RouteFinder), the training decoding (sampling or POMO
  multistart sampling, optional 8-fold augmentation) and a :class:`Baseline` object
  (``rollout``, ``exponential``, ``shared``, ``none``).
* Training instances are generated on the module's device inside ``training_step``; batch ``i``
  of epoch ``e`` on rank ``r`` is seeded by ``(seed, e, r, i)`` (instances AND the sampling
  stream), never from a global RNG stream, so ranks see different instances and a resumed run
  regenerates exactly the batches an uninterrupted run would have seen.
* Multi-size training (``size=(lo, hi)``, CLI ``--size 50:500``): batch ``i`` of epoch ``e``
  draws its size uniformly from ``lo..hi`` from the stream ``(seed, e, 0, i)`` of
  :func:`batch_seed` (rank 0 for every rank: all ranks train the same size in a step, so no rank
  waits for a larger one), see :meth:`TrainConfig.train_size`. Its batch is
  :meth:`TrainConfig.batch_size_at` ``= max(1, round(batch_size * (lo / n) ** p))``; with
  ``train_starts`` K, POMO decodes K random starts per instance instead of every customer.
* Everything a resumed run needs (policy, optimizer, LR scheduler, the rollout baseline's frozen
  policy, the EMA value, reward-normalisation buffers, loop counters, the epoch position of the
  batch-index loader, the seconds used so far for ``max_time``) lives in the Lightning checkpoint.
* :class:`TrainConfig` and the option values live in the light :mod:`nco.train_config` (no torch
  or lightning import, for the CLI's parser) and are re-exported here.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    Callback,
    Checkpoint,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger
from tensordict import TensorDict
from torch import Tensor, nn
from torchrl.envs import EnvBase

from nco.envs import Problem, get_problem, load_dataset
from nco.policies import AttentionPolicy, DecodeConfig, PolicyConfig, build_policy
from nco.train_config import (
    _STREAM_BASELINE_SET,
    _STREAM_SAMPLING,
    BASELINES,
    LR_SCHEDULES,
    MOE_ROUTERS,
    PRECISIONS,
    REWARD_NORMS,
    TrainConfig,
    batch_seed,
)

__all__ = [
    "BASELINES",
    "LR_SCHEDULES",
    "MOE_ROUTERS",
    "PRECISIONS",
    "REWARD_NORMS",
    "Baseline",
    "ExponentialBaseline",
    "NoBaseline",
    "REINFORCEModule",
    "RewardScaler",
    "RolloutBaseline",
    "SharedBaseline",
    "TrainConfig",
    "TrainResult",
    "batch_seed",
    "decode_costs",
    "load_reference",
    "load_validation_set",
    "make_baseline",
    "paired_ttest_one_sided",
    "train",
]


# ============================================================================= data
class _BatchIndices:
    """Batch indices ``0..n-1`` of one epoch, resumable mid-epoch.

    The yielded value is not used for seeding (Lightning's ``batch_idx`` is); the state only makes
    a resumed epoch run the remaining batches instead of a full epoch. ``consumed`` is advanced by
    the module after each training step, so it matches the checkpoint's loop counters even though
    Lightning prefetches one item ahead.
    """

    def __init__(self, num_batches: int) -> None:
        self.num_batches = num_batches
        self.consumed = 0
        self._resume_at = 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[int]:
        start, self._resume_at = self._resume_at, 0
        return iter(range(start, self.num_batches))

    def state_dict(self) -> dict[str, int]:
        return {"consumed": int(self.consumed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        c = int(state.get("consumed", 0))
        self._resume_at = c if 0 < c < self.num_batches else 0


class _ValBatches:
    """(set, start, end) slices of the validation sets handled by one rank (a contiguous shard of
    each set); ``sets`` holds (instances, decoding batch) per set."""

    def __init__(self, sets: Sequence[tuple[int, int]], rank: int, world: int) -> None:
        self.slices: list[tuple[int, int, int]] = []
        for k, (size, batch) in enumerate(sets):
            if size < world:
                raise ValueError(
                    f"{size} validation instances cannot be shared by {world} processes"
                )
            lo, hi = rank * size // world, (rank + 1) * size // world
            self.slices += [(k, s, min(s + batch, hi)) for s in range(lo, hi, batch)]

    def __len__(self) -> int:
        return len(self.slices)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self.slices)


def load_validation_set(config: TrainConfig) -> TensorDict | dict[int, TensorDict]:
    """The fixed validation instances (CPU): the ``val_data`` file, or ``val_size`` instances from
    ``val_seed``; with several validation sizes (:attr:`TrainConfig.multi_validation`: a size
    range or ``val_sizes``) a dict ``{size: instances}`` with ``val_size`` instances per size."""
    problem = get_problem(config.problem)
    if config.val_data:
        name, td = load_dataset(config.val_data)
        if name != problem.name:
            raise ValueError(
                f"--val-data {config.val_data}: holds {name} instances, but --problem is {problem.name}"
            )
        return td
    if config.multi_validation:
        return {
            n: make_generator(config, n)(config.val_size, seed=config.val_seed)
            for n in config.validation_sizes
        }
    return make_generator(config)(config.val_size, seed=config.val_seed)


def make_generator(config: TrainConfig, size: int | None = None) -> Any:
    """The run's instance generator (size, distribution, and the variant mix when given);
    ``size`` overrides the training size (required for a size range: one generator per size)."""
    if size is None:
        if config.multi_size:
            raise ValueError("make_generator: a size range needs the size of the generator")
        size = config.max_size
    params: dict[str, Any] = {"num_loc": size, "distribution": config.distribution}
    if config.variants:
        params["variants"] = list(config.variants)
    try:
        return get_problem(config.problem).generator(**params)
    except TypeError as err:
        if config.variants and "variants" in str(err):
            raise ValueError(
                f"variants: problem {config.problem!r} has no variants (use --problem mtvrp)"
            ) from err
        raise


def load_reference(spec: str | None, count: int) -> Tensor | None:
    """Reference costs for ``val/gap``: a CSV file (column ``cost``, ``reference`` or ``bks``, or
    the last column) or comma-separated numbers; must give one value per validation instance."""
    if spec is None:
        return None
    values: list[float]
    looks_like_numbers = all(
        x.strip()
        .replace(".", "", 1)
        .replace("e", "", 1)
        .replace("-", "")
        .replace("+", "")
        .isdigit()
        for x in spec.split(",")
        if x.strip()
    )
    path = Path(spec)
    if not looks_like_numbers and path.is_file():
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError(f"--val-reference {spec}: empty file")
        header = [h.strip().lower() for h in rows[0]]
        try:
            float(rows[0][-1])
            col, body = len(rows[0]) - 1, rows
        except ValueError:
            col = next(
                (header.index(k) for k in ("cost", "reference", "bks", "obj") if k in header),
                len(header) - 1,
            )
            body = rows[1:]
        try:
            values = [float(r[col]) for r in body if r]
        except (ValueError, IndexError) as err:
            raise ValueError(
                f"--val-reference {spec}: not a number in column {col + 1} ({err})"
            ) from err
    else:
        try:
            values = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"--val-reference {spec!r}: neither a file nor comma-separated numbers"
            ) from None
    if len(values) != count:
        raise ValueError(
            f"--val-reference: {len(values)} reference costs for {count} validation instances"
        )
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError("--val-reference: reference costs must be positive numbers")
    return torch.tensor(values, dtype=torch.float64)


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


# ============================================================================= baselines
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

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.register_buffer("ema", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

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


def make_baseline(config: TrainConfig, policy: AttentionPolicy, problem: Problem) -> nn.Module:
    """The baseline module named by ``config.baseline`` (call on a resolved config)."""
    name = config.baseline
    if name == "rollout":
        return RolloutBaseline(
            policy,
            problem=problem,
            size=config.max_size,
            distribution=config.distribution,
            eval_size=config.bl_eval_size,
            alpha=config.bl_alpha,
            seed=config.seed,
            batch_size=config.val_batch_size,
        )
    if name == "exponential":
        return ExponentialBaseline(config.ema_beta)
    if name == "shared":
        return SharedBaseline()
    if name == "none":
        return NoBaseline()
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


class RewardScaler(nn.Module):
    """Divides advantages by a running scale (RouteFinder-style reward normalisation).

    ``std``: sqrt of an EMA of mean(adv^2); ``mean_abs``: EMA of mean(|adv|). The statistic is
    kept per group (the ``variant`` of multi-variant instances, RouteFinder's multi-task reward
    normalisation: a VRPTW's costs and advantages live on another scale than an OVRP's), in
    buffers so checkpoints carry it. Without groups every instance is in group 0.
    """

    #: capacity of the per-group statistics (variant indices must be below it)
    MAX_GROUPS = 64

    def __init__(self, mode: str, decay: float) -> None:
        super().__init__()
        if mode not in REWARD_NORMS:
            raise ValueError(f"reward_norm must be one of {REWARD_NORMS}, got {mode!r}")
        self.mode, self.decay = mode, decay
        self.register_buffer("stat", torch.zeros(self.MAX_GROUPS))
        self.register_buffer("initialized", torch.zeros(self.MAX_GROUPS, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in ("stat", "initialized"):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 0:
                # checkpoints written before per-group statistics held one scalar: group 0
                full = torch.zeros_like(getattr(self, name))
                full[0] = state_dict[key]
                state_dict[key] = full
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, adv: Tensor, groups: Tensor | None = None) -> Tensor:
        """Scaled advantages [B, M]; ``groups`` [B] int (None: one group)."""
        if self.mode == "none":
            return adv
        a = adv.detach().float().reshape(adv.shape[0], -1)
        per_inst = a.pow(2).mean(1) if self.mode == "std" else a.abs().mean(1)
        g = (
            torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
            if groups is None
            else groups.reshape(-1).long()
        )
        if int(g.max()) >= self.MAX_GROUPS or int(g.min()) < 0:
            raise ValueError(f"reward groups must be in [0, {self.MAX_GROUPS}), got {g.tolist()}")
        if self.training:
            count = torch.bincount(g, minlength=self.MAX_GROUPS).to(a.dtype)
            total = torch.zeros(self.MAX_GROUPS, device=a.device).index_add_(0, g, per_inst)
            seen = count > 0
            batch = total / count.clamp_min(1.0)
            ema = torch.where(
                self.initialized, self.decay * self.stat + (1 - self.decay) * batch, batch
            )
            self.stat.copy_(torch.where(seen, ema, self.stat))
            self.initialized.logical_or_(seen)
        stat = self.stat[g]
        scale = stat.sqrt() if self.mode == "std" else stat
        return adv / (scale.view(-1, *([1] * (adv.dim() - 1))) + 1e-8)


# ============================================================================= the module
def _init_policy(policy: AttentionPolicy, pcfg: PolicyConfig, cfg: TrainConfig) -> None:
    """Copy the policy weights of ``cfg.init_from`` into ``policy`` (same problem and network)."""
    from nco.checkpoints import read_checkpoint

    info, state, path = read_checkpoint(str(cfg.init_from))
    if info["problem"] != cfg.problem:
        raise ValueError(
            f"init-from {path}: trained on problem {info['problem']!r}, this run is {cfg.problem!r}"
        )
    theirs, ours = PolicyConfig.from_dict(info["policy"]).to_dict(), pcfg.to_dict()
    changed = {k for k in ours if theirs.get(k) != ours[k]}
    # A network without the distance bias grows into one with it: the bias coefficients start
    # at 0, so the run starts from exactly the function of the checkpoint.
    grows = (
        bool(changed)
        and changed <= {"name", "attn_dist_bias"}
        and not theirs.get("attn_dist_bias")
        and bool(ours.get("attn_dist_bias"))
    )
    diff = [f"{k}={theirs.get(k)!r} (run: {ours.get(k)!r})" for k in ours if k in changed]
    if changed - {"name"} and not grows:
        raise ValueError(
            f"init-from {path}: its policy differs from this run's in {', '.join(diff)}; "
            "use the same preset and policy options (or only add attn_dist_bias)"
        )
    if not grows:
        policy.load_state_dict(state)
        return
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("_alpha") for k in missing):
        raise ValueError(
            f"init-from {path}: weights do not match this network (missing {missing}, "
            f"unexpected {unexpected})"
        )
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name in missing:
                p.zero_()


class REINFORCEModule(L.LightningModule):
    """REINFORCE with a pluggable baseline for any policy preset and problem.

    Parameters
    ----------
    config : the training configuration (resolved here).
    val_data : validation instances [V] (CPU), or ``{size: instances}`` for several validation
        sizes (what :func:`load_validation_set` returns); None generates them from ``config``.
    val_reference : reference costs [V] for ``val/gap`` (None: no gap; one set only).

    Logged metrics: ``train/loss``, ``train/reward`` (mean over rollouts), ``train/advantage``
    (mean |advantage|), ``train/epoch_reward``, ``val/cost``, ``val/gap`` (%), ``baseline/*``;
    with a size range ``train/size`` and ``train/batch_size`` (the step's drawn size and batch);
    with several validation sizes ``val/cost_n{size}`` (``val/cost`` is the mean over all
    validation instances); for MoE policies ``moe/load_e{i}``, ``moe/entropy``, ``moe/dropped_fraction``,
    ``moe/dense_fraction``, ``moe/aux_loss``, ``moe/z_loss``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        val_data: TensorDict | None = None,
        val_reference: Tensor | None = None,
    ) -> None:
        super().__init__()
        from nco.checkpoints import checkpoint_info

        cfg = config.resolved()
        self.config = cfg
        self.problem = get_problem(cfg.problem)
        pcfg = cfg.policy_config()
        # Initialisation is part of the run's definition: the same seed gives the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.policy = build_policy(pcfg, self.problem)
        if cfg.init_from:
            _init_policy(self.policy, pcfg, cfg)
        self.baseline = make_baseline(cfg, self.policy, self.problem)
        self.reward_scaler = RewardScaler(cfg.reward_norm, cfg.reward_norm_decay)
        self.save_hyperparameters(
            checkpoint_info(pcfg, cfg), ignore=["config", "val_data", "val_reference"]
        )
        self._generators: dict[int, Any] = {}
        self._envs: dict[tuple[str, int], EnvBase] = {}
        self.val_data = val_data if val_data is not None else load_validation_set(cfg)
        # (size label or None for one unlabelled set, instances, decoding batch) per set
        self._val_sets: list[tuple[int | None, TensorDict, int]]
        if isinstance(self.val_data, TensorDict):
            self._val_sets = [(None, self.val_data, cfg.val_batch_size)]
        else:
            self._val_sets = [
                (int(n), td, cfg.val_batch_size_at(int(n)))
                for n, td in sorted(self.val_data.items())
            ]
            if not self._val_sets:
                raise ValueError("val_data: no validation sets")
        if val_reference is not None:
            if len(self._val_sets) != 1 or self._val_sets[0][0] is not None:
                raise ValueError("reference costs need one validation set (not one per size)")
            count = self._val_sets[0][1].batch_size[0]
            if len(val_reference) != count:
                raise ValueError(
                    f"{len(val_reference)} reference costs for {count} validation instances"
                )
        self.val_reference = val_reference
        self._train_batches: _BatchIndices | None = None
        self._val_sums: list[Tensor] = []
        self._epoch_reward = [0.0, 0]

    # ------------------------------------------------------------------ helpers
    def env(self, size: int | None = None) -> EnvBase:
        """The problem's environment for ``size`` (default: the largest training size) on the
        module's device (one per device and size, stateless)."""
        n = self.config.max_size if size is None else int(size)
        key = (str(self.device), n)
        if key not in self._envs:
            self._envs[key] = self.problem.make_env(num_loc=n, device=self.device)
        return self._envs[key]

    def generator(self, size: int | None = None) -> Any:
        """The training instance generator for ``size`` (default: the largest training size)."""
        n = self.config.max_size if size is None else int(size)
        if n not in self._generators:
            self._generators[n] = make_generator(self.config, n)
        return self._generators[n]

    def _world(self) -> tuple[int, int]:
        if self._trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_decode_config(self, seed: int, td: TensorDict | None = None) -> DecodeConfig:
        """The training decoding configuration (sampling stream ``seed``, which also draws the
        random POMO starts of ``train_starts``; ``td`` = the batch, needed with
        ``train_starts`` to cap it at the problem's number of start candidates)."""
        c = self.config
        num_starts, start_choice = c.num_starts, "first"
        if c.train_starts is not None:
            if td is None:
                raise ValueError("train_decode_config: train_starts needs the batch")
            num_starts = min(c.train_starts, int(self.problem.num_starts(td)))
            start_choice = "random"
        return DecodeConfig(
            strategy=c.decoding,
            num_starts=num_starts,
            num_samples=c.num_samples,
            augment=c.augment,
            select_best=False,
            return_actions=False,
            seed=seed,
            start_choice=start_choice,
        )

    # ------------------------------------------------------------------ data
    def train_dataloader(self) -> _BatchIndices:
        _, world = self._world()
        self._train_batches = _BatchIndices(self.config.steps_per_epoch(world))
        return self._train_batches

    def val_dataloader(self) -> _ValBatches:
        rank, world = self._world()
        sets = [(td.batch_size[0], batch) for _, td, batch in self._val_sets]
        return _ValBatches(sets, rank, world)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        c = self.config
        rank, _ = self._world()
        seed = batch_seed(c.seed, self.current_epoch, rank, batch_idx)
        # Anything inside the policy that draws from torch's global RNG (MoE noise) is tied to the
        # batch too, so a resumed run repeats it exactly.
        torch.manual_seed(seed)
        # A size range: this batch's size (same on every rank) and the batch scaled to it.
        n = c.train_size(self.current_epoch, batch_idx)
        bs = c.batch_size_at(n)
        td = self.generator(n)(bs, seed=seed, device=self.device)
        env = self.env(n)
        out = self.policy(
            td,
            env,
            self.train_decode_config(
                batch_seed(c.seed, self.current_epoch, rank, batch_idx, _STREAM_SAMPLING), td
            ),
        )
        reward = out.reward.float()
        advantage = self.reward_scaler(
            reward - self.baseline.value(td, reward, env), td.get("variant", None)
        )
        loss = -(advantage.detach() * out.log_likelihood).mean()
        logs = {
            "train/reward": reward.mean().detach(),
            "train/advantage": advantage.abs().mean().detach(),
        }
        moe = out.moe_stats
        if moe is not None:
            aux = moe.aux_loss + moe.z_loss
            if c.aux_loss_weight > 0:
                loss = loss + c.aux_loss_weight * aux
            logs.update({f"moe/load_e{i}": v for i, v in enumerate(moe.load.detach())})
            logs.update(
                {
                    "moe/entropy": moe.entropy.detach(),
                    "moe/dropped_fraction": moe.dropped_fraction.detach(),
                    "moe/dense_fraction": moe.dense_fraction.detach(),
                    "moe/aux_loss": moe.aux_loss.detach(),
                    "moe/z_loss": moe.z_loss.detach(),
                }
            )
        logs["train/loss"] = loss.detach()
        if c.multi_size:
            logs["train/size"] = torch.tensor(float(n))
            logs["train/batch_size"] = torch.tensor(float(bs))
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=bs)
        self.log(
            "loss",
            loss.detach(),
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
            batch_size=bs,
        )
        self.log(
            "reward",
            logs["train/reward"],
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            logger=False,
            batch_size=bs,
        )
        self._epoch_reward[0] += float(logs["train/reward"])
        self._epoch_reward[1] += 1
        if self._train_batches is not None:
            self._train_batches.consumed = batch_idx + 1
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_reward = [0.0, 0]

    def on_train_epoch_end(self) -> None:
        s, n = self._epoch_reward
        if n:
            self.log("train/epoch_reward", s / n, sync_dist=True)
        for k, v in self.baseline.epoch_end(self.policy, self.env(), self.current_epoch).items():
            self.log(k, float(v), sync_dist=True)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_sums = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        k, start, end = (int(x) for x in batch)
        size, data, val_batch = self._val_sets[k]
        td = data[start:end]
        cost = decode_costs(
            self.policy,
            td,
            self.env(size),
            strategy=self.policy.config.decoding,
            batch_size=val_batch,
        )
        width = 3 if self.val_reference is not None else 2
        row = torch.zeros(len(self._val_sets), width, dtype=torch.float64, device=self.device)
        row[k, 0] = cost.double().sum().to(self.device)
        row[k, 1] = float(end - start)
        if self.val_reference is not None:
            ref = self.val_reference[start:end].to(cost.device)
            row[k, 2] = (100.0 * (cost.double() / ref - 1.0)).sum().to(self.device)
        self._val_sums.append(row)

    def on_validation_epoch_end(self) -> None:
        width = 3 if self.val_reference is not None else 2
        local = (
            torch.stack(self._val_sums).sum(0)
            if self._val_sums
            else torch.zeros(len(self._val_sets), width, dtype=torch.float64, device=self.device)
        )
        # Exact means over the whole sets (ranks may hold slices of different sizes).
        total = (
            self.trainer.strategy.reduce(local.float(), reduce_op="sum")
            if self.trainer.world_size > 1
            else local
        )
        count = float(total[:, 1].sum())
        if count == 0:
            return
        self.log("val/cost", float(total[:, 0].sum()) / count, prog_bar=True, sync_dist=True)
        if self.val_reference is not None:
            self.log("val/gap", float(total[0, 2]) / count, prog_bar=False, sync_dist=True)
        for (size, _, _), per in zip(self._val_sets, total):
            if size is not None and float(per[1]) > 0:
                self.log(f"val/cost_n{size}", float(per[0]) / float(per[1]), sync_dist=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        c = self.config
        opt = torch.optim.Adam(self.policy.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        if c.lr_schedule == "none":
            return opt
        if c.lr_schedule == "multistep":
            milestones = sorted({max(1, round(m * c.epochs)) for m in c.lr_milestones})
            sched: Any = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones=milestones, gamma=c.lr_gamma
            )
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


# ============================================================================= run driver
def _clock() -> float:
    """Seconds of the run clock (``time.monotonic``; a test replaces it to run on a fake clock)."""
    return time.monotonic()


class _StopRequested(Exception):
    """Raised at a step boundary after ``last.ckpt`` was saved on a signal (or a step limit)."""


class _GracefulStop(Checkpoint):
    """On SIGINT/SIGTERM or at the time limit: save ``last.ckpt`` at the next step boundary, then
    stop the run.

    The signal handler only sets a flag (saving inside a handler could catch the optimizer
    between updates); the save happens in ``on_train_batch_end``, the same point at which
    ``ModelCheckpoint(every_n_train_steps)`` saves, so the checkpoint resumes exactly. A second
    Ctrl-C interrupts immediately. Also used by tests to stop after a given number of steps.

    ``max_time`` (seconds) is a limit on the whole run: the wall-clock time of every
    :func:`train` call of the run (set-up, training steps, validation, checkpointing), summed
    over resumes through the checkpoints (``elapsed`` = the seconds used before this call). It
    is checked at every step boundary; once reached, the run stops there as on a signal, without
    a final validation. A validation that would not finish within the limit (the previous one
    took longer than the time left) is skipped; the first one always runs.
    """

    def __init__(
        self,
        last_path: Path,
        *,
        stop_after_steps: int | None = None,
        max_time: float | None = None,
        elapsed: float = 0.0,
    ) -> None:
        self.last_path = last_path
        self.stop_after_steps = stop_after_steps
        self.max_time = max_time
        self.signum: int | None = None
        self.time_up = False
        self.saved = False
        self.pending = False
        self._old: dict[int, Any] = {}
        self._offset = float(elapsed)
        self._start = _clock()
        self._val_started: float | None = None
        self._val_seconds: float | None = None
        self._limit_val: Any = None
        self._started = False

    # -- the clock
    def elapsed(self) -> float:
        """Seconds of the whole run so far (earlier parts included)."""
        return self._offset + _clock() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def _decide(self, trainer: L.Trainer, flag: bool) -> bool:
        """The same decision on every rank (any rank's True)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
        return flag

    def _time_left(self) -> float:
        assert self.max_time is not None
        return self.max_time - self.elapsed()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_started = _clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None:
            self._val_seconds = _clock() - self._val_started

    # -- signals
    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum
        print(
            f"\nnco train: received {signal.Signals(signum).name}; saving {self.last_path} at the end of this step",
            file=sys.stderr,
            flush=True,
        )

    # -- hooks
    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self.saved = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self.signum is not None or (
            self.stop_after_steps is not None and trainer.global_step >= self.stop_after_steps
        )
        if self.max_time is not None:
            left = self._time_left()
            last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
            # the last step of the run ends it anyway (as finished, without a late validation)
            end_of_run = last_of_epoch and trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
            self.time_up = self._decide(trainer, left <= 0) and not end_of_run
            stop = stop or self.time_up
            if last_of_epoch:
                # the epoch-end validation runs next: skip it when it cannot end in time
                late = left <= 0 or (self._val_seconds is not None and self._val_seconds > left)
                if self._limit_val is None:
                    self._limit_val = trainer.limit_val_batches
                trainer.limit_val_batches = 0 if self._decide(trainer, late) else self._limit_val
        stop = self._decide(trainer, stop)
        if not stop or self.saved:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # Last batch of the epoch: let validation and the epoch-end updates (rollout
            # baseline test) run and save in on_train_epoch_end instead.
            self.pending = True
            return
        self._save(trainer)
        # The stop itself waits for the next hook, so Lightning first logs this step's metrics.

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.saved:
            raise _StopRequested
        if self.max_time is not None and not self._started:
            # a resumed run that has used its time already: stop before its first step (its
            # checkpoint is the run's state, nothing to save)
            self._started = True
            self.time_up = self._decide(trainer, self._time_left() <= 0)
            if self.time_up:
                raise _StopRequested

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # As a Checkpoint subclass this runs after the module's on_train_epoch_end (baseline update).
        if self.pending and not self.saved:
            self._save(trainer)
        if self.saved:
            raise _StopRequested

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved:
            raise _StopRequested

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A signal that arrived outside a training step (validation, epoch end) makes Lightning
        # raise SIGTERMException at the epoch boundary: save there (rank 0 writes directly; the
        # other ranks may already be gone, so no collective save).
        if self.signum is None or self.saved or isinstance(exception, _StopRequested):
            return
        if trainer.global_rank == 0:
            ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            trainer.strategy.checkpoint_io.save_checkpoint(ckpt, self.last_path)
            self.saved = True


class _ResumedEpochProgress(Callback):
    """The progress bar of an epoch resumed in the middle: total, position, rate and ETA.

    Lightning does not call ``on_train_epoch_start`` when it restarts mid-epoch, so the bar of
    the resumed epoch was never given its total (tqdm showed ``75/?`` and no ETA) and counted
    the batches done before the interruption as done in the first second (an inflated rate). At
    the first batch of a resumed epoch this starts the bar as an epoch start would, at the
    resumed position, with the rate measured from there.
    """

    def __init__(self) -> None:
        self._seen = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._seen:
            return
        self._seen = True
        bar = trainer.progress_bar_callback
        if batch_idx == 0 or bar is None or bar.is_disabled:
            return
        bar.on_train_epoch_start(trainer, pl_module)
        if isinstance(bar, TQDMProgressBar):
            tq = bar.train_progress_bar
            tq.n = tq.last_print_n = tq.initial = batch_idx  # the rate counts from here
            tq.refresh()
        elif isinstance(bar, RichProgressBar):
            if bar.progress is not None and bar.train_progress_bar_id is not None:
                bar.progress.reset(
                    bar.train_progress_bar_id, total=bar.total_train_batches, completed=batch_idx
                )
                bar.refresh()


#: Lightning's info lines that tell a user of ``nco train`` nothing (the hardware summary, tips
#: for Lightning's cloud products, restoring from the checkpoint and the stop reason, which the
#: CLI reports itself). :func:`train` drops them while it runs; every other line is kept.
_QUIET_INFO = re.compile(
    r"(GPU|TPU|HPU|IPU) available: "
    r"|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: "
    r"|💡 Tip: "
    r"|`Trainer\.fit` stopped: "
    r"|Restoring states from the checkpoint path at "
    r"|Restored all states from the checkpoint at "
)
#: Loggers of those lines (``rank_zero_info`` logs to one of the first two).
_QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
#: Lightning warnings that do not apply to nco's training (regexes matched at the start of the
#: message), ignored while :func:`train` runs; every other warning is shown.
_QUIET_WARNINGS = (
    # steps are counted over the whole run, so rows are logged even with short epochs
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # a resumed run writes into its own checkpoint directory
    r"Checkpoint directory .* exists and is not empty",
    # batches are generated in the training step; there is no loading to parallelise
    r"The '\w+' does not have many workers",
    # a deprecation inside Lightning's own code, nothing a user can change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # a resumed run whose first validation was skipped at --max-time has no val/cost yet
    r"`ModelCheckpoint\(monitor='val/cost'\)` could not find the monitored key",
)


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET_INFO.match(record.getMessage())


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Drop :data:`_QUIET_INFO` lines and ignore :data:`_QUIET_WARNINGS` inside the block."""
    loggers = {logging.getLogger(name) for name in _QUIET_LOGGERS}
    from lightning_utilities.core import rank_zero

    loggers.add(rank_zero.log)  # the logger rank_zero_info uses, whichever package set it
    drop = _DropInfo()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    run_dir : the run directory.
    status : ``finished``, ``interrupted`` (a signal, or ``stop_after_steps``) or ``time_limit``
        (stopped at ``max_time``; ``last.ckpt`` holds the state, resume with a larger limit).
    global_step, epoch : counters at the end.
    best_val_cost : best ``val/cost`` seen (None before the first validation).
    last_checkpoint, best_checkpoint : paths (best may not exist).
    exit_code : 0 when finished or at the time limit, 128 + signal number when stopped by a
        signal.
    elapsed : wall-clock seconds of the whole run, earlier parts of a resumed run included (what
        ``max_time`` limits).
    """

    run_dir: Path
    status: str
    global_step: int
    epoch: int
    best_val_cost: float | None
    last_checkpoint: Path
    best_checkpoint: Path
    exit_code: int
    elapsed: float = 0.0


def _is_rank_zero() -> bool:
    # Lightning's DDP launcher re-runs the command with these set for the other ranks.
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _csv_logger(run_dir: Path, resume_step: int | None) -> CSVLogger:
    """CSVLogger writing exactly RUN_DIR/metrics.csv; on resume, keeps the earlier rows."""
    logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=50)
    if not _is_rank_zero():
        return logger
    metrics = run_dir / "metrics.csv"
    old_rows: list[dict[str, str]] = []
    header: list[str] = []
    if resume_step is not None and metrics.is_file():
        with metrics.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            # Rows logged after the checkpoint's step are re-logged by the resumed run.
            old_rows = [
                r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < resume_step
            ]
        metrics.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "log directory not empty": it holds config.yaml
        writer = logger.experiment  # creates the writer now (it deletes an existing metrics.csv)
    if old_rows:
        with metrics.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(old_rows)
        writer.metrics_keys = sorted(header)
    return logger


def _loggers(run_dir: Path, resume_step: int | None) -> list[Any]:
    loggers: list[Any] = [_csv_logger(run_dir, resume_step)]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return loggers
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb", version=""))
    return loggers


def _strategy(config: TrainConfig) -> Any:
    if config.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # MoE experts (and the hierarchical gate's unused branch) may get no gradient in a step.
        has_moe = (
            config.policy_config().moe is not None or config.policy_config().decoder_moe is not None
        )
        return DDPStrategy(
            find_unused_parameters=has_moe,
            process_group_backend="gloo" if config.accelerator == "cpu" else None,
        )
    return config.strategy


def _checkpoint_state(path: Path) -> tuple[int, float]:
    """``(global_step, seconds of the run so far)`` of a checkpoint (the seconds from the
    Lightning ``Timer`` state for checkpoints written before ``_GracefulStop`` kept them)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    states = ckpt.get("callbacks") or {}
    ours = states.get(_GracefulStop.__qualname__) or {}
    if "elapsed" in ours:
        elapsed = float(ours["elapsed"])
    else:
        timer = next((v for k, v in states.items() if str(k).startswith("Timer")), {}) or {}
        elapsed = float((timer.get("time_elapsed") or {}).get("train", 0.0))
    return int(ckpt.get("global_step", 0)), elapsed


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    stop_after_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a policy and write the run directory.

    Parameters
    ----------
    config : training configuration (written resolved to ``RUN_DIR/config.yaml``).
    run_dir : output folder: ``config.yaml``, ``metrics.csv``, ``checkpoints/last.ckpt`` and
        ``checkpoints/best.ckpt`` (by ``val/cost``), ``tb/`` when tensorboard is installed.
    resume : continue from ``RUN_DIR/checkpoints/last.ckpt`` (optimizer, scheduler, baseline,
        counters, the epoch position and the seconds used so far restored).
    progress_bar : show Lightning's progress bar.
    stop_after_steps : behave as if interrupted after this many steps (saves ``last.ckpt`` at
        that step boundary); for tests and time-sliced jobs.
    callbacks : extra Lightning callbacks.

    Returns
    -------
    TrainResult

    Notes
    -----
    ``config.max_time`` limits the whole run, across resumes (see :class:`_GracefulStop`): at
    the limit the run saves ``last.ckpt`` at a step boundary and returns ``status="time_limit"``;
    resuming continues with the time left (none: it stops before its first step; pass a larger
    ``max_time`` to train on). Lightning's hardware summary, tips and the warnings that do not
    apply here (:data:`_QUIET_WARNINGS`) are silenced while it runs.
    """
    started = _clock()
    with _quiet_lightning():
        return _train(config, run_dir, resume, progress_bar, stop_after_steps, callbacks, started)


def _train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool,
    progress_bar: bool,
    stop_after_steps: int | None,
    callbacks: Sequence[Callback],
    started: float,
) -> TrainResult:
    import yaml

    cfg = config.resolved()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last, best = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from")
    if not resume and last.is_file() and _is_rank_zero():
        raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    # Build everything that can reject the input (validation data, --init-from) before the run
    # directory is written, so bad input leaves no partial run behind.
    val = load_validation_set(cfg)
    ref = (
        load_reference(cfg.val_reference, val.batch_size[0])
        if isinstance(val, TensorDict)
        else None
    )
    module = REINFORCEModule(cfg, val_data=val, val_reference=ref)
    if _is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "config.yaml").open("w") as fh:
            yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
    resume_step, elapsed = _checkpoint_state(last) if resume else (None, 0.0)
    stopper = _GracefulStop(
        last,
        stop_after_steps=stop_after_steps,
        max_time=cfg.max_time,
        elapsed=elapsed + _clock() - started,
    )
    every = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        every_n_train_steps=cfg.checkpoint_every,
        save_top_k=1,
        enable_version_counter=False,
    )
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/cost",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    extra: list[Callback] = [_ResumedEpochProgress()] if resume and progress_bar else []
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=_strategy(cfg),
        precision=cfg.precision,  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        gradient_clip_val=cfg.grad_clip or None,
        logger=_loggers(run_dir, resume_step),
        callbacks=[every, best_cb, stopper, *extra, *callbacks],
        log_every_n_steps=cfg.log_every,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=False,
        default_root_dir=str(run_dir),
    )
    status, code = "finished", 0
    stopper.install()
    try:
        trainer.fit(module, ckpt_path=str(last) if resume else None)
    except _StopRequested:
        status = "interrupted"
    except SystemExit as err:  # Lightning's SIGTERMException outside a step
        if stopper.signum is None:
            raise
        del err
        status = "interrupted"
    finally:
        stopper.uninstall()
    if status == "finished" and not trainer.interrupted:
        # A finished run's last.ckpt holds the final weights (and can be extended with --epochs).
        trainer.save_checkpoint(last, weights_only=False)
    if stopper.signum is not None:
        code = 128 + int(stopper.signum)
        status = "interrupted"
    elif stopper.time_up and status == "interrupted":
        status = "time_limit"
    score = best_cb.best_model_score
    return TrainResult(
        run_dir=run_dir,
        status=status,
        global_step=int(trainer.global_step),
        epoch=int(trainer.current_epoch),
        best_val_cost=float(score) if score is not None else None,
        last_checkpoint=last,
        best_checkpoint=best,
        exit_code=code,
        elapsed=stopper.elapsed(),
    )
