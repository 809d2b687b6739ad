"""The fused CVRP mask kernel agrees with its torch reference."""

from __future__ import annotations

import pytest
import torch

from nco.kernels.masks import cvrp_mask, cvrp_mask_numba, cvrp_mask_torch


def _random_state(r: int, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    demand = torch.randint(1, 10, (r, n), generator=g).float() / 40.0
    demand[:, 0] = 0.0
    visited = torch.rand(r, n, generator=g) < torch.rand(r, 1, generator=g)
    visited[:, 0] = False
    visited[: r // 4, 1:] = True  # some rows have served everyone
    remaining = torch.rand(r, generator=g)
    remaining[r // 4 : r // 2] = 0.0  # some rows fit nothing
    current = torch.randint(0, n, (r,), generator=g)
    current[::3] = 0
    return demand, remaining, visited, current


@pytest.mark.parametrize(("r", "n", "seed"), [(1, 2, 0), (7, 11, 1), (640, 101, 2), (33, 51, 3)])
def test_numba_mask_equals_reference(r, n, seed):
    args = _random_state(r, n, seed)
    want_mask, want_all = cvrp_mask_torch(*args)
    got_mask, got_all = cvrp_mask_numba(*args)
    assert torch.equal(got_mask, want_mask)
    assert torch.equal(got_all, want_all)
    # the depot rule: at the depot with a feasible customer left, the depot is masked
    at_depot = args[3] == 0
    has_customer = want_mask[:, 1:].any(1)
    assert torch.equal(want_mask[:, 0], ~(at_depot & has_customer))


def test_boundary_demand_equal_to_remaining_fits():
    demand = torch.tensor([[0.0, 0.25, 0.5]])
    visited = torch.zeros(1, 3, dtype=torch.bool)
    remaining = torch.tensor([0.25])
    mask, _ = cvrp_mask(demand, remaining, visited, torch.tensor([1]))
    assert mask.tolist() == [[True, True, False]]


def test_dispatch_uses_torch_for_other_dtypes():
    args = _random_state(16, 9, 4)
    demand64 = args[0].double()
    mask, every = cvrp_mask(demand64, *args[1:])
    want, want_all = cvrp_mask_torch(*args)
    assert torch.equal(mask, want) and torch.equal(every, want_all)
