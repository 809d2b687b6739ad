"""The training configuration: :class:`TrainConfig`, its option values and the batch seeds.

A light module: importing it loads neither torch nor lightning (the problem registry, the policy
presets and numpy are imported when a configuration is built), so that ``nco train --help`` can
show every default without the start-up cost of the trainer. :mod:`nco.train` re-exports all of
it; import it from there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nco.policies import PolicyConfig

__all__ = [
    "BASELINES",
    "LR_SCHEDULES",
    "MOE_ROUTERS",
    "PRECISIONS",
    "REWARD_NORMS",
    "TrainConfig",
    "batch_seed",
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
        per variant for multi-variant problems. None = the problem's ``reward_norm``: ``std`` for
        ``mtvrp`` (RouteFinder's multi-task normalisation; measurements in
        ``benchmarks/README.md``), else ``none``.
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
    max_time : wall-clock limit in seconds of the whole run (None = none): set-up, training,
        validation and checkpointing, summed over resumes. The run stops at the first step
        boundary at the limit (saving ``last.ckpt``, no final validation); a validation that
        would not end within the limit is skipped.
    checkpoint_every : steps between ``last.ckpt`` saves.
    log_every : steps between metric rows.
    accelerator, devices, strategy, num_nodes : passed to ``lightning.Trainer`` (``devices`` per
        node; several nodes take ``strategy="ddp"``, launched by torchrun or SLURM).
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
    num_nodes: int = 1

    def __post_init__(self) -> None:
        from nco.envs import available, get_problem
        from nco.envs.common import DISTRIBUTIONS
        from nco.policies import PRESETS, STRATEGIES, PolicyConfig

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
        problem = get_problem(self.problem)
        least = problem.min_nodes
        if lo < least or min(self.val_sizes or (least,)) < least:
            name, value = ("size", self.size) if lo < least else ("val_sizes", self.val_sizes)
            raise bad(
                name, value, f"at least {least} {'customers' if problem.has_depot else 'cities'}"
            )
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
        if isinstance(self.num_nodes, bool) or not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise bad("num_nodes", self.num_nodes, "a positive integer")
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
        from nco.policies import PolicyConfig, get_preset

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
        from nco.envs import get_problem

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
        # the problem's default: "std" where variants' costs differ in scale (a VRPTW route is
        # ~2x an OVRP one) and unnormalised advantages let the costly variants dominate
        reward_norm = self.reward_norm or get_problem(self.problem).reward_norm
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
    import numpy as np

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
    import numpy as np

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


# ============================================================================= seeds
def batch_seed(
    seed: int, epoch: int, rank: int, index: int, stream: int = _STREAM_INSTANCES
) -> int:
    """A 62-bit seed for batch ``index`` of ``epoch`` on ``rank`` (independent per stream)."""
    import numpy as np

    state = np.random.SeedSequence(
        [int(seed), int(epoch), int(rank), int(index), int(stream)]
    ).generate_state(2, np.uint32)
    return int((int(state[0]) << 30) ^ int(state[1])) & ((1 << 62) - 1)
