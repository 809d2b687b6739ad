"""Capacitated vehicle routing with time windows (CVRPTW): generator, environment, cost, checker.

Tensor keys: those of :mod:`nco.envs.cvrp` plus ``time_windows`` [B, N, 2] (earliest and latest
start of service; the depot row is [0, horizon]) and ``service_time`` [B, N]. Travel time equals
distance. State adds ``current_time`` [B], the departure time from the current node.

Semantics (Solomon): waiting is allowed, service must start no later than the window's end, and
every route must be back at the depot by the depot's closing time. A vehicle returning to the
depot is replaced by a fresh one leaving at time 0 (the fleet is unlimited in the env; the
checker enforces a file's vehicle count). The mask only offers customers that can be served in
time AND still allow the vehicle to get back to the depot, so every completed episode is
feasible.
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

from nco.envs import cvrp
from nco.envs.common import (
    DISTRIBUTIONS,
    Problem,
    distance_rows,
    flat_batch,
    instance_specs,
    make_rng,
    numpy_distance,
    pairwise_distance,
    reset_input,
    set_random_action,
    split_routes,
)
from nco.envs.cvrp import CAP_TOL, CVRPGenerator
from nco.envs.instance import FEAS_TOL, Instance, Violation
from nco.envs.solomon import SolomonGenerator

INSTANCE_KEYS = ("locs", "demand", "capacity", "time_windows", "service_time")
#: The coordinate distributions shared with the other problems, plus ``solomon`` (the six
#: Solomon classes, :mod:`nco.envs.solomon`).
CVRPTW_DISTRIBUTIONS = (*DISTRIBUTIONS, "solomon")


@dataclass(frozen=True)
class CVRPTWGenerator:
    """Seeded CVRPTW instances as in MVMoE / RouteFinder.

    Locations and demands come from :class:`~nco.envs.cvrp.CVRPGenerator`. With horizon
    ``max_time`` = 4.6 and ``d_i`` the depot-to-customer distance: service time
    ``s_i ~ U[0.15, 0.18]``, window length ``l_i ~ U[0.18, 0.2]``,
    ``h_i = (max_time - s_i - l_i) / d_i - 1``, window start ``e_i = (1 + (h_i - 1) u) d_i`` with
    ``u ~ U[0, 1]`` and end ``e_i + l_i``; the depot's window is [0, max_time]. Every customer is
    thus reachable from the depot and a vehicle serving it can still return in time.

    ``distribution="solomon"`` draws instead the six Solomon classes (R1, R2, C1, C2, RC1, RC2:
    :class:`~nco.envs.solomon.SolomonGenerator`), with capacity, demands, service times and
    horizon per instance.
    """

    num_loc: int = 20
    distribution: str = "uniform"
    capacity: float | None = None
    min_demand: int = 1
    max_demand: int = 9
    max_time: float = 4.6

    def __post_init__(self) -> None:
        if self.distribution not in CVRPTW_DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {CVRPTW_DISTRIBUTIONS}, got {self.distribution!r}"
            )
        if self.distribution == "solomon":
            # its capacities, windows and horizons are the Solomon classes' (nco.envs.solomon)
            if (self.capacity, self.min_demand, self.max_demand, self.max_time) != (None, 1, 9, 4.6):
                raise ValueError(
                    "distribution 'solomon' draws capacity, demands and horizon per instance; "
                    "leave capacity, min_demand, max_demand and max_time at their defaults"
                )
            SolomonGenerator(self.num_loc)
            return
        CVRPGenerator(self.num_loc, self.distribution, self.capacity, self.min_demand, self.max_demand)
        if self.max_time < 2 * np.sqrt(2) + 0.38:
            raise ValueError(f"max_time {self.max_time} is too short for the unit square (need >= 3.21)")

    @property
    def vehicle_capacity(self) -> float:
        """The capacity used (explicit or standard); ``solomon`` has none (ValueError)."""
        if self.distribution == "solomon":
            raise ValueError("distribution 'solomon' draws the capacity per instance; read td['capacity']")
        return CVRPGenerator(self.num_loc, self.distribution, self.capacity).vehicle_capacity

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch -> TensorDict with the CVRP keys plus windows and service times."""
        if self.distribution == "solomon":
            return SolomonGenerator(self.num_loc)(batch_size, seed=seed, rng=rng, device=device)
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        g = rng if rng is not None else make_rng(seed, device)
        base = CVRPGenerator(self.num_loc, self.distribution, self.capacity, self.min_demand, self.max_demand)
        td = base(b, rng=g, device=device)
        locs = td["locs"]
        d0 = (locs[:, 1:] - locs[:, :1]).norm(p=2, dim=-1).clamp_min(1e-6)
        td["time_windows"], td["service_time"] = sample_time_windows(d0, self.max_time, g)
        return td


