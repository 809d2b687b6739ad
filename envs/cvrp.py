"""Capacitated vehicle routing (CVRP): generator, batched environment, cost and checker.

Tensor keys (batch [B], N nodes, node 0 the depot):
``locs`` [B, N, 2] unit square; ``demand`` [B, N] divided by the capacity (0 at the depot);
``capacity`` [B] in original units (for reporting); optional ``distance`` [B, N, N].
State: ``current_node`` [B], ``used_capacity`` [B] (fraction of capacity), ``visited`` [B, N],
``i`` [B] step counter, ``action_mask`` [B, N].

An action is the next node. Every step's reward is minus the distance travelled, so the
episode return is minus the total route length. An episode ends when every customer has been
served and the vehicle is back at the depot; after that only the depot is allowed (padding) at
zero cost, so batches of different episode lengths can be stepped together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Unbounded
from torchrl.envs import EnvBase

from nco.envs.common import (
    DISTRIBUTIONS,
    Problem,
    as_seed,
    check_fleet,
    check_visits,
    flat_batch,
    instance_specs,
    make_rng,
    numpy_distance,
    pairwise_distance,
    reset_input,
    sample_coords,
    set_random_action,
    split_routes,
    standard_capacity,
    tour_length,
)
from nco.envs.instance import FEAS_TOL, Instance, Violation
from nco.envs.uchoa import UchoaGenerator
from nco.kernels.masks import cvrp_mask as fused_cvrp_mask

#: Slack on normalised loads: float32 sums of demand/capacity fractions may exceed 1 by
#: rounding when a vehicle is exactly full; a true overload exceeds it by >= 1/capacity.
CAP_TOL = 1e-5

INSTANCE_KEYS = ("locs", "demand", "capacity")

#: The coordinate distributions shared with the other problems, plus ``uchoa`` (CVRP only).
CVRP_DISTRIBUTIONS = (*DISTRIBUTIONS, "uchoa")


@dataclass(frozen=True)
class CVRPGenerator:
    """Seeded CVRP instances: depot and ``num_loc`` customers, integer demands.

    Parameters
    ----------
    num_loc : number of customers (the instance has ``num_loc + 1`` nodes).
    distribution : coordinate distribution, ``uniform``, ``clustered`` or ``mixed`` (the depot
        is always uniform); or ``uchoa``: X-like instances of
        :class:`~nco.envs.uchoa.UchoaGenerator` (all its attributes ``mix``), which draws the
        depot, customers, demands and a capacity PER INSTANCE, so ``capacity``, ``min_demand``
        and ``max_demand`` must keep their defaults and :attr:`vehicle_capacity` raises.
    capacity : vehicle capacity; default :func:`~nco.envs.common.standard_capacity`.
    min_demand, max_demand : demands are uniform integers in [min_demand, max_demand].
    """

    num_loc: int = 20
    distribution: str = "uniform"
    capacity: float | None = None
    min_demand: int = 1
    max_demand: int = 9

    def __post_init__(self) -> None:
        if self.num_loc < 1:
            raise ValueError(f"num_loc must be >= 1, got {self.num_loc}")
        if self.distribution not in CVRP_DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {CVRP_DISTRIBUTIONS}, got {self.distribution!r}"
            )
        if self.distribution == "uchoa" and (
            self.capacity is not None or (self.min_demand, self.max_demand) != (1, 9)
        ):
            raise ValueError(
                "distribution 'uchoa' draws demands and a capacity per instance; leave "
                "capacity, min_demand and max_demand unset"
            )
        if not 1 <= self.min_demand <= self.max_demand:
            raise ValueError(
                f"need 1 <= min_demand <= max_demand, got {self.min_demand}, {self.max_demand}"
            )
        if self.capacity is not None and self.capacity < self.max_demand:
            raise ValueError(f"capacity {self.capacity} is below max_demand {self.max_demand}")

    @property
    def vehicle_capacity(self) -> float:
        """The capacity used (explicit or standard); ``uchoa`` has none (ValueError)."""
        if self.distribution == "uchoa":
            raise ValueError(
                "distribution 'uchoa' draws the capacity per instance; read td['capacity']"
            )
        return (
            float(self.capacity) if self.capacity is not None else standard_capacity(self.num_loc)
        )

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch -> TensorDict with ``locs``, ``demand``, ``capacity``."""
        if self.distribution == "uchoa":
            return UchoaGenerator(self.num_loc)(batch_size, seed=seed, rng=rng, device=device)
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        g = rng if rng is not None else make_rng(as_seed(seed), device)
        depot = torch.rand(b, 1, 2, generator=g, device=device)
        cust = sample_coords(b, self.num_loc, self.distribution, g, device)
        cap = self.vehicle_capacity
        dem = torch.randint(
            self.min_demand, self.max_demand + 1, (b, self.num_loc), generator=g, device=device
        )
        demand = torch.cat([torch.zeros(b, 1, device=device), dem.float() / cap], 1)
        return TensorDict(
            {
                "locs": torch.cat([depot, cust], 1),
                "demand": demand,
                "capacity": torch.full((b,), cap, dtype=torch.float64, device=device),
            },
            batch_size=[b],
            device=device,
        )


