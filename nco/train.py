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
  batch-index loader) lives in the Lightning checkpoint.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tensordict import TensorDict
from torch import Tensor, nn
from torchrl.envs import EnvBase

from nco.envs import Problem, get_problem, load_dataset
from nco.envs.common import DISTRIBUTIONS
from nco.policies import (
    PRESETS,
    STRATEGIES,
    AttentionPolicy,
    DecodeConfig,
    PolicyConfig,
    build_policy,
    get_preset,
)

__all__ = [
    "BASELINES",
    "LR_SCHEDULES",
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

BASELINES = ("rollout", "exponential", "shared", "none")
LR_SCHEDULES = ("none", "multistep", "cosine")
REWARD_NORMS = ("none", "std", "mean_abs")
PRECISIONS = ("32", "32-true", "64", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
MOE_ROUTERS = ("topk", "loss_free", "expert_choice", "hierarchical")

#: Streams of :func:`batch_seed` (instances and sampling must not share a stream).
_STREAM_INSTANCES, _STREAM_SAMPLING, _STREAM_BASELINE_SET, _STREAM_SIZE = 0, 1, 2, 3


# ============================================================================= configuration
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the run directory is the CLI's business).

    Field names are the ``nco train`` option names with ``_`` for ``-``; a YAML/TOML ``--config``
    file uses the same names. ``None`` means "the preset's default" (see :meth:`resolved`).

    Parameters
    ----------
    problem, size, distribution : what to train on (``size`` = customers or cities). ``size`` is
        an int or a range: ``(lo, hi)``, ``[lo, hi]`` or ``"lo:hi"`` (stored as the tuple; ``lo ==
        hi`` is the int). With a range every training batch has its own size ``n``, drawn
        uniformly from ``lo..hi`` (see :meth:`train_size`).
    preset : policy preset (``am``, ``pomo``, ``pomo-moe``, ``rf-transformer``).
    policy : extra :class:`~nco.policies.PolicyConfig` fields (e.g. ``{"d_model": 64}``).
    moe_router, moe_experts, moe_k : MoE overrides (encoder router; experts and k for all MoEs).
        Giving one on a preset without MoE adds an MoE to every encoder layer.
    baseline : ``rollout`` | ``exponential`` | ``shared`` | ``none``; None = ``rollout`` for
        single-start presets, ``shared`` for POMO-style multistart presets.
    decoding : training decoding strategy; None = the preset's ``train_decoding``.
    num_starts : POMO starts (None = the problem's default: every customer/city).
    train_starts : POMO over a random subset of starts: the multistart training decoding uses
        ``min(train_starts, the problem's number of start candidates)`` distinct random starts
        per instance (``DecodeConfig(start_choice="random")``, drawn from the batch's sampling
        stream), so the rollouts per instance stay K instead of growing with ``n`` (a step's work
        ~ batch x K x n**2 instead of batch x n**3). None =
        ``num_starts`` first starts as before. Needs a multistart decoding; excludes
        ``num_starts``.
    num_samples : samples per instance (``sampling``) or per start (``multistart_sampling``).
    augment : 1 or 8 (dihedral augmentation of the training batch; ``shared`` averages over it).
    batch_size : instances per step and process (with a size range: at the smallest size, see
        :meth:`batch_size_at`).
    batch_power : ``p`` of the batch scaling of a size range, ``batch(n) = max(1, round(
        batch_size * (lo / n) ** p))``. None = the value that keeps ``rows x n**2`` constant (rows
        = instances x rollouts per instance; the decoder's memory and work per step, ``n``
        decoding steps attending over ``n`` nodes each, and the encoder's ``n x n`` attention):
        2, or 3 for a multistart decoding over every customer (rows grow with ``n`` there too).
        The decoding batches of generated validation sets are scaled by the same rule (never
        above ``val_batch_size``; a ``val_data`` file uses ``val_batch_size`` as given).
    instances_per_epoch : instances per epoch over all processes (it fixes the steps per epoch,
        ``instances_per_epoch / (batch_size x processes)``; with a size range each of these steps
        has its scaled batch, so an epoch holds fewer instances).
    epochs, lr, weight_decay : Adam schedule length, learning rate, L2 weight decay.
    lr_schedule : ``none`` | ``multistep`` (x ``lr_gamma`` at the ``lr_milestones`` fractions of
        ``epochs``) | ``cosine`` (to 0 over ``epochs``); stepped once per epoch.
    grad_clip : gradient-norm clip (0 disables).
    precision : Lightning precision (``32``, ``16-mixed``, ``bf16-mixed``, ...).
    aux_loss_weight : weight of the MoE auxiliary (balance + z) loss.
    reward_norm : ``none`` | ``std`` | ``mean_abs``: divide advantages by a running scale, kept
        per variant for multi-variant problems. None = ``std`` for ``mtvrp`` (RouteFinder's
        multi-task normalisation; measurements in ``benchmarks/README.md``), else ``none``.
    reward_norm_decay : decay of that running estimate.
    ema_beta : decay of the ``exponential`` baseline.
    bl_eval_size, bl_alpha : ``rollout`` baseline: held instances for the epoch-end paired
        one-sided t-test, and its significance level.
    val_size, val_seed, val_data, val_reference, val_batch_size : validation set (generated from
        ``val_seed`` unless ``val_data`` names an ``nco generate`` ``.pt`` file), optional reference
        costs for ``val/gap`` (CSV file or comma-separated numbers), decoding batch size.
    val_sizes : generate ``val_size`` instances at each of these sizes (from ``val_seed``) and log
        ``val/cost`` (mean over all of them) and ``val/cost_n{size}`` per size. None = ``(lo, hi)``
        for a size range, the training size otherwise (one set, ``val/cost`` only). A string
        ``"100,500"`` is accepted. Several validation sets exclude ``val_data`` and
        ``val_reference`` (the reference costs and ``val/gap`` are for one set).
    variants : multi-variant problems (``mtvrp``): the variants mixed uniformly in training and
        validation batches (None = the generator's default).
    seed : seeds the model initialisation and every training batch.
    init_from : checkpoint (path, run directory or shipped name) whose policy weights start this
        run instead of a random initialisation (fine-tuning, e.g. CVRP100 from CVRP50); it must be
        for the same problem and policy architecture. Optimizer state is not taken from it.
    max_time : wall-clock limit in seconds (None = none).
    checkpoint_every : steps between ``last.ckpt`` saves.
    log_every : steps between metric rows.
    accelerator, devices, strategy : passed to ``lightning.Trainer``.
    """

    problem: str = "tsp"
    size: int | tuple[int, int] = 20
    distribution: str = "uniform"
    preset: str = "am"
    policy: dict[str, Any] = field(default_factory=dict)
    moe_router: str | None = None
    moe_experts: int | None = None
    moe_k: int | None = None
    baseline: str | None = None
    decoding: str | None = None
    num_starts: int | None = None
    train_starts: int | None = None
    num_samples: int = 1
    augment: int = 1
    batch_size: int = 64
    batch_power: float | None = None
    instances_per_epoch: int = 6400
    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-6
    lr_schedule: str = "none"
    lr_milestones: tuple[float, ...] = (0.8, 0.95)
    lr_gamma: float = 0.1
    grad_clip: float = 1.0
    precision: str = "32"
    aux_loss_weight: float = 0.01
    reward_norm: str | None = None
    reward_norm_decay: float = 0.99
    ema_beta: float = 0.8
    bl_eval_size: int = 1000
    bl_alpha: float = 0.05
    val_size: int = 1000
    val_seed: int = 4321
    val_data: str | None = None
    val_reference: str | None = None
    val_batch_size: int = 500
    val_sizes: tuple[int, ...] | None = None
    variants: tuple[str, ...] | None = None
    seed: int = 1234
    init_from: str | None = None
    max_time: float | None = None
    checkpoint_every: int = 100
    log_every: int = 10
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        from nco.envs import available

        def bad(name: str, value: Any, expected: str) -> ValueError:
            return ValueError(f"{name.replace('_', '-')}: expected {expected}, got {value!r}")

        object.__setattr__(self, "lr_milestones", tuple(float(x) for x in self.lr_milestones))
        object.__setattr__(self, "precision", str(self.precision))
        object.__setattr__(self, "policy", dict(self.policy or {}))
        object.__setattr__(self, "size", _parse_size(self.size))
        if self.val_sizes is not None:
            object.__setattr__(self, "val_sizes", _parse_sizes(self.val_sizes))
        if isinstance(self.variants, str):
            object.__setattr__(
                self, "variants", tuple(v.strip() for v in self.variants.split(",") if v.strip())
            )
        elif self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))
        choices = {
            "problem": available(),
            "distribution": get_problem(self.problem).distributions
            if self.problem in available()
            else DISTRIBUTIONS,
            "preset": PRESETS,
            "lr_schedule": LR_SCHEDULES,
            "precision": PRECISIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(name, getattr(self, name), "one of " + ", ".join(map(str, allowed)))
        optional_choices = {
            "baseline": BASELINES,
            "decoding": STRATEGIES[:4],
            "moe_router": MOE_ROUTERS,
            "reward_norm": REWARD_NORMS,
        }
        for name, allowed in optional_choices.items():
            if getattr(self, name) is not None and getattr(self, name) not in allowed:
                raise bad(name, getattr(self, name), "one of " + ", ".join(allowed))
        positive = (
            "num_samples",
            "batch_size",
            "instances_per_epoch",
            "epochs",
            "bl_eval_size",
            "val_size",
            "val_batch_size",
            "checkpoint_every",
            "log_every",
        )
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, v, "a positive integer")
        for name in ("num_starts", "train_starts", "moe_experts", "moe_k"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise bad(name, v, "a positive integer")
        if self.augment not in (1, 8):
            raise bad("augment", self.augment, "1 or 8")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", self.lr, "a positive number")
        for name in ("weight_decay", "grad_clip", "aux_loss_weight"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise bad(name, v, "a non-negative number")
        for name in ("reward_norm_decay", "ema_beta"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "a number in [0, 1)")
        if not 0 < self.lr_gamma <= 1:
            raise bad("lr_gamma", self.lr_gamma, "a number in (0, 1]")
        if not 0 < self.bl_alpha < 1:
            raise bad("bl_alpha", self.bl_alpha, "a number in (0, 1)")
        if any(not 0 < m <= 1 for m in self.lr_milestones):
            raise bad("lr_milestones", self.lr_milestones, "fractions of the epochs in (0, 1]")
        for name in ("seed", "val_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(name, v, "a non-negative integer")
        if self.max_time is not None and not self.max_time > 0:
            raise bad("max_time", self.max_time, "a positive number of seconds")
        lo, _ = self.size_bounds
        if self.problem == "tsp" and (lo < 2 or min(self.val_sizes or (2,)) < 2):
            name, value = ("size", self.size) if lo < 2 else ("val_sizes", self.val_sizes)
            raise bad(name, value, "at least 2 cities")
        if self.batch_power is not None:
            p = self.batch_power
            if isinstance(p, bool) or not isinstance(p, int | float) or not (0 <= p < 10):
                raise bad("batch_power", p, "a number in [0, 10)")
            object.__setattr__(self, "batch_power", float(p))
        if self.train_starts is not None and self.num_starts is not None:
            raise ValueError(
                "train-starts: cannot be combined with num-starts (train-starts K samples K "
                "random starts; num-starts takes the first ones)"
            )
        if self.val_data is not None and self.val_sizes is not None:
            raise ValueError(
                "val-sizes: cannot be combined with val-data (the file is the validation set)"
            )
        if self.multi_validation and self.val_reference is not None:
            raise ValueError(
                "val-reference: reference costs are for one validation set; they cannot be "
                "combined with val-sizes or a size range (use --val-data FILE)"
            )
        dev = self.devices
        if not (dev == "auto" or (isinstance(dev, int) and not isinstance(dev, bool) and dev >= 1)):
            raise bad("devices", dev, "a positive integer or 'auto'")
        unknown = set(self.policy) - {f.name for f in dataclasses.fields(PolicyConfig)}
        if unknown:
            raise ValueError(f"policy: unknown PolicyConfig field(s) {', '.join(sorted(unknown))}")

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists) for YAML files and checkpoints."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = (
                list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
            )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; accepts ``-`` or ``_`` in names; unknown names raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        if "lr_milestones" in kw and kw["lr_milestones"] is not None:
            kw["lr_milestones"] = tuple(kw["lr_milestones"])
        if isinstance(kw.get("devices"), str) and kw["devices"].isdigit():
            kw["devices"] = int(kw["devices"])
        return cls(**kw)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ sizes
    @property
    def size_bounds(self) -> tuple[int, int]:
        """``(lo, hi)`` of the training sizes (``(n, n)`` for one size)."""
        if isinstance(self.size, tuple):
            return self.size
        return self.size, self.size

    @property
    def multi_size(self) -> bool:
        """True when ``size`` is a range (each batch draws its own size)."""
        return isinstance(self.size, tuple)

    @property
    def max_size(self) -> int:
        """The largest training size (what a checkpoint's ``info["size"]`` records)."""
        return self.size_bounds[1]

    @property
    def size_label(self) -> str:
        """``"50"`` or ``"50-500"`` (run directory names)."""
        lo, hi = self.size_bounds
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def multi_validation(self) -> bool:
        """True when validation uses one generated set per size of :attr:`validation_sizes`
        (a size range or ``val_sizes``, no ``val_data``), logged per size."""
        return self.val_data is None and (self.multi_size or self.val_sizes is not None)

    @property
    def validation_sizes(self) -> tuple[int, ...]:
        """The sizes of the generated validation sets (``val_sizes``, else ``(lo, hi)`` of a
        range, else the training size)."""
        if self.val_sizes is not None:
            return self.val_sizes
        lo, hi = self.size_bounds
        return (lo, hi) if lo != hi else (lo,)

    def _power(self) -> float:
        if self.batch_power is not None:
            return self.batch_power
        decoding = self.decoding or self.policy_config().train_decoding
        every_start = (
            decoding.startswith("multistart")
            and self.num_starts is None
            and self.train_starts is None
        )
        return 3.0 if every_start else 2.0

    def train_size(self, epoch: int, index: int) -> int:
        """Size of training batch ``index`` of ``epoch``: uniform on ``lo..hi`` from the
        :func:`batch_seed` stream ``(seed, epoch, 0, index)`` (the same on every rank, and the
        same after a resume); the size itself for an int ``size``."""
        lo, hi = self.size_bounds
        if lo == hi:
            return lo
        # a 62-bit SeedSequence draw modulo the range (bias < 2**-50; no numpy stream involved)
        return lo + batch_seed(self.seed, epoch, 0, index, _STREAM_SIZE) % (hi - lo + 1)

    def batch_size_at(self, n: int) -> int:
        """Training batch at size ``n``: ``max(1, round(batch_size * (lo / n) ** p))`` (``p`` =
        ``batch_power``, see the class doc); ``batch_size`` for an int ``size``."""
        lo, hi = self.size_bounds
        if lo == hi:
            return self.batch_size
        return _scaled(self.batch_size, lo, n, self._power())

    def val_batch_size_at(self, n: int) -> int:
        """Validation decoding batch at size ``n``: ``val_batch_size`` scaled as
        :meth:`batch_size_at` relative to the smallest training size (never above it)."""
        return _scaled(self.val_batch_size, self.size_bounds[0], n, self._power())

    # ------------------------------------------------------------------ resolution
    def policy_config(self) -> PolicyConfig:
        """The :class:`PolicyConfig` of this run: preset, then ``policy`` fields, then MoE flags."""
        base = get_preset(self.preset).to_dict()
        base.update(self.policy)
        if self.moe_router is not None or self.moe_experts is not None or self.moe_k is not None:
            enc = dict(base.get("moe") or {})
            if self.moe_router is not None:
                enc["router"] = self.moe_router
            for key in ("moe", "decoder_moe"):
                target = enc if key == "moe" else base.get(key)
                if target is None:
                    continue
                target = dict(target)
                if self.moe_experts is not None:
                    target["num_experts"] = self.moe_experts
                if self.moe_k is not None:
                    target["k"] = self.moe_k
                base[key] = target
        try:
            return PolicyConfig.from_dict(base)
        except TypeError as err:
            raise ValueError(f"policy: {err}") from err

    def resolved(self) -> TrainConfig:
        """Fill the defaults that depend on other options (``baseline``, ``decoding``,
        ``reward_norm``) and validate the policy."""
        pcfg = self.policy_config()
        decoding = self.decoding or pcfg.train_decoding
        if decoding not in ("sampling", "multistart_sampling", "greedy", "multistart_greedy"):
            raise ValueError(f"decoding: training needs a sampling strategy, got {decoding!r}")
        baseline = self.baseline or ("shared" if decoding.startswith("multistart") else "rollout")
        if (
            baseline == "shared"
            and not decoding.startswith("multistart")
            and self.num_samples * self.augment < 2
        ):
            raise ValueError(
                "baseline shared needs several rollouts per instance: use a multistart decoding, num-samples > 1 or augment 8"
            )
        # variants' costs differ in scale (a VRPTW route is ~2x an OVRP one); unnormalised
        # advantages let the costly variants dominate the gradient
        reward_norm = self.reward_norm or ("std" if self.problem == "mtvrp" else "none")
        if self.train_starts is not None and not decoding.startswith("multistart"):
            raise ValueError(
                f"train-starts: needs a multistart decoding (POMO), this run decodes with {decoding}"
            )
        extra: dict[str, Any] = {}
        if self.multi_size:
            if baseline == "rollout":
                raise ValueError(
                    "baseline: rollout needs one training size (its held set and t-test are per "
                    "size); with a size range use --baseline shared, exponential or none"
                )
            extra = {
                "val_sizes": self.validation_sizes if self.val_data is None else None,
                "batch_power": self.replace(decoding=decoding)._power(),
            }
        return self.replace(baseline=baseline, decoding=decoding, reward_norm=reward_norm, **extra)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Optimizer steps per epoch and process."""
        return max(1, math.ceil(self.instances_per_epoch / (self.batch_size * world_size)))


# ============================================================================= sizes
_SIZE_EXPECTED = "N or LO:HI with 1 <= LO <= HI"


def _parse_size(value: Any) -> int | tuple[int, int]:
    """``20``, ``"20"``, ``"50:500"``, ``(50, 500)`` or ``[50, 500]`` -> int or (lo, hi)."""

    def fail() -> ValueError:
        return ValueError(f"size: expected {_SIZE_EXPECTED}, got {value!r}")

    parts: list[Any]
    if isinstance(value, str):
        parts = [x.strip() for x in value.split(":")]
        try:
            parts = [int(x) for x in parts]
        except ValueError:
            raise fail() from None
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) not in (1, 2) or any(
        isinstance(x, bool) or not isinstance(x, int | np.integer) for x in parts
    ):
        raise fail()
    lo, hi = int(parts[0]), int(parts[-1])
    if not 1 <= lo <= hi:
        raise fail()
    return lo if lo == hi else (lo, hi)


def _parse_sizes(value: Any) -> tuple[int, ...]:
    """``"100,500"`` or ``[100, 500]`` -> sorted distinct sizes."""

    def fail() -> ValueError:
        return ValueError(f"val-sizes: expected comma-separated positive integers, got {value!r}")

    items: list[Any]
    if isinstance(value, str):
        try:
            items = [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise fail() from None
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise fail()
    if not items or any(
        isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1 for x in items
    ):
        raise fail()
    return tuple(sorted({int(x) for x in items}))


def _scaled(batch: int, lo: int, n: int, power: float) -> int:
    """``max(1, round(batch * min(1, lo / n) ** power))``."""
    return max(1, round(batch * min(1.0, lo / n) ** power))


# ============================================================================= seeds and data
def batch_seed(
    seed: int, epoch: int, rank: int, index: int, stream: int = _STREAM_INSTANCES
) -> int:
    """A 62-bit seed for batch ``index`` of ``epoch`` on ``rank`` (independent per stream)."""
    state = np.random.SeedSequence(
        [int(seed), int(epoch), int(rank), int(index), int(stream)]
    ).generate_state(2, np.uint32)
    return int((int(state[0]) << 30) ^ int(state[1])) & ((1 << 62) - 1)


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
class _StopRequested(Exception):
    """Raised at a step boundary after ``last.ckpt`` was saved on a signal (or a step limit)."""


class _GracefulStop(Checkpoint):
    """On SIGINT/SIGTERM: save ``last.ckpt`` at the next step boundary, then stop the run.

    The signal handler only sets a flag (saving inside a handler could catch the optimizer
    between updates); the save happens in ``on_train_batch_end``, the same point at which
    ``ModelCheckpoint(every_n_train_steps)`` saves, so the checkpoint resumes exactly. A second
    Ctrl-C interrupts immediately. Also used by tests to stop after a given number of steps.
    """

    def __init__(self, last_path: Path, *, stop_after_steps: int | None = None) -> None:
        self.last_path = last_path
        self.stop_after_steps = stop_after_steps
        self.signum: int | None = None
        self.saved = False
        self.pending = False
        self._old: dict[int, Any] = {}

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
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
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


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    run_dir : the run directory.
    status : ``finished`` or ``interrupted``.
    global_step, epoch : counters at the end.
    best_val_cost : best ``val/cost`` seen (None before the first validation).
    last_checkpoint, best_checkpoint : paths (best may not exist).
    exit_code : 0 when finished, 128 + signal number when stopped by a signal.
    """

    run_dir: Path
    status: str
    global_step: int
    epoch: int
    best_val_cost: float | None
    last_checkpoint: Path
    best_checkpoint: Path
    exit_code: int


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


def _checkpoint_step(path: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt.get("global_step", 0))


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
        counters and the epoch position restored).
    progress_bar : show Lightning's progress bar.
    stop_after_steps : behave as if interrupted after this many steps (saves ``last.ckpt`` at
        that step boundary); for tests and time-sliced jobs.
    callbacks : extra Lightning callbacks.

    Returns
    -------
    TrainResult
    """
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
    stopper = _GracefulStop(last, stop_after_steps=stop_after_steps)
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
    resume_step = _checkpoint_step(last) if resume else None
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=_strategy(cfg),
        precision=cfg.precision,  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        max_time=timedelta(seconds=cfg.max_time) if cfg.max_time else None,
        gradient_clip_val=cfg.grad_clip or None,
        logger=_loggers(run_dir, resume_step),
        callbacks=[every, best_cb, stopper, *callbacks],
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
    )
