"""Training data: the resumable batch-index loader, validation sets, generators, reference costs.

Training instances are generated inside the training step from the batch seeds of
:func:`nco.train_config.batch_seed`; the loaders here only hand out batch indices (training) and
slices of the fixed validation sets (validation), so a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor

from nco.envs import available, get_problem, load_dataset
from nco.references import read_reference_values
from nco.train_config import TrainConfig

__all__ = ["load_reference", "load_validation_set", "make_generator"]


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
    problem = get_problem(config.problem)
    params: dict[str, Any] = {"num_loc": size, "distribution": config.distribution}
    if config.variants:
        if not problem.has_variants:
            families = " or ".join(n for n in available() if get_problem(n).has_variants)
            raise ValueError(
                f"variants: problem {config.problem!r} has no variants (use --problem {families})"
            )
        params["variants"] = list(config.variants)
    return problem.generator(**params)


def load_reference(spec: str | None, count: int) -> Tensor | None:
    """Reference costs for ``val/gap`` (:func:`nco.references.read_reference_values`), one per
    validation instance, as a float64 tensor; None without ``spec``."""
    if spec is None:
        return None
    return torch.tensor(read_reference_values(spec, count), dtype=torch.float64)
