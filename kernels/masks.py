"""Fused feasibility masks for the environments' step (numba), with the plain torch reference.

A POMO rollout on CVRP100 steps 64 x 100 rows over 101 nodes about 200 times; the CVRP mask in
torch is five passes over that [R, N] array (compare, not, and, any over customers, all over
visited) plus temporaries, and was about a third of a decoding step in profiles. The kernel does
it in one pass per row, in parallel over rows.

:func:`cvrp_mask` dispatches: CPU tensors go to :func:`cvrp_mask_numba`, others (CUDA) to
:func:`cvrp_mask_torch`. Both return the same booleans (the comparison is done on the same
float32 values).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from nco.kernels.threads import kernel_threads

__all__ = ["cvrp_mask", "cvrp_mask_numba", "cvrp_mask_torch"]


def cvrp_mask_torch(
    demand: torch.Tensor, remaining: torch.Tensor, visited: torch.Tensor, current: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: feasible next nodes [R, N] and "every customer visited" [R].

    Parameters
    ----------
    demand : [R, N] float32 demands (node 0 the depot).
    remaining : [R] float32 capacity left, tolerance included (a customer fits when
        ``demand <= remaining``).
    visited : [R, N] bool.
    current : [R] int64 current node.

    A customer is feasible when unvisited and it fits; the depot is feasible unless the vehicle
    stands at it while some customer is still feasible (no empty routes).
    """
    mask = (demand <= remaining[:, None]) & ~visited
    mask[:, 0] = False
    mask[:, 0] = (current != 0) | ~mask.any(1)
    return mask, visited[:, 1:].all(1)


@njit(cache=True, parallel=True)
def _cvrp_mask_rows(demand, remaining, visited, current, mask, all_visited):  # pragma: no cover
    r, n = demand.shape
    for i in prange(r):
        rem = remaining[i]
        any_customer = False
        every_visited = True
        for j in range(1, n):
            v = visited[i, j]
            ok = (not v) and demand[i, j] <= rem
            mask[i, j] = ok
            any_customer |= ok
            every_visited &= v
        mask[i, 0] = current[i] != 0 or not any_customer
        all_visited[i] = every_visited


def cvrp_mask_numba(
    demand: torch.Tensor, remaining: torch.Tensor, visited: torch.Tensor, current: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`cvrp_mask_torch` in one fused pass (CPU tensors only)."""
    r, n = demand.shape
    mask = torch.empty(r, n, dtype=torch.bool)
    all_visited = torch.empty(r, dtype=torch.bool)
    kernel_threads(r * n)
    _cvrp_mask_rows(
        np.ascontiguousarray(demand.detach().numpy()),
        remaining.detach().to(torch.float32).numpy(),
        np.ascontiguousarray(visited.numpy()),
        current.numpy(),
        mask.numpy(),
        all_visited.numpy(),
    )
    return mask, all_visited


def cvrp_mask(
    demand: torch.Tensor, remaining: torch.Tensor, visited: torch.Tensor, current: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """CVRP mask [R, N] and all-visited flags [R]: numba on CPU, torch elsewhere."""
    if demand.device.type == "cpu" and demand.dtype == torch.float32 and demand.dim() == 2:
        return cvrp_mask_numba(demand, remaining, visited, current)
    return cvrp_mask_torch(demand, remaining.to(demand.dtype), visited, current)
