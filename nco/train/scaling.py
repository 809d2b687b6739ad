"""Advantage normalisation by a running scale, per variant (RouteFinder's reward normalisation)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nco.train_config import REWARD_NORMS

__all__ = ["RewardScaler"]


class RewardScaler(nn.Module):
    """Divides advantages by a running scale (RouteFinder-style reward normalisation).

    ``std``: sqrt of an EMA of mean(adv^2); ``mean_abs``: EMA of mean(|adv|). The statistic is
    kept per group (the ``variant`` of multi-variant instances, RouteFinder's multi-task reward
    normalisation: a VRPTW's costs and advantages live on another scale than an OVRP's), in
    buffers so checkpoints carry it. Without groups every instance is in group 0.
    """

    #: capacity of the per-group statistics (variant indices must be below it)
    MAX_GROUPS = 64
    stat: Tensor  # buffers, declared for type checkers
    initialized: Tensor

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