def cvrp_mask(
    td: TensorDict, used: torch.Tensor, visited: torch.Tensor, current: torch.Tensor
) -> torch.Tensor:
    """Feasible next nodes [B, N]: unvisited customers that fit, and the depot unless the
    vehicle stands there with customers still to serve (no empty routes)."""
    return fused_cvrp_mask(td["demand"], (1.0 - used) + CAP_TOL, visited, current)[0]


class CVRPEnv(EnvBase):
    """Batched CVRP environment (TorchRL ``EnvBase``, stateless over the TensorDict).

    Parameters
    ----------
    generator : instance generator used when ``reset`` gets no instance data; by default a
        :class:`CVRPGenerator` built from ``generator_params``.
    device : torch device of the environment.
    seed : seed of the environment's generator stream.

    The env is not batch locked (TorchRL convention: its own batch size is empty and its specs
    describe one instance). ``reset(td)`` takes instance data of any batch shape; an empty
    ``TensorDict(batch_size=[B])`` asks for B generated instances.
    """

    batch_locked = False

    def __init__(
        self,
        generator: CVRPGenerator | None = None,
        *,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        **generator_params: Any,
    ) -> None:
        super().__init__(device=device)
        self.generator = generator if generator is not None else CVRPGenerator(**generator_params)
        self._rng = make_rng(seed, self.device)
        n = self.generator.num_loc + 1
        bs = self.batch_size
        dev = self.device
        instance_specs(
            self,
            n,
            {
                "demand": Bounded(
                    low=0.0, high=1.0, shape=(*bs, n), dtype=torch.float32, device=dev
                ),
                "capacity": Unbounded(shape=bs, dtype=torch.float64, device=dev),
                "used_capacity": Bounded(
                    low=0.0, high=1.0 + CAP_TOL, shape=bs, dtype=torch.float32, device=dev
                ),
            },
        )

    def _set_seed(self, seed: int | None) -> None:
        self._rng = make_rng(seed, self.device)

    def rand_action(self, tensordict: TensorDict | None = None) -> TensorDict:
        """Random feasible action (uniform over the mask), written into ``tensordict``."""
        assert tensordict is not None
        return set_random_action(self, tensordict)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs: object) -> TensorDict:
        return flat_batch(
            self._reset_flat, reset_input(self, tensordict, ("locs", "demand", "distance"))
        )

    def _reset_flat(self, td: TensorDict) -> TensorDict:
        b, n = td["demand"].shape
        dev = td.device if td.device is not None else self.device
        current = torch.zeros(b, dtype=torch.int64, device=dev)
        used = torch.zeros(b, dtype=torch.float32, device=dev)
        visited = torch.zeros(b, n, dtype=torch.bool, device=dev)
        out = td.select(
            *[k for k in (*INSTANCE_KEYS, "distance", "scale", "offset") if k in td.keys()]
        )
        out.update(
            {
                "current_node": current,
                "used_capacity": used,
                "visited": visited,
                "i": torch.zeros(b, dtype=torch.int64, device=dev),
                "action_mask": cvrp_mask(td, used, visited, current),
                "done": torch.zeros(b, 1, dtype=torch.bool, device=dev),
                "terminated": torch.zeros(b, 1, dtype=torch.bool, device=dev),
            }
        )
        return out

    def _step(self, tensordict: TensorDict) -> TensorDict:
        return flat_batch(self._step_flat, tensordict)

    def _step_flat(self, td: TensorDict) -> TensorDict:
        action = td["action"]
        current = td["current_node"]
        step_len = pairwise_distance(td, current, action)
        at_depot = action == 0
        dem = td["demand"].gather(1, action[:, None]).squeeze(1)
        used = torch.where(at_depot, torch.zeros_like(dem), td["used_capacity"] + dem)
        visited = td["visited"].scatter(1, action[:, None], True)
        # one fused pass gives the next mask and whether every customer is served
        mask, all_visited = fused_cvrp_mask(td["demand"], (1.0 - used) + CAP_TOL, visited, action)
        done = at_depot & all_visited
        out = td.select(
            *[k for k in (*INSTANCE_KEYS, "distance", "scale", "offset") if k in td.keys()]
        )
        out.update(
            {
                "current_node": action,
                "used_capacity": used,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": mask,
                "reward": -step_len[:, None].to(torch.float32),
                "done": done[:, None],
                "terminated": done[:, None],
            }
        )
        return out


