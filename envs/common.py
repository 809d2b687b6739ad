"""Pieces shared by the problem files: coordinate samplers, distance lookups, specs, tour
splitting, conversion between tensors and :class:`Instance`, and the :class:`Problem` record.

Nothing here branches on a problem's name; each ``envs/<problem>.py`` assembles these pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from nco.envs.instance import Instance, InstanceError, Violation, euclidean

DISTRIBUTIONS = ("uniform", "clustered", "mixed")

#: Standard CVRP capacities (Kool et al. 2019, POMO); see :func:`standard_capacity`.
CAPACITY_TABLE: tuple[tuple[int, float], ...] = ((10, 20.0), (20, 30.0), (50, 40.0), (100, 50.0), (200, 80.0))


def standard_capacity(num_customers: int) -> float:
    """Vehicle capacity for ``num_customers`` customers with demands in 1..9.

    The table values 10->20, 20->30, 50->40, 100->50, 200->80 are the literature's; between them
    the capacity is interpolated linearly, below 10 it is 20, and beyond 200 it grows with the
    last slope (0.3 per customer), rounded to the nearest integer. E.g. 500 -> 170, 1000 -> 320.
    """
    if num_customers < 1:
        raise ValueError(f"num_customers must be >= 1, got {num_customers}")
    xs = [n for n, _ in CAPACITY_TABLE]
    ys = [c for _, c in CAPACITY_TABLE]
    if num_customers <= xs[0]:
        return ys[0]
    if num_customers >= xs[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(round(ys[-1] + slope * (num_customers - xs[-1])))
    return float(round(float(np.interp(num_customers, xs, ys))))


def make_rng(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A torch generator on ``device``, seeded (or from fresh entropy when seed is None)."""
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def sample_coords(
    batch: int,
    num: int,
    distribution: str,
    rng: torch.Generator,
    device: torch.device | str,
    *,
    num_clusters: int = 3,
    sigma: float = 0.07,
) -> torch.Tensor:
    """Sample [batch, num, 2] coordinates in the unit square.

    ``uniform``: i.i.d. uniform. ``clustered``: Gaussian mixture with ``num_clusters`` centres
    drawn uniformly in [0.2, 0.8]^2 per instance and standard deviation ``sigma`` (Bi et al. 2022);
    points leaving the square are reflected back at its edges, so the support stays [0, 1]^2.
    ``mixed``: half the points uniform, half clustered, shuffled.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}")
    if distribution == "uniform":
        return torch.rand(batch, num, 2, generator=rng, device=device)
    if distribution == "clustered":
        centres = 0.2 + 0.6 * torch.rand(batch, num_clusters, 2, generator=rng, device=device)
        which = torch.randint(0, num_clusters, (batch, num), generator=rng, device=device)
        pts = centres.gather(1, which[..., None].expand(-1, -1, 2))
        pts = pts + sigma * torch.randn(batch, num, 2, generator=rng, device=device)
        # Reflection keeps the points in the square without piling them up on the border.
        pts = pts.remainder(2.0)
        return torch.where(pts > 1.0, 2.0 - pts, pts)
    n_uni = num // 2
    uni = torch.rand(batch, n_uni, 2, generator=rng, device=device)
    clu = sample_coords(batch, num - n_uni, "clustered", rng, device, num_clusters=num_clusters, sigma=sigma)
    pts = torch.cat([uni, clu], 1)
    perm = torch.rand(batch, num, generator=rng, device=device).argsort(1)
    return pts.gather(1, perm[..., None].expand(-1, -1, 2))


# ----------------------------------------------------------------------------- distances
def pairwise_distance(td: TensorDict, frm: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
    """Distance from node ``frm`` [B] to node ``to`` [B] per batch element -> [B].

    Uses the explicit ``distance`` [B, N, N] when present, else Euclidean on ``locs``.
    """
    if "distance" in td.keys():
        dist = td["distance"]
        n = dist.shape[-1]
        flat = dist.reshape(dist.shape[0], n * n)
        return flat.gather(1, (frm * n + to)[:, None]).squeeze(1)
    locs = td["locs"]
    a = locs.gather(1, frm[:, None, None].expand(-1, 1, 2)).squeeze(1)
    b = locs.gather(1, to[:, None, None].expand(-1, 1, 2)).squeeze(1)
    return (a - b).norm(p=2, dim=-1)


def distance_rows(td: TensorDict, frm: torch.Tensor) -> torch.Tensor:
    """Distances from node ``frm`` [B] to every node -> [B, N]."""
    if "distance" in td.keys():
        dist = td["distance"]
        return dist.gather(1, frm[:, None, None].expand(-1, 1, dist.shape[-1])).squeeze(1)
    locs = td["locs"]
    cur = locs.gather(1, frm[:, None, None].expand(-1, 1, 2))
    return (locs - cur).norm(p=2, dim=-1)


def tour_length(td: TensorDict, tours: torch.Tensor, *, start: torch.Tensor | None, closed: bool) -> torch.Tensor:
    """Length of node sequences [B, T] -> [B] on the tensors' distances.

    ``start`` [B] is an implicit node before the first action (the depot for VRPs) and with
    ``closed`` the sequence returns to its first node (its start, when given).
    """
    seq = tours
    if start is not None:
        seq = torch.cat([start[:, None], seq], 1)
    if closed:
        seq = torch.cat([seq, seq[:, :1]], 1)
    frm, to = seq[:, :-1], seq[:, 1:]
    if "distance" in td.keys():
        dist = td["distance"]
        n = dist.shape[-1]
        return dist.reshape(dist.shape[0], n * n).gather(1, frm * n + to).sum(1)
    locs = td["locs"]
    pts = locs.gather(1, seq[..., None].expand(-1, -1, 2))
    return (pts[:, 1:] - pts[:, :-1]).norm(p=2, dim=-1).sum(1)


def numpy_distance(td: TensorDict, b: int) -> np.ndarray:
    """Float64 distance matrix of batch element ``b`` computed in numpy (checker side)."""
    if "distance" in td.keys():
        return td["distance"][b].detach().cpu().double().numpy()
    return euclidean(td["locs"][b].detach().cpu().double().numpy())


# ----------------------------------------------------------------------------- tours
def split_routes(seq: Sequence[int]) -> list[list[int]]:
    """Split an action sequence at depot visits (node 0) into routes of customers."""
    routes: list[list[int]] = []
    cur: list[int] = []
    for v in seq:
        v = int(v)
        if v == 0:
            if cur:
                routes.append(cur)
            cur = []
        else:
            cur.append(v)
    if cur:
        routes.append(cur)
    return routes


def check_visits(routes: Sequence[Sequence[int]], nodes: range) -> list[Violation]:
    """Violations for missing, duplicate and unknown nodes: every node of ``nodes`` exactly once."""
    out: list[Violation] = []
    seen: dict[int, int] = {}
    valid = set(nodes)
    for k, r in enumerate(routes):
        for v in r:
            if v not in valid:
                kind = "depot" if v == 0 else "unknown_node"
                what = "the depot (node 0) inside a route" if v == 0 else f"unknown node {v}"
                out.append(Violation(kind, f"route {k + 1}: {what}", route=k, node=v))
                continue
            if v in seen:
                out.append(Violation("duplicate", f"node {v} visited twice (routes {seen[v] + 1} and {k + 1})", route=k, node=v))
            else:
                seen[v] = k
    for v in nodes:
        if v not in seen:
            out.append(Violation("missing", f"node {v} is never visited", node=v))
    return out


def check_fleet(
    depots: Sequence[int], num_vehicles: int | None, per_depot: np.ndarray | None = None
) -> list[Violation]:
    """``vehicles`` violations of routes leaving from ``depots`` (one depot node per route):
    more routes than ``num_vehicles`` in all, or from a depot d than the ``per_depot[d]``
    vehicles based there (None: no such limit)."""
    out: list[Violation] = []
    if num_vehicles is not None and len(depots) > num_vehicles:
        out.append(Violation("vehicles", f"{len(depots)} routes exceed the {num_vehicles} vehicles available"))
    if per_depot is not None:
        nd = len(per_depot)
        used = np.bincount([d for d in depots if 0 <= d < nd], minlength=nd)
        for dep in np.nonzero(used > per_depot)[0]:
            out.append(Violation("vehicles", f"{used[dep]} routes from depot {dep} exceed the {per_depot[dep]} vehicles based there"))
    return out


# ----------------------------------------------------------------------------- envs
def instance_specs(env: EnvBase, num_nodes: int, extra: dict[str, Any]) -> None:
    """Declare observation/action/reward specs shared by the routing envs.

    The specs describe one instance (the envs are not batch locked, so TorchRL expects an empty
    env batch size); ``extra`` maps further observation keys to their specs.
    """
    bs = env.batch_size
    dev = env.device
    obs = Composite(
        locs=Bounded(low=0.0, high=1.0, shape=(*bs, num_nodes, 2), dtype=torch.float32, device=dev),
        current_node=Categorical(num_nodes, shape=bs, dtype=torch.int64, device=dev),
        i=Unbounded(shape=bs, dtype=torch.int64, device=dev),
        visited=Categorical(2, shape=(*bs, num_nodes), dtype=torch.bool, device=dev),
        action_mask=Categorical(2, shape=(*bs, num_nodes), dtype=torch.bool, device=dev),
        shape=bs,
        device=dev,
    )
    for k, v in extra.items():
        obs[k] = v
    env.observation_spec = obs
    env.action_spec = Categorical(num_nodes, shape=bs, dtype=torch.int64, device=dev)
    env.reward_spec = Unbounded(shape=(*bs, 1), dtype=torch.float32, device=dev)


def reset_input(env: EnvBase, td: TensorDict | None, nan_keys: Sequence[str]) -> TensorDict:
    """The instance data a reset starts from: the given td, or generated instances when it holds
    none (an empty ``TensorDict(batch_size=[B])`` asks for B; None for one, unbatched)."""
    if td is None or "locs" not in td.keys():
        shape = td.batch_size if td is not None else torch.Size([])
        gen = env.generator(max(shape.numel(), 1), rng=env._rng, device=env.device)
        td = gen.reshape(shape) if len(shape) != 1 else gen
    check_nan(td, nan_keys)
    return td


def set_random_action(env: EnvBase, td: TensorDict) -> TensorDict:
    """Write a uniformly random feasible action into ``td`` (the envs' ``rand_action``)."""
    rng = env._rng if env._rng.device == td.device else None
    td.set("action", random_feasible_action(td, rng))
    return td


def random_feasible_action(td: TensorDict, rng: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random action among those the mask allows -> [B]."""
    mask = td["action_mask"]
    w = mask.float().reshape(-1, mask.shape[-1])
    return torch.multinomial(w, 1, generator=rng).reshape(mask.shape[:-1])


def flat_batch(fn: Callable[[TensorDict], TensorDict], td: TensorDict) -> TensorDict:
    """Run a one-batch-dimension transition on a td of any batch shape.

    The envs are written for batch [B]; unbatched tds (TorchRL's convention for non batch-locked
    envs, used by ``check_env_specs``) and [B, S] tds (POMO starts) are reshaped around it.
    """
    shape = td.batch_size
    if len(shape) == 1:
        return fn(td)
    flat = td.reshape(-1)
    return fn(flat).reshape(shape)


# ----------------------------------------------------------------------------- instances
def td_to_instance(td: TensorDict, problem: str, *, name: str = "generated") -> Instance:
    """One generated tensor instance (batch [] or [1]) -> :class:`Instance` in EXACT units.

    Coordinates stay in the unit square (or are mapped back with ``scale``/``offset`` when the
    tensors came from a file); demands are multiplied back by ``capacity`` and rounded when they
    were integers.
    """
    if td.batch_dims:
        td = td[0]
    scale = float(td["scale"]) if "scale" in td.keys() else 1.0
    offset = td["offset"].double().numpy() if "offset" in td.keys() else np.zeros(2)
    coords = td["locs"].detach().cpu().double().numpy() * scale + offset
    kw: dict[str, Any] = {"coords": coords, "problem": problem, "name": name}
    if "demand" in td.keys():
        cap = float(td["capacity"]) if "capacity" in td.keys() else 1.0
        dem = td["demand"].detach().cpu().double().numpy() * cap
        rounded = np.round(dem)
        if np.allclose(dem, rounded, atol=1e-4):
            dem = rounded
        kw.update(demand=dem, capacity=cap)
    if "time_windows" in td.keys():
        kw["time_windows"] = td["time_windows"].detach().cpu().double().numpy() * scale
        kw["service_time"] = td["service_time"].detach().cpu().double().numpy() * scale
    if "distance" in td.keys():
        kw["distance"] = td["distance"].detach().cpu().double().numpy() * scale
    return Instance.from_arrays(**kw)


@dataclass(frozen=True)
class Problem:
    """Everything the rest of the library needs to know about one problem.

    Code outside ``envs/<problem>.py`` asks this record instead of branching on a name: the
    environment and generator classes, the pure cost and checker, and what a policy needs
    (node/state features, POMO start nodes).
    """

    name: str
    title: str
    env_cls: type[EnvBase]
    generator_cls: type
    has_depot: bool
    cost: Callable[[TensorDict, torch.Tensor], torch.Tensor]
    check: Callable[[TensorDict, torch.Tensor], list[list[Violation]]]
    #: ``instance, routes -> violations``; a problem with several depots also takes ``depots=``
    #: (each route's depot node).
    check_routes: Callable[..., list[Violation]]
    node_features: Callable[[TensorDict], torch.Tensor]
    state_features: Callable[[TensorDict], torch.Tensor]
    num_starts: Callable[[TensorDict], int]
    start_nodes: Callable[[TensorDict, int], torch.Tensor]
    instance_keys: tuple[str, ...]
    #: Instance distributions its generator takes (``distribution=``).
    distributions: tuple[str, ...] = DISTRIBUTIONS
    #: Conversions for problems whose tensors are not :meth:`Instance.to_tensordict`'s
    #: (``instance, device -> td`` and ``td, name -> Instance``); None uses the generic ones.
    instance_to_td: Callable[..., TensorDict] | None = None
    td_to_instance: Callable[..., Instance] | None = None
    #: Problems (besides its own name) whose instances :meth:`from_instance` accepts, e.g.
    #: mtvrp takes CVRP and CVRPTW instances as its CVRP and VRPTW variants.
    accepts: tuple[str, ...] = ()
    #: ``tour, num_depots -> (routes, depots)`` for problems with several depots: an action
    #: sequence split into routes and each route's depot node (see :meth:`tours_to_depot_routes`).
    split_depot_tour: Callable[..., tuple[list[list[int]], list[int]]] | None = None
    #: File suffixes of its instances and of their solutions (TSPLIB ``.tsp``/``.tour``,
    #: VRPLIB ``.vrp``/``.sol``).
    instance_suffix: str = ".vrp"
    solution_suffix: str = ".sol"
    #: The VRPLIB/TSPLIB ``TYPE`` written for its instances; None when the type depends on the
    #: instance (the variant family writes its variant's name, e.g. ``VRPB``).
    file_type: str | None = "CVRP"
    #: True for a family whose instances carry per-instance attributes named by
    #: :attr:`Instance.variant` (backhauls, open routes, limits, several depots).
    has_variants: bool = False
    #: Default reward normalisation in training (``"none"`` or ``"std"``); ``"std"`` where
    #: rewards of different variants differ in scale within one batch.
    reward_norm: str = "none"
    #: The fewest nodes an instance can have (a tour needs two cities).
    min_nodes: int = 1

    def generator(self, **params: Any) -> Any:
        """The problem's seeded generator configured with ``params`` (e.g. ``num_loc=50``)."""
        return self.generator_cls(**params)

    def make_env(self, **params: Any) -> EnvBase:
        """A new environment; ``params`` go to the generator except ``device``/``batch_size``."""
        return self.env_cls(**params)

    def from_instance(self, instance: Instance, *, device: str | torch.device = "cpu") -> TensorDict:
        """Normalised tensors (batch [1]) for an instance of this problem."""
        if instance.problem != self.name and instance.problem not in self.accepts:
            expected = " or ".join((self.name, *self.accepts))
            raise InstanceError(instance.source or instance.name, "problem", f"expected a {expected} instance, got {instance.problem} ({instance.variant})")
        if self.instance_to_td is not None:
            return self.instance_to_td(instance, device=device)
        return instance.to_tensordict(device=device)

    def to_instance(self, td: TensorDict, *, name: str = "generated") -> Instance:
        """One tensor instance back to an :class:`Instance`."""
        if self.td_to_instance is not None:
            return self.td_to_instance(td, name=name)
        return td_to_instance(td, self.name, name=name)

    def tours_to_depot_routes(self, tour: Sequence[int], num_depots: int = 1) -> tuple[list[list[int]], list[int]]:
        """An action sequence -> (routes, each route's depot node), for
        ``Solution.from_routes(instance, routes, depots=...)``; depots are 0 for single-depot
        problems."""
        if self.split_depot_tour is not None:
            return self.split_depot_tour(tour, num_depots)
        routes = self.tours_to_routes(tour)
        return routes, [0] * len(routes)

    def tours_to_routes(self, tour: Sequence[int]) -> list[list[int]]:
        """An action sequence of one episode -> routes as :class:`Solution` stores them."""
        if self.has_depot:
            return split_routes(tour)
        return [[int(v) for v in tour]]


def check_nan(td: TensorDict, keys: Sequence[str]) -> None:
    """Raise ValueError when an instance tensor holds NaN/inf (bad data must not be masked)."""
    for k in keys:
        if k in td.keys() and not torch.isfinite(td[k]).all():
            raise ValueError(f"instance tensor {k!r} contains NaN or infinity")


def numpy_rng(seed: int | None, rng: torch.Generator | None) -> np.random.Generator:
    """The numpy stream of one call: from ``seed``, else one draw of ``rng``, else entropy."""
    if rng is not None:
        drawn = torch.randint(0, 2**62, (1,), generator=rng, device=rng.device)
        return np.random.default_rng(int(drawn.item()))
    return np.random.default_rng(as_seed(seed))


def as_seed(seed: int | None) -> int | None:
    """Validate a seed value."""
    if seed is None:
        return None
    if not isinstance(seed, int | np.integer) or seed < 0 or seed >= 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


__all__ = [
    "numpy_rng",
    "CAPACITY_TABLE",
    "DISTRIBUTIONS",
    "Problem",
    "check_fleet",
    "check_visits",
    "distance_rows",
    "make_rng",
    "pairwise_distance",
    "sample_coords",
    "split_routes",
    "standard_capacity",
    "tour_length",
]
