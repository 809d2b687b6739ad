"""Travelling salesman (TSP): generator, batched environment, cost and checker.

Tensor keys (batch [B], N cities): ``locs`` [B, N, 2] unit square, optional ``distance``
[B, N, N]. State: ``first_node`` [B], ``current_node`` [B], ``visited`` [B, N], ``i`` [B],
``action_mask`` [B, N].

The first action picks the starting city (free: POMO starts from every city); each later action
adds a city and its reward is minus the edge length; the last step also closes the tour, so the
episode return is minus the tour length. After the tour is complete the only allowed action is
staying put, at zero cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torchrl.data import Categorical
from torchrl.envs import EnvBase

from nco.envs.common import (
    DISTRIBUTIONS,
    Problem,
    as_seed,
    check_visits,
    flat_batch,
    instance_specs,
    make_rng,
    pairwise_distance,
    reset_input,
    sample_coords,
    set_random_action,
    tour_length,
)
from nco.envs.instance import Instance, Violation

INSTANCE_KEYS = ("locs",)


@dataclass(frozen=True)
class TSPGenerator:
    """Seeded TSP instances with ``num_loc`` cities in the unit square.

    ``distribution`` is ``uniform``, ``clustered`` or ``mixed``
    (see :func:`~nco.envs.common.sample_coords`).
    """

    num_loc: int = 20
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        if self.num_loc < 2:
            raise ValueError(f"num_loc must be >= 2, got {self.num_loc}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch -> TensorDict with ``locs`` [B, num_loc, 2]."""
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        g = rng if rng is not None else make_rng(as_seed(seed), device)
        locs = sample_coords(b, self.num_loc, self.distribution, g, device)
        return TensorDict({"locs": locs}, batch_size=[b], device=device)


class TSPEnv(EnvBase):
    """Batched TSP environment (TorchRL ``EnvBase``, stateless over the TensorDict).

    Not batch locked: ``reset(td)`` takes instance data of any batch shape; an empty
    ``TensorDict(batch_size=[B])`` asks for B generated instances.
    """

    batch_locked = False

    def __init__(
        self,
        generator: TSPGenerator | None = None,
        *,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        **generator_params: Any,
    ) -> None:
        super().__init__(device=device)
        self.generator = generator if generator is not None else TSPGenerator(**generator_params)
        self._rng = make_rng(seed, self.device)
        n = self.generator.num_loc
        instance_specs(self, n, {"first_node": Categorical(n, shape=self.batch_size, dtype=torch.int64, device=self.device)})

    def _set_seed(self, seed: int | None) -> None:
        self._rng = make_rng(seed, self.device)

    def rand_action(self, tensordict: TensorDict | None = None) -> TensorDict:
        """Random feasible action (uniform over the mask), written into ``tensordict``."""
        assert tensordict is not None
        return set_random_action(self, tensordict)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs: object) -> TensorDict:
        return flat_batch(self._reset_flat, reset_input(self, tensordict, ("locs", "distance")))

    def _reset_flat(self, td: TensorDict) -> TensorDict:
        b, n = td["locs"].shape[:2]
        dev = td["locs"].device
        zeros = torch.zeros(b, dtype=torch.int64, device=dev)
        out = td.select(*[k for k in ("locs", "distance", "scale", "offset") if k in td.keys()])
        out.update(
            {
                "first_node": zeros,
                "current_node": zeros.clone(),
                "visited": torch.zeros(b, n, dtype=torch.bool, device=dev),
                "i": zeros.clone(),
                "action_mask": torch.ones(b, n, dtype=torch.bool, device=dev),
                "done": torch.zeros(b, 1, dtype=torch.bool, device=dev),
                "terminated": torch.zeros(b, 1, dtype=torch.bool, device=dev),
            }
        )
        return out

    def _step(self, tensordict: TensorDict) -> TensorDict:
        return flat_batch(self._step_flat, tensordict)

    def _step_flat(self, td: TensorDict) -> TensorDict:
        action = td["action"]
        first_step = td["i"] == 0
        first = torch.where(first_step, action, td["first_node"])
        step_len = torch.where(first_step, torch.zeros((), device=action.device), pairwise_distance(td, td["current_node"], action))
        visited = td["visited"].scatter(1, action[:, None], True)
        done = visited.all(1) & ~td["done"].squeeze(1)
        # Closing the tour is charged on the step that completes it, once.
        step_len = step_len + torch.where(done, pairwise_distance(td, action, first), torch.zeros((), device=action.device))
        finished = visited.all(1)
        mask = ~visited
        mask = torch.where(finished[:, None], torch.nn.functional.one_hot(action, visited.shape[1]).bool(), mask)
        out = td.select(*[k for k in ("locs", "distance", "scale", "offset") if k in td.keys()])
        out.update(
            {
                "first_node": first,
                "current_node": action,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": mask,
                "reward": -step_len[:, None].to(torch.float32),
                "done": finished[:, None],
                "terminated": finished[:, None],
            }
        )
        return out


# ----------------------------------------------------------------------------- pure functions
def cost(td: TensorDict, tours: torch.Tensor) -> torch.Tensor:
    """Closed tour length [B] of permutations ``tours`` [B, N]."""
    return tour_length(td, tours, start=None, closed=True)


def check_core(num_nodes: int, tour: Sequence[int]) -> list[Violation]:
    """Independent TSP checker: the tour visits every city exactly once."""
    return check_visits([list(tour)], range(num_nodes))


def check(td: TensorDict, tours: torch.Tensor) -> list[list[Violation]]:
    """Check permutations [B, T] (padding after completion repeats the last city)."""
    n = td["locs"].shape[-2]
    seqs = tours.detach().cpu().numpy()
    return [check_core(n, _strip_padding(seqs[b], n)) for b in range(seqs.shape[0])]


def _strip_padding(seq: Sequence[int], n: int) -> list[int]:
    s = [int(v) for v in seq]
    if len(s) > n and all(v == s[n - 1] for v in s[n:]):
        s = s[:n]
    return s


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[Violation]:
    """Check a TSP solution (one route holding the whole tour) in instance units."""
    if len(routes) != 1:
        return [Violation("vehicles", f"a TSP tour is one route, got {len(routes)} routes"), *check_visits(routes, range(instance.num_nodes))]
    return check_core(instance.num_nodes, routes[0])


# ----------------------------------------------------------------------------- policy interface
def node_features(td: TensorDict) -> torch.Tensor:
    """[B, N, 2]: x, y."""
    return td["locs"]


def state_features(td: TensorDict) -> torch.Tensor:
    """[B, 0]: the TSP context is the first and current city, no scalar state."""
    return td["locs"].new_zeros(td["locs"].shape[0], 0)


def num_starts(td: TensorDict) -> int:
    """POMO starts: one per city."""
    return int(td["locs"].shape[-2])


def start_nodes(td: TensorDict, n: int) -> torch.Tensor:
    """First actions [B, n] for POMO multistart: cities 0..n-1."""
    b = td["locs"].shape[0]
    return torch.arange(n, device=td["locs"].device).expand(b, n)


PROBLEM = Problem(
    name="tsp",
    title="Travelling salesman",
    env_cls=TSPEnv,
    generator_cls=TSPGenerator,
    has_depot=False,
    cost=cost,
    check=check,
    check_routes=check_routes,
    node_features=node_features,
    state_features=state_features,
    num_starts=num_starts,
    start_nodes=start_nodes,
    instance_keys=INSTANCE_KEYS,
    instance_suffix=".tsp",
    solution_suffix=".tour",
    file_type="TSP",
    min_nodes=2,
)
