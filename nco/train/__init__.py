"""REINFORCE training of construction policies with pluggable baselines (one LightningModule).

>>> from nco.train import TrainConfig, train
>>> cfg = TrainConfig(problem="tsp", size=20, preset="am", epochs=2)
>>> result = train(cfg, "runs/tsp20-am")            # doctest: +SKIP

Modules, one concern each (import the names from :mod:`nco.train`):

* :mod:`nco.train_config` (outside this package, light: no torch or lightning, for the CLI's
  parser): :class:`TrainConfig`, the option values and :func:`batch_seed`, re-exported here;
* :mod:`nco.train.data`: the resumable batch-index loader, validation sets, generators and the
  ``--val-reference`` reader;
* :mod:`nco.train.evaluation`: costs of a deterministic decoding (:func:`decode_costs`);
* :mod:`nco.train.baselines`: the REINFORCE baselines and :data:`BASELINE_REGISTRY`;
* :mod:`nco.train.scaling`: :class:`RewardScaler`;
* :mod:`nco.train.module`: :class:`REINFORCEModule`;
* :mod:`nco.train.callbacks`: graceful stop, resumed-epoch progress, Lightning log filters;
* :mod:`nco.train.run`: :func:`train`, its loggers and strategy, :class:`TrainResult`.

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
"""

from __future__ import annotations

from nco.train.baselines import (
    BASELINE_REGISTRY,
    Baseline,
    BaselineFactory,
    ExponentialBaseline,
    NoBaseline,
    RolloutBaseline,
    SharedBaseline,
    make_baseline,
    paired_ttest_one_sided,
)
from nco.train.data import load_reference, load_validation_set, make_generator
from nco.train.evaluation import decode_costs
from nco.train.module import REINFORCEModule
from nco.train.run import TrainResult, train
from nco.train.scaling import RewardScaler
from nco.train_config import (
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
    "BASELINE_REGISTRY",
    "LR_SCHEDULES",
    "MOE_ROUTERS",
    "PRECISIONS",
    "REWARD_NORMS",
    "Baseline",
    "BaselineFactory",
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
    "make_generator",
    "paired_ttest_one_sided",
    "train",
]