def sample_time_windows(
    d0: torch.Tensor, max_time: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Time windows [B, N+1, 2] and service times [B, N+1] of Liu et al. (2024), depot row first.

    ``d0`` [B, N]: customer distances to the depot. Service ~ U[0.15, 0.18], window length
    ~ U[0.18, 0.2], start uniform between d0 and the latest start that still allows the return
    before ``max_time``; the depot window is [0, max_time]. Draws service, length, start from
    ``g`` in that order.
    """
    b, n = d0.shape
    dev = d0.device
    service = 0.15 + 0.03 * torch.rand(b, n, generator=g, device=dev)
    length = 0.18 + 0.02 * torch.rand(b, n, generator=g, device=dev)
    h = (max_time - service - length) / d0.clamp_min(1e-6) - 1.0
    start = (1.0 + (h - 1.0) * torch.rand(b, n, generator=g, device=dev)) * d0
    zeros = torch.zeros(b, 1, device=dev)
    tw = torch.stack(
        [torch.cat([zeros, start], 1), torch.cat([zeros + max_time, start + length], 1)], -1
    )
    return tw, torch.cat([zeros, service], 1)


def cvrptw_mask(td: TensorDict, used: torch.Tensor, visited: torch.Tensor, current: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """Feasible next nodes [B, N]: the CVRP mask restricted to customers whose window can still
    be met and after which the depot is reachable before it closes."""
    tw = td["time_windows"]
    travel = distance_rows(td, current)
    start = torch.maximum(time[:, None] + travel, tw[..., 0])
    back = start + td["service_time"] + depot_distances(td)
    in_time = (start <= tw[..., 1]) & (back <= tw[:, :1, 1])
    fits = td["demand"] <= (1.0 - used)[:, None] + CAP_TOL
    cust = fits & ~visited & in_time
    cust[:, 0] = False
    cust[:, 0] = (current != 0) | ~cust.any(1)
    return cust


def depot_distances(td: TensorDict) -> torch.Tensor:
    """Distance of every node to the depot, [B, N]."""
    if "distance" in td.keys():
        return td["distance"][..., 0]
    zeros = torch.zeros(td["locs"].shape[0], dtype=torch.int64, device=td["locs"].device)
    return distance_rows(td, zeros)


class CVRPTWEnv(EnvBase):
    """Batched CVRPTW environment (TorchRL ``EnvBase``, stateless over the TensorDict).

    Not batch locked: ``reset(td)`` takes instance data of any batch shape; an empty
    ``TensorDict(batch_size=[B])`` asks for B generated instances.
    """

    batch_locked = False

    def __init__(
        self,
        generator: CVRPTWGenerator | None = None,
        *,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        **generator_params: Any,
    ) -> None:
        super().__init__(device=device)
        self.generator = generator if generator is not None else CVRPTWGenerator(**generator_params)
        self._rng = make_rng(seed, self.device)
        n = self.generator.num_loc + 1
        bs = self.batch_size
        dev = self.device
        instance_specs(
            self,
            n,
            {
                "demand": Bounded(low=0.0, high=1.0, shape=(*bs, n), dtype=torch.float32, device=dev),
                "capacity": Unbounded(shape=bs, dtype=torch.float64, device=dev),
                "used_capacity": Bounded(low=0.0, high=1.0 + CAP_TOL, shape=bs, dtype=torch.float32, device=dev),
                "time_windows": Unbounded(shape=(*bs, n, 2), dtype=torch.float32, device=dev),
                "service_time": Unbounded(shape=(*bs, n), dtype=torch.float32, device=dev),
                "current_time": Unbounded(shape=bs, dtype=torch.float32, device=dev),
            },
        )

    def _set_seed(self, seed: int | None) -> None:
        self._rng = make_rng(seed, self.device)

    def rand_action(self, tensordict: TensorDict | None = None) -> TensorDict:
        """Random feasible action (uniform over the mask), written into ``tensordict``."""
        assert tensordict is not None
        return set_random_action(self, tensordict)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs: object) -> TensorDict:
        return flat_batch(self._reset_flat, reset_input(self, tensordict, ("locs", "demand", "distance", "time_windows", "service_time")))

    def _keep(self, td: TensorDict) -> TensorDict:
        return td.select(*[k for k in (*INSTANCE_KEYS, "distance", "scale", "offset") if k in td.keys()])

    def _reset_flat(self, td: TensorDict) -> TensorDict:
        b, n = td["demand"].shape
        dev = td["demand"].device
        current = torch.zeros(b, dtype=torch.int64, device=dev)
        used = torch.zeros(b, dtype=torch.float32, device=dev)
        time = td["time_windows"][:, 0, 0].clone()
        visited = torch.zeros(b, n, dtype=torch.bool, device=dev)
        out = self._keep(td)
        out.update(
            {
                "current_node": current,
                "used_capacity": used,
                "current_time": time,
                "visited": visited,
                "i": torch.zeros(b, dtype=torch.int64, device=dev),
                "action_mask": cvrptw_mask(td, used, visited, current, time),
                "done": torch.zeros(b, 1, dtype=torch.bool, device=dev),
                "terminated": torch.zeros(b, 1, dtype=torch.bool, device=dev),
            }
        )
        return out

    def _step(self, tensordict: TensorDict) -> TensorDict:
        return flat_batch(self._step_flat, tensordict)

    def _step_flat(self, td: TensorDict) -> TensorDict:
        action = td["action"]
        step_len = pairwise_distance(td, td["current_node"], action)
        at_depot = action == 0
        dem = td["demand"].gather(1, action[:, None]).squeeze(1)
        used = torch.where(at_depot, torch.zeros_like(dem), td["used_capacity"] + dem)
        tw = td["time_windows"]
        earliest = tw[..., 0].gather(1, action[:, None]).squeeze(1)
        service = td["service_time"].gather(1, action[:, None]).squeeze(1)
        depart = torch.maximum(td["current_time"] + step_len, earliest) + service
        time = torch.where(at_depot, tw[:, 0, 0], depart)
        visited = td["visited"].scatter(1, action[:, None], True)
        done = at_depot & visited[:, 1:].all(1)
        out = self._keep(td)
        out.update(
            {
                "current_node": action,
                "used_capacity": used,
                "current_time": time,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": cvrptw_mask(td, used, visited, action, time),
                "reward": -step_len[:, None].to(torch.float32),
                "done": done[:, None],
                "terminated": done[:, None],
            }
        )
        return out


# ----------------------------------------------------------------------------- pure functions
cost = cvrp.cost


def check_core(
    dist: np.ndarray,
    demand: np.ndarray,
    capacity: float,
    time_windows: np.ndarray,
    service_time: np.ndarray,
    routes: Sequence[Sequence[int]],
    num_vehicles: int | None = None,
) -> list[Violation]:
    """Independent CVRPTW checker: the CVRP checks plus, per route, service starting within
    every window (waiting allowed) and the return to the depot before it closes."""
    out = cvrp.check_core(dist, demand, capacity, routes, num_vehicles)
    n = dist.shape[0]
    horizon = float(time_windows[0, 1])
    tol = FEAS_TOL * max(1.0, abs(horizon))
    for k, r in enumerate(routes):
        t = float(time_windows[0, 0])
        prev = 0
        for v in r:
            if not 0 < v < n:
                continue
            arrive = t + dist[prev, v]
            begin = max(arrive, float(time_windows[v, 0]))
            if begin > time_windows[v, 1] + tol:
                out.append(Violation("time_window", f"route {k + 1}: node {v} served at {begin:.6g}, after its window closes at {time_windows[v, 1]:.6g}", route=k, node=v))
            t = begin + float(service_time[v])
            prev = v
        back = t + dist[prev, 0]
        if back > horizon + tol:
            out.append(Violation("depot_return", f"route {k + 1}: returns to the depot at {back:.6g}, after it closes at {horizon:.6g}", route=k))
    return out


def check(td: TensorDict, tours: torch.Tensor) -> list[list[Violation]]:
    """Check action sequences [B, T] against normalised tensors; one violation list per element."""
    seqs = tours.detach().cpu().numpy()
    dem = td["demand"].detach().cpu().double().numpy()
    tw = td["time_windows"].detach().cpu().double().numpy()
    st = td["service_time"].detach().cpu().double().numpy()
    return [check_core(numpy_distance(td, b), dem[b], 1.0, tw[b], st[b], split_routes(seqs[b])) for b in range(seqs.shape[0])]


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[Violation]:
    """Check routes of an :class:`Instance` in its own units."""
    assert instance.demand is not None and instance.capacity is not None and instance.time_windows is not None
    st = instance.service_time if instance.service_time is not None else np.zeros(instance.num_nodes)
    return check_core(instance.distance, instance.demand, instance.capacity, instance.time_windows, st, routes, instance.num_vehicles)


# ----------------------------------------------------------------------------- policy interface
def node_features(td: TensorDict) -> torch.Tensor:
    """[B, N, 7]: x, y, demand, window start, window end, service time, depot flag."""
    base = cvrp.node_features(td)
    return torch.cat([base[..., :3], td["time_windows"], td["service_time"][..., None], base[..., 3:]], -1)


def state_features(td: TensorDict) -> torch.Tensor:
    """[B, 2]: remaining capacity and current time."""
    return torch.stack([1.0 - td["used_capacity"], td["current_time"]], -1)


PROBLEM = Problem(
    name="cvrptw",
    title="Capacitated vehicle routing with time windows",
    env_cls=CVRPTWEnv,
    generator_cls=CVRPTWGenerator,
    has_depot=True,
    cost=cost,
    check=check,
    check_routes=check_routes,
    node_features=node_features,
    state_features=state_features,
    num_starts=cvrp.num_starts,
    start_nodes=cvrp.start_nodes,
    instance_keys=INSTANCE_KEYS,
    file_type="VRPTW",
    distributions=CVRPTW_DISTRIBUTIONS,
)