# ----------------------------------------------------------------------------- pure functions
def cost(td: TensorDict, tours: torch.Tensor) -> torch.Tensor:
    """Total route length [B] of action sequences ``tours`` [B, T] (depot at both ends implied)."""
    depot = torch.zeros(tours.shape[0], dtype=torch.int64, device=tours.device)
    return tour_length(td, tours, start=depot, closed=True)


def check_core(
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    routes: Sequence[Sequence[int]],
    num_vehicles: int | None = None,
) -> list[Violation]:
    """Independent CVRP checker on plain arrays: every customer exactly once, no unknown
    node, each route's load within capacity, at most ``num_vehicles`` routes."""
    n = dist.shape[0]
    out = check_visits(routes, range(1, n))
    tol = CAP_TOL * capacity if capacity <= 1.0 + 1e-9 else FEAS_TOL * capacity
    for k, r in enumerate(routes):
        ids = [v for v in r if 0 < v < n]
        load = float(np.sum(demand[ids])) if ids else 0.0
        if load > capacity + tol:
            out.append(
                Violation(
                    "capacity",
                    f"route {k + 1}: load {load:g} exceeds capacity {capacity:g}",
                    route=k,
                )
            )
    out.extend(check_fleet([0] * len(routes), num_vehicles))
    return out


def check(td: TensorDict, tours: torch.Tensor) -> list[list[Violation]]:
    """Check action sequences [B, T] against normalised tensors; one violation list per element."""
    seqs = tours.detach().cpu().numpy()
    dem = td["demand"].detach().cpu().double().numpy()
    return [
        check_core(numpy_distance(td, b), dem[b], 1.0, split_routes(seqs[b]))
        for b in range(seqs.shape[0])
    ]


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[Violation]:
    """Check routes of an :class:`Instance` in its own units."""
    assert instance.demand is not None and instance.capacity is not None
    return check_core(
        instance.distance, instance.demand, instance.capacity, routes, instance.num_vehicles
    )


# ----------------------------------------------------------------------------- policy interface
def node_features(td: TensorDict) -> torch.Tensor:
    """[B, N, 4]: x, y, demand (fraction of capacity), depot flag."""
    locs = td["locs"]
    is_depot = torch.zeros_like(td["demand"])
    is_depot[:, 0] = 1.0
    return torch.cat([locs, td["demand"][..., None], is_depot[..., None]], -1)


def state_features(td: TensorDict) -> torch.Tensor:
    """[B, 1]: remaining capacity (fraction)."""
    return (1.0 - td["used_capacity"])[:, None]


def num_starts(td: TensorDict) -> int:
    """POMO starts: one per customer."""
    return int(td["locs"].shape[-2]) - 1


def start_nodes(td: TensorDict, n: int) -> torch.Tensor:
    """First actions [B, n] for POMO multistart: customers 1..n."""
    b = td["locs"].shape[0]
    return torch.arange(1, n + 1, device=td["locs"].device).expand(b, n)


PROBLEM = Problem(
    name="cvrp",
    title="Capacitated vehicle routing",
    env_cls=CVRPEnv,
    generator_cls=CVRPGenerator,
    has_depot=True,
    cost=cost,
    check=check,
    check_routes=check_routes,
    node_features=node_features,
    state_features=state_features,
    num_starts=num_starts,
    start_nodes=start_nodes,
    instance_keys=INSTANCE_KEYS,
    distributions=CVRP_DISTRIBUTIONS,
)
