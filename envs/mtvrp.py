"""Multi-task vehicle routing (MTVRP): 16 CVRP variants in one batch (MVMoE / RouteFinder).

Every instance has a capacity (C) and any combination of four attributes; a batch may mix
variants, each instance carrying its own flags and data:

* **O**, open routes: a vehicle does not return to the depot; the return leg costs 0 and counts
  neither towards the distance limit nor against the depot's closing time.
* **B**, backhauls: every customer is either a linehaul (delivery, ``demand_linehaul > 0``) or
  a backhaul (pickup, ``demand_backhaul > 0``). On a route all linehauls come before the first
  backhaul (classic VRPB, RouteFinder's ``backhaul_class=1``): the vehicle leaves loaded with the
  route's deliveries, and after the last delivery it is empty and collects pickups, so the
  route's linehaul total and its backhaul total must each fit the capacity. Routes made of
  backhauls only are allowed (as in RouteFinder).
* **L**, distance (duration) limit: every route's length, the return leg included unless the
  route is open, is at most ``distance_limit``.
* **TW**, time windows: as :mod:`nco.envs.cvrptw` (waiting allowed, service starts no later than
  the window's end, travel time = distance); a closed route must be back by the depot's closing
  time, an open one need not.

The variants are named ``[O]VRP[B][L][TW]`` (``CVRP`` when none is set), 16 in all:
:data:`VARIANT_NAMES`, :data:`VARIANTS` (name -> :class:`Variant` flags) and
:data:`TRAIN_VARIANTS` (the six MVMoE trains on).

Tensor keys (batch [B], N nodes, node 0 the depot):

* ``locs`` [B, N, 2] unit square; optional ``distance`` [B, N, N].
* ``demand_linehaul``, ``demand_backhaul`` [B, N]: divided by the capacity, 0 at the depot;
  disjoint supports (a customer has exactly one positive entry in generated data). Without B,
  ``demand_backhaul`` is all zeros.
* ``capacity`` [B] float64, original units (reporting only).
* ``open_route`` [B] bool (O).
* ``distance_limit`` [B]: +inf without L.
* ``time_windows`` [B, N, 2], ``service_time`` [B, N]: without TW every window is [0, +inf)
  and every service time 0.
* ``has_backhaul``, ``has_distance_limit``, ``has_time_windows`` [B] bool and ``variant`` [B]
  int64 (index into :data:`VARIANT_NAMES`): the instance's variant. Together with
  ``open_route`` these are the four attribute flags. Constraints and costs are read from the
  data (neutral data switches an attribute off); the flags tell the policy which variant it
  solves (e.g. a VRPB instance whose customers happen to all be linehauls) and must agree with
  the data: a flag that is off implies neutral data (:func:`to_variant` keeps them in step).

State: ``current_node`` [B], ``used_capacity_linehaul`` / ``used_capacity_backhaul`` [B]
(fractions of the capacity delivered / picked up on the current route), ``current_time`` [B]
(departure time from the current node), ``current_route_length`` [B], ``visited`` [B, N],
``i`` [B], ``action_mask`` [B, N]. The fleet is unlimited: returning to the depot starts a new
route at time ``time_windows[:, 0, 0]`` with length and loads 0. Each step's reward is minus
the distance travelled (0 for the return leg of an open route), so the episode return is
``-cost``. After the episode (every customer served, vehicle back at the depot) only the
depot is allowed, at zero reward (padding).

Generator (:class:`MTVRPGenerator`), RouteFinder's distributions (Berto et al. 2024, which
follows Liu et al. 2024 / MVMoE, Zhou et al. 2024):

* locations uniform in the unit square (``distribution`` as for CVRP);
* demands uniform integers in 1..9 divided by the capacity (default
  :func:`~nco.envs.common.standard_capacity`: 20 -> 30, 50 -> 40, 100 -> 50, the MVMoE and
  RouteFinder values at those sizes; at 200 the table gives 80 where both use 70, pass
  ``capacity=70`` to match); each customer is a backhaul with probability
  ``backhaul_ratio`` = 0.2 (its amount is then a pickup);
* distance limit ``L ~ U[2 max_i d_0i, max(2.8, 2 max_i d_0i)]`` (RouteFinder's
  ``max_distance_limit`` = 2.8 ~ 2 sqrt 2; a small epsilon keeps the farthest round trip
  feasible), or a fixed ``distance_limit`` (MVMoE uses 3.0);
* time windows as :class:`~nco.envs.cvrptw.CVRPTWGenerator` (Liu et al. 2024): horizon
  ``max_time`` = 4.6, service ``U[0.15, 0.18]``, window length ``U[0.18, 0.2]``, start
  ``(1 + (h_i - 1) u) d_0i`` with ``h_i = (max_time - s_i - l_i) / d_0i - 1`` (so every window
  ends early enough to return by ``max_time``: the depot's closing time never binds on its
  own). MVMoE's code draws windows differently (Li et al. 2021, horizon 3.0); not implemented;
* the variant of each instance drawn from ``variants`` with ``variant_probs`` (uniform by
  default; all 16 uniformly is RouteFinder's ``all`` preset), after all the data above, so
  the same seed gives the same locations and demands whatever the variants; the attributes
  the variant lacks are then neutralised (backhauls become linehauls of the same amount).

Not done yet: :class:`~nco.envs.instance.Instance` cannot represent O, B or L, so MTVRP is
tensor-only (no VRPLIB files, no ``to_instance``/``from_instance``; :func:`check_routes`
raises). The classical references solve the tensors directly: :mod:`nco.baselines.mtvrp`
(PyVRP and OR-Tools, every attribute mapped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Unbounded
from torchrl.envs import EnvBase

from nco.envs import cvrp
from nco.envs.common import (
    DISTRIBUTIONS,
    Problem,
    as_seed,
    check_visits,
    distance_rows,
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
)
from nco.envs.cvrp import CAP_TOL
from nco.envs.cvrptw import depot_distances, sample_time_windows
from nco.envs.instance import Instance, Violation


class Variant(NamedTuple):
    """Attribute flags of one variant (capacity is always on)."""

    open_route: bool
    backhaul: bool
    distance_limit: bool
    time_windows: bool

    @property
    def name(self) -> str:
        """``[O]VRP[B][L][TW]``, or ``CVRP`` without attributes."""
        if not any(self):
            return "CVRP"
        return (
            ("O" if self.open_route else "")
            + "VRP"
            + ("B" if self.backhaul else "")
            + ("L" if self.distance_limit else "")
            + ("TW" if self.time_windows else "")
        )


def _parse(name: str) -> Variant:
    n = name.upper()
    if n == "CVRP":
        return Variant(False, False, False, False)
    o = n.startswith("O")
    rest = n[1:] if o else n
    if not rest.startswith("VRP"):
        raise ValueError(f"unknown variant {name!r}")
    rest = rest[3:]
    flags = []
    for tag in ("B", "L", "TW"):
        flags.append(rest.startswith(tag))
        rest = rest[len(tag) :] if flags[-1] else rest
    if rest or (not o and not any(flags)):
        raise ValueError(f"unknown variant {name!r}; expected [O]VRP[B][L][TW] or CVRP")
    return Variant(o, *flags)


#: The 16 variants in RouteFinder's order; a variant's index in this tuple is its ``variant`` id.
VARIANT_NAMES: tuple[str, ...] = (
    "CVRP", "OVRP", "VRPB", "VRPL", "VRPTW", "OVRPTW", "OVRPB", "OVRPL",
    "VRPBL", "VRPBTW", "VRPLTW", "OVRPBL", "OVRPBTW", "OVRPLTW", "VRPBLTW", "OVRPBLTW",
)  # fmt: skip
#: name -> attribute flags
VARIANTS: dict[str, Variant] = {n: _parse(n) for n in VARIANT_NAMES}
#: The six training variants of MVMoE (Zhou et al. 2024); the other ten are its zero-shot set.
TRAIN_VARIANTS: tuple[str, ...] = ("CVRP", "OVRP", "VRPB", "VRPL", "VRPTW", "OVRPTW")

assert all(v.name == n for n, v in VARIANTS.items()) and len(set(VARIANTS.values())) == 16

#: [16, 4] bool flags (O, B, L, TW) per variant id.
_FLAGS = torch.tensor([list(VARIANTS[n]) for n in VARIANT_NAMES], dtype=torch.bool)
#: variant id per flag combination, indexed [O, B, L, TW]
_IDS = torch.zeros(2, 2, 2, 2, dtype=torch.int64)
for _i, _n in enumerate(VARIANT_NAMES):
    _IDS[tuple(int(f) for f in VARIANTS[_n])] = _i

#: Slack of the env's masks on times and route lengths (float32 rounding; generated data keeps
#: every customer feasible by more than this).
MASK_TOL = 1e-6
#: Slack of the checker on times and route lengths, times max(1, the bound's magnitude): above
#: MASK_TOL plus the float32-vs-float64 difference of a route's accumulated times.
CHECK_TOL = 1e-5

INSTANCE_KEYS = (
    "locs",
    "demand_linehaul",
    "demand_backhaul",
    "capacity",
    "open_route",
    "distance_limit",
    "time_windows",
    "service_time",
    "has_backhaul",
    "has_distance_limit",
    "has_time_windows",
    "variant",
)


def variant_index(name: str) -> int:
    """The ``variant`` id of a variant name (case-insensitive)."""
    key = name.upper()
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANT_NAMES)}")
    return VARIANT_NAMES.index(key)


def variant_ids(
    open_route: torch.Tensor, backhaul: torch.Tensor, limit: torch.Tensor, tw: torch.Tensor
) -> torch.Tensor:
    """Variant ids [B] of flag tensors [B] (bool)."""
    ids = _IDS.to(open_route.device)
    return ids[open_route.long(), backhaul.long(), limit.long(), tw.long()]


def variant_names(td: TensorDict) -> list[str]:
    """Variant name of each instance of a batch [B]."""
    return [VARIANT_NAMES[int(i)] for i in td["variant"].reshape(-1)]


# ----------------------------------------------------------------------------- instances
def neutralise(td: TensorDict, flags: torch.Tensor) -> TensorDict:
    """Switch off the attributes not in ``flags`` [B, 4] (O, B, L, TW) -> a new TensorDict.

    O is set from the flag; without B backhauls become linehauls of the same amount; without L
    the limit is +inf; without TW every window is [0, +inf) and service times are 0. The flag
    and ``variant`` tensors are written from ``flags``.
    """
    out = td.clone()
    o, b, lim, tw = flags.unbind(-1)
    lh, bh = out["demand_linehaul"], out["demand_backhaul"]
    out["demand_linehaul"] = torch.where(b[:, None], lh, lh + bh)
    out["demand_backhaul"] = torch.where(b[:, None], bh, torch.zeros_like(bh))
    out["distance_limit"] = torch.where(
        lim, out["distance_limit"], torch.full_like(out["distance_limit"], math.inf)
    )
    off = torch.zeros_like(out["time_windows"])
    off[..., 1] = math.inf
    out["time_windows"] = torch.where(tw[:, None, None], out["time_windows"], off)
    out["service_time"] = torch.where(
        tw[:, None], out["service_time"], torch.zeros_like(out["service_time"])
    )
    out["open_route"] = o.clone()
    out["has_backhaul"] = b.clone()
    out["has_distance_limit"] = lim.clone()
    out["has_time_windows"] = tw.clone()
    out["variant"] = variant_ids(o, b, lim, tw)
    return out


def to_variant(td: TensorDict, name: str) -> TensorDict:
    """The same instances as variant ``name``: attributes it lacks are switched off (see
    :func:`neutralise`), open routes switched on or off. Attributes it needs (B, L, TW) must be
    present in ``td``; ValueError otherwise (their data cannot be invented)."""
    want = VARIANTS.get(name.upper())
    if want is None:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANT_NAMES)}")
    for flag, key in (
        (want.backhaul, "has_backhaul"),
        (want.distance_limit, "has_distance_limit"),
        (want.time_windows, "has_time_windows"),
    ):
        if flag and not bool(td[key].all()):
            raise ValueError(f"cannot make {name}: some instances lack {key[4:]} data")
    b = td.batch_size[0]
    flags = torch.tensor(list(want), dtype=torch.bool, device=td["locs"].device).expand(b, 4)
    return neutralise(td, flags)


def make_instances(
    locs: torch.Tensor,
    demand_linehaul: torch.Tensor,
    *,
    demand_backhaul: torch.Tensor | None = None,
    capacity: float | torch.Tensor = 1.0,
    open_route: bool | torch.Tensor = False,
    distance_limit: float | torch.Tensor | None = None,
    time_windows: torch.Tensor | None = None,
    service_time: torch.Tensor | None = None,
) -> TensorDict:
    """MTVRP tensors from arrays: demands in capacity units (divided by ``capacity`` here),
    absent attributes neutral, flags and ``variant`` derived from what is given.

    Shapes: ``locs`` [B, N, 2]; demands [B, N] (0 at the depot); ``time_windows`` [B, N, 2];
    ``service_time`` [B, N]; scalars or [B] tensors for the rest.
    """
    b, n = locs.shape[:2]
    dev = locs.device
    f32 = dict(dtype=torch.float32, device=dev)
    cap = torch.as_tensor(capacity, dtype=torch.float64, device=dev).expand(b).clone()
    lh = torch.as_tensor(demand_linehaul, **f32)
    bh = (
        torch.zeros_like(lh) if demand_backhaul is None else torch.as_tensor(demand_backhaul, **f32)
    )
    has_b = torch.full((b,), demand_backhaul is not None, device=dev)
    has_l = torch.full((b,), distance_limit is not None, device=dev)
    has_tw = torch.full((b,), time_windows is not None, device=dev)
    limit = (
        torch.full((b,), math.inf, **f32)
        if distance_limit is None
        else torch.as_tensor(distance_limit, **f32).expand(b).clone()
    )
    if time_windows is None:
        tw = torch.zeros(b, n, 2, **f32)
        tw[..., 1] = math.inf
    else:
        tw = torch.as_tensor(time_windows, **f32)
    st = torch.zeros(b, n, **f32) if service_time is None else torch.as_tensor(service_time, **f32)
    o = torch.as_tensor(open_route, dtype=torch.bool, device=dev).expand(b).clone()
    return TensorDict(
        {
            "locs": torch.as_tensor(locs, **f32),
            "demand_linehaul": lh / cap[:, None].float(),
            "demand_backhaul": bh / cap[:, None].float(),
            "capacity": cap,
            "open_route": o,
            "distance_limit": limit,
            "time_windows": tw,
            "service_time": st,
            "has_backhaul": has_b,
            "has_distance_limit": has_l,
            "has_time_windows": has_tw,
            "variant": variant_ids(o, has_b, has_l, has_tw),
        },
        batch_size=[b],
        device=dev,
    )


# ----------------------------------------------------------------------------- generator
@dataclass(frozen=True)
class MTVRPGenerator:
    """Seeded MTVRP instances, each of a variant drawn from ``variants``.

    Parameters
    ----------
    num_loc : number of customers (``num_loc + 1`` nodes).
    variants : variant names to draw from (default: all 16).
    variant_probs : their probabilities (normalised; default uniform).
    distribution : customer coordinates, ``uniform``, ``clustered`` or ``mixed``.
    capacity : vehicle capacity; default :func:`~nco.envs.common.standard_capacity`.
    min_demand, max_demand : integer demands (linehaul and backhaul) in this range.
    backhaul_ratio : probability that a customer is a backhaul (B variants).
    max_time : depot closing time of TW variants.
    max_distance_limit : upper end of RouteFinder's sampled distance limit.
    distance_limit : a fixed limit for every L instance instead (MVMoE: 3.0); must be at least
        2 sqrt 2 so that every customer of the unit square is reachable.

    See the module docstring for the distributions.
    """

    num_loc: int = 20
    variants: tuple[str, ...] = VARIANT_NAMES
    variant_probs: tuple[float, ...] | None = None
    distribution: str = "uniform"
    capacity: float | None = None
    min_demand: int = 1
    max_demand: int = 9
    backhaul_ratio: float = 0.2
    max_time: float = 4.6
    max_distance_limit: float = 2.8
    distance_limit: float | None = None

    def __post_init__(self) -> None:
        if self.num_loc < 1:
            raise ValueError(f"num_loc must be >= 1, got {self.num_loc}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}"
            )
        if not 1 <= self.min_demand <= self.max_demand:
            raise ValueError(
                f"need 1 <= min_demand <= max_demand, got {self.min_demand}, {self.max_demand}"
            )
        if self.capacity is not None and self.capacity < self.max_demand:
            raise ValueError(f"capacity {self.capacity} is below max_demand {self.max_demand}")
        if not 0.0 <= self.backhaul_ratio <= 1.0:
            raise ValueError(f"backhaul_ratio must be in [0, 1], got {self.backhaul_ratio}")
        if self.max_time < 2 * math.sqrt(2) + 0.38:
            raise ValueError(
                f"max_time {self.max_time} is too short for the unit square (need >= 3.21)"
            )
        if self.distance_limit is not None and self.distance_limit < 2 * math.sqrt(2):
            raise ValueError(
                f"distance_limit {self.distance_limit} is below 2 sqrt 2: some customers could be unreachable"
            )
        names = (self.variants,) if isinstance(self.variants, str) else tuple(self.variants)
        if not names:
            raise ValueError("variants must name at least one variant")
        object.__setattr__(self, "variants", tuple(VARIANT_NAMES[variant_index(v)] for v in names))
        if self.variant_probs is not None:
            probs = tuple(float(p) for p in self.variant_probs)
            if len(probs) != len(self.variants):
                raise ValueError(
                    f"variant_probs has {len(probs)} entries for {len(self.variants)} variants"
                )
            if any(not math.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
                raise ValueError(
                    f"variant_probs must be non-negative with a positive sum, got {probs}"
                )
            object.__setattr__(self, "variant_probs", probs)

    @property
    def vehicle_capacity(self) -> float:
        """The capacity used (explicit or standard)."""
        return (
            float(self.capacity) if self.capacity is not None else standard_capacity(self.num_loc)
        )

    @property
    def probabilities(self) -> tuple[float, ...]:
        """Normalised probability of each entry of ``variants``."""
        p = self.variant_probs if self.variant_probs is not None else (1.0,) * len(self.variants)
        s = sum(p)
        return tuple(x / s for x in p)

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch [B] with the keys of the module docstring."""
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        g = rng if rng is not None else make_rng(as_seed(seed), device)
        n = self.num_loc
        depot = torch.rand(b, 1, 2, generator=g, device=device)
        locs = torch.cat([depot, sample_coords(b, n, self.distribution, g, device)], 1)
        cap = self.vehicle_capacity
        amount = (
            torch.randint(
                self.min_demand, self.max_demand + 1, (b, n), generator=g, device=device
            ).float()
            / cap
        )
        is_bh = torch.rand(b, n, generator=g, device=device) < self.backhaul_ratio
        zero = torch.zeros(b, 1, device=device)
        lh = torch.cat([zero, torch.where(is_bh, 0.0, amount)], 1)
        bh = torch.cat([zero, torch.where(is_bh, amount, 0.0)], 1)
        d0 = (locs[:, 1:] - locs[:, :1]).norm(p=2, dim=-1)
        tw, service_time = sample_time_windows(d0, self.max_time, g)
        # Distance limit (RouteFinder): U[2 max d0, max(2.8, 2 max d0)], or fixed.
        low = 2.0 * d0.max(1).values + 1e-6
        if self.distance_limit is None:
            high = torch.clamp(low + 1e-6, min=self.max_distance_limit)
            limit = low + (high - low) * torch.rand(b, generator=g, device=device)
        else:
            limit = torch.full((b,), float(self.distance_limit), device=device)
        # The variant last, so that the data above does not depend on the variants asked for.
        probs = torch.tensor(self.probabilities, dtype=torch.float32, device=device)
        pick = torch.multinomial(probs, b, replacement=True, generator=g)
        ids = torch.tensor([variant_index(v) for v in self.variants], device=device)[pick]
        full = TensorDict(
            {
                "locs": locs,
                "demand_linehaul": lh,
                "demand_backhaul": bh,
                "capacity": torch.full((b,), cap, dtype=torch.float64, device=device),
                "open_route": torch.ones(b, dtype=torch.bool, device=device),
                "distance_limit": limit,
                "time_windows": tw,
                "service_time": service_time,
            },
            batch_size=[b],
            device=device,
        )
        return neutralise(full, _FLAGS.to(device)[ids])


# ----------------------------------------------------------------------------- environment
def mtvrp_mask(
    td: TensorDict,
    used_lh: torch.Tensor,
    used_bh: torch.Tensor,
    visited: torch.Tensor,
    current: torch.Tensor,
    time: torch.Tensor,
    length: torch.Tensor,
) -> torch.Tensor:
    """Feasible next nodes [B, N].

    A customer is allowed when unvisited and its demand fits (linehaul and backhaul loads
    separately), it is a backhaul or no backhaul has been collected on the route yet, service
    can start within its window, the route length after it (plus the way back unless open)
    stays within the limit, and (unless open) the depot can still be reached before it closes.
    The depot is allowed except from the depot while a customer is (no empty routes); once no
    customer is left it is the padding action.
    """
    travel = distance_rows(td, current)
    back = depot_distances(td)
    closed = ~td["open_route"][:, None]
    tw = td["time_windows"]
    start = torch.maximum(time[:, None] + travel, tw[..., 0])
    in_window = start <= tw[..., 1] + MASK_TOL
    returns = start + td["service_time"] + back <= tw[:, :1, 1] + MASK_TOL
    in_time = in_window & (returns | ~closed)
    tail = torch.where(closed, back, torch.zeros_like(back))
    in_limit = length[:, None] + travel + tail <= td["distance_limit"][:, None] + MASK_TOL
    lh, bh = td["demand_linehaul"], td["demand_backhaul"]
    fits = (lh <= (1.0 - used_lh)[:, None] + CAP_TOL) & (bh <= (1.0 - used_bh)[:, None] + CAP_TOL)
    order = (bh > 0) | (used_bh <= 0)[:, None]
    cust = fits & order & in_time & in_limit & ~visited
    cust[:, 0] = False
    cust[:, 0] = (current != 0) | ~cust.any(1)
    return cust


class MTVRPEnv(EnvBase):
    """Batched multi-task VRP environment (TorchRL ``EnvBase``, stateless over the TensorDict).

    Not batch locked: ``reset(td)`` takes instance data (all of :data:`INSTANCE_KEYS`, e.g.
    from :class:`MTVRPGenerator` or :func:`make_instances`) of any batch shape; an empty
    ``TensorDict(batch_size=[B])`` asks for B generated instances. Variants may be mixed freely
    within a batch.
    """

    batch_locked = False

    def __init__(
        self,
        generator: MTVRPGenerator | None = None,
        *,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        **generator_params: object,
    ) -> None:
        super().__init__(device=device)
        self.generator = generator if generator is not None else MTVRPGenerator(**generator_params)  # type: ignore[arg-type]
        self._rng = make_rng(seed, self.device)
        n = self.generator.num_loc + 1
        bs = self.batch_size
        dev = self.device

        def flag() -> Categorical:
            return Categorical(2, shape=bs, dtype=torch.bool, device=dev)

        def real(*shape: int) -> Unbounded:
            return Unbounded(shape=(*bs, *shape), dtype=torch.float32, device=dev)

        load = Bounded(low=0.0, high=1.0 + CAP_TOL, shape=bs, dtype=torch.float32, device=dev)
        instance_specs(
            self,
            n,
            {
                "demand_linehaul": Bounded(
                    low=0.0, high=1.0, shape=(*bs, n), dtype=torch.float32, device=dev
                ),
                "demand_backhaul": Bounded(
                    low=0.0, high=1.0, shape=(*bs, n), dtype=torch.float32, device=dev
                ),
                "capacity": Unbounded(shape=bs, dtype=torch.float64, device=dev),
                "open_route": flag(),
                "distance_limit": real(),
                "time_windows": real(n, 2),
                "service_time": real(n),
                "has_backhaul": flag(),
                "has_distance_limit": flag(),
                "has_time_windows": flag(),
                "variant": Categorical(len(VARIANT_NAMES), shape=bs, dtype=torch.int64, device=dev),
                "used_capacity_linehaul": load,
                "used_capacity_backhaul": load.clone(),
                "current_time": real(),
                "current_route_length": real(),
            },
        )

    def _set_seed(self, seed: int | None) -> None:
        self._rng = make_rng(seed, self.device)

    def rand_action(self, tensordict: TensorDict | None = None) -> TensorDict:
        """Random feasible action (uniform over the mask), written into ``tensordict``."""
        assert tensordict is not None
        return set_random_action(self, tensordict)

    def _reset(self, tensordict: TensorDict | None = None, **kwargs: object) -> TensorDict:
        td = reset_input(
            self,
            tensordict,
            ("locs", "demand_linehaul", "demand_backhaul", "service_time", "distance"),
        )
        missing = [k for k in INSTANCE_KEYS if k not in td.keys()]
        if missing:
            raise KeyError(
                f"MTVRP instance data lacks {missing}; build it with MTVRPGenerator or make_instances"
            )
        for k in ("time_windows", "distance_limit"):
            if torch.isnan(td[k]).any():
                raise ValueError(f"instance tensor {k!r} contains NaN")
        return flat_batch(self._reset_flat, td)

    def _keep(self, td: TensorDict) -> TensorDict:
        return td.select(
            *[k for k in (*INSTANCE_KEYS, "distance", "scale", "offset") if k in td.keys()]
        )

    def _reset_flat(self, td: TensorDict) -> TensorDict:
        b, n = td["demand_linehaul"].shape
        dev = td["demand_linehaul"].device
        current = torch.zeros(b, dtype=torch.int64, device=dev)
        zero = torch.zeros(b, dtype=torch.float32, device=dev)
        time = td["time_windows"][:, 0, 0].clone()
        visited = torch.zeros(b, n, dtype=torch.bool, device=dev)
        out = self._keep(td)
        out.update(
            {
                "current_node": current,
                "used_capacity_linehaul": zero,
                "used_capacity_backhaul": zero.clone(),
                "current_time": time,
                "current_route_length": zero.clone(),
                "visited": visited,
                "i": torch.zeros(b, dtype=torch.int64, device=dev),
                "action_mask": mtvrp_mask(td, zero, zero, visited, current, time, zero),
                "done": torch.zeros(b, 1, dtype=torch.bool, device=dev),
                "terminated": torch.zeros(b, 1, dtype=torch.bool, device=dev),
            }
        )
        return out

    def _step(self, tensordict: TensorDict) -> TensorDict:
        return flat_batch(self._step_flat, tensordict)

    def _step_flat(self, td: TensorDict) -> TensorDict:
        action = td["action"]
        idx = action[:, None]
        step_len = pairwise_distance(td, td["current_node"], action)
        at_depot = action == 0
        zero = torch.zeros_like(step_len)
        lh = td["demand_linehaul"].gather(1, idx).squeeze(1)
        bh = td["demand_backhaul"].gather(1, idx).squeeze(1)
        used_lh = torch.where(at_depot, zero, td["used_capacity_linehaul"] + lh)
        used_bh = torch.where(at_depot, zero, td["used_capacity_backhaul"] + bh)
        tw = td["time_windows"]
        earliest = tw[..., 0].gather(1, idx).squeeze(1)
        service = td["service_time"].gather(1, idx).squeeze(1)
        depart = torch.maximum(td["current_time"] + step_len, earliest) + service
        time = torch.where(at_depot, tw[:, 0, 0], depart)
        length = torch.where(at_depot, zero, td["current_route_length"] + step_len)
        # the return leg of an open route is free
        paid = torch.where(at_depot & td["open_route"], zero, step_len)
        visited = td["visited"].scatter(1, idx, True)
        done = at_depot & visited[:, 1:].all(1)
        out = self._keep(td)
        out.update(
            {
                "current_node": action,
                "used_capacity_linehaul": used_lh,
                "used_capacity_backhaul": used_bh,
                "current_time": time,
                "current_route_length": length,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": mtvrp_mask(td, used_lh, used_bh, visited, action, time, length),
                "reward": -paid[:, None].to(torch.float32),
                "done": done[:, None],
                "terminated": done[:, None],
            }
        )
        return out


# ----------------------------------------------------------------------------- pure functions
def cost(td: TensorDict, tours: torch.Tensor) -> torch.Tensor:
    """Total length [B] of action sequences ``tours`` [B, T], depot implied at both ends; arcs
    into the depot cost 0 for instances with ``open_route``."""
    depot = torch.zeros(tours.shape[0], 1, dtype=torch.int64, device=tours.device)
    seq = torch.cat([depot, tours, depot], 1)
    frm, to = seq[:, :-1], seq[:, 1:]
    if "distance" in td.keys():
        dist = td["distance"]
        n = dist.shape[-1]
        arcs = dist.reshape(dist.shape[0], n * n).gather(1, frm * n + to)
    else:
        pts = td["locs"].gather(1, seq[..., None].expand(-1, -1, 2))
        arcs = (pts[:, 1:] - pts[:, :-1]).norm(p=2, dim=-1)
    free = (to == 0) & td["open_route"][:, None]
    return torch.where(free, torch.zeros_like(arcs), arcs).sum(1)


def check_core(
    dist: np.ndarray,
    linehaul: np.ndarray,
    backhaul: np.ndarray,
    capacity: float,
    time_windows: np.ndarray,
    service_time: np.ndarray,
    distance_limit: float,
    open_route: bool,
    routes: Sequence[Sequence[int]],
) -> list[Violation]:
    """Independent MTVRP checker on plain float64 arrays (written without the env's masks).

    Kinds: ``missing``/``duplicate``/``unknown_node``/``depot`` (every customer exactly once),
    ``capacity`` (a route's linehaul or backhaul total), ``backhaul_order`` (a linehaul after a
    backhaul), ``distance_limit`` (route length, return leg included unless open),
    ``time_window`` (service starts after a window closes) and ``depot_return`` (a closed route
    back after the depot closes). Neutral data (infinite limit and windows, zero backhauls)
    never produces a violation.
    """
    n = dist.shape[0]
    out = check_visits(routes, range(1, n))
    cap_tol = CAP_TOL * capacity
    horizon = float(time_windows[0, 1])
    for k, r in enumerate(routes):
        ids = [v for v in r if 0 < v < n]
        for what, dem in (("linehaul", linehaul), ("backhaul", backhaul)):
            load = float(np.sum(dem[ids])) if ids else 0.0
            if load > capacity + cap_tol:
                out.append(
                    Violation(
                        "capacity",
                        f"route {k + 1}: {what} load {load:g} exceeds capacity {capacity:g}",
                        route=k,
                    )
                )
        seen_backhaul = False
        for v in ids:
            if backhaul[v] > 0:
                seen_backhaul = True
            elif seen_backhaul:
                out.append(
                    Violation(
                        "backhaul_order",
                        f"route {k + 1}: linehaul node {v} after a backhaul",
                        route=k,
                        node=v,
                    )
                )
        path = [0, *ids] if open_route else [0, *ids, 0]
        length = float(sum(dist[a, b] for a, b in zip(path, path[1:])))
        if length > distance_limit + CHECK_TOL * max(
            1.0, distance_limit if math.isfinite(distance_limit) else 1.0
        ):
            out.append(
                Violation(
                    "distance_limit",
                    f"route {k + 1}: length {length:.6g} exceeds the limit {distance_limit:.6g}",
                    route=k,
                )
            )
        t = float(time_windows[0, 0])
        prev = 0
        for v in ids:
            begin = max(t + dist[prev, v], float(time_windows[v, 0]))
            late = float(time_windows[v, 1])
            if begin > late + CHECK_TOL * max(1.0, abs(late) if math.isfinite(late) else 1.0):
                out.append(
                    Violation(
                        "time_window",
                        f"route {k + 1}: node {v} served at {begin:.6g}, after its window closes at {late:.6g}",
                        route=k,
                        node=v,
                    )
                )
            t = begin + float(service_time[v])
            prev = v
        if not open_route:
            back = t + dist[prev, 0]
            if back > horizon + CHECK_TOL * max(
                1.0, abs(horizon) if math.isfinite(horizon) else 1.0
            ):
                out.append(
                    Violation(
                        "depot_return",
                        f"route {k + 1}: returns to the depot at {back:.6g}, after it closes at {horizon:.6g}",
                        route=k,
                    )
                )
    return out


def check(td: TensorDict, tours: torch.Tensor) -> list[list[Violation]]:
    """Check action sequences [B, T] against normalised tensors; one violation list per element."""
    seqs = tours.detach().cpu().numpy()

    def arr(key: str) -> np.ndarray:
        return td[key].detach().cpu().double().numpy()

    lh, bh, tw, st, lim = (
        arr("demand_linehaul"),
        arr("demand_backhaul"),
        arr("time_windows"),
        arr("service_time"),
        arr("distance_limit"),
    )
    opened = td["open_route"].detach().cpu().numpy()
    return [
        check_core(
            numpy_distance(td, b),
            lh[b],
            bh[b],
            1.0,
            tw[b],
            st[b],
            float(lim[b]),
            bool(opened[b]),
            split_routes(seqs[b]),
        )
        for b in range(seqs.shape[0])
    ]


def check_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[Violation]:
    """Not available: :class:`Instance` cannot represent open routes, backhauls or distance
    limits yet; use :func:`check` on the tensors."""
    raise NotImplementedError(
        "MTVRP instances are tensor-only for now: Instance cannot hold open routes, backhauls or distance limits; use mtvrp.check(td, tours)"
    )


# ----------------------------------------------------------------------------- policy interface
#: Node feature columns (see :func:`node_features`).
NODE_FEATURES = (
    "x", "y", "demand_linehaul", "demand_backhaul", "tw_start", "tw_end", "service_time",
    "open_route", "distance_limit", "has_backhaul", "has_distance_limit", "has_time_windows",
    "is_depot",
)  # fmt: skip


def node_features(td: TensorDict) -> torch.Tensor:
    """[B, N, 13] encoder input, columns :data:`NODE_FEATURES`.

    Per node: x, y, linehaul and backhaul demand (fractions of capacity), window start and end,
    service time (infinite values, i.e. switched-off windows, read 0 as in RouteFinder). Global
    attributes: open flag, distance limit (0 when unlimited) and the B, L, TW flags, written in
    the DEPOT row only (zeros for customers), then the depot flag. The encoder projects depot
    rows with their own linear map, so this is RouteFinder's "global features embedded in the
    depot and spread by attention"; broadcasting them to every row instead would add the same
    vector to all customers, which instance normalisation (POMO) largely subtracts again.
    """
    locs = td["locs"]
    lead = locs.shape[:-2]
    n = locs.shape[-2]
    tw = torch.nan_to_num(td["time_windows"], posinf=0.0)
    per_node = torch.cat(
        [
            locs,
            td["demand_linehaul"][..., None],
            td["demand_backhaul"][..., None],
            tw,
            td["service_time"][..., None],
        ],
        -1,
    )
    limit = torch.nan_to_num(td["distance_limit"].float(), posinf=0.0)
    glob = torch.stack(
        [
            td["open_route"].float(),
            limit,
            td["has_backhaul"].float(),
            td["has_distance_limit"].float(),
            td["has_time_windows"].float(),
        ],
        -1,
    )
    is_depot = torch.zeros(*lead, n, 1, dtype=locs.dtype, device=locs.device)
    is_depot[..., 0, :] = 1.0
    return torch.cat([per_node, glob[..., None, :] * is_depot, is_depot], -1)


def state_features(td: TensorDict) -> torch.Tensor:
    """[B, 5]: remaining linehaul and backhaul capacity (fractions), current time over the
    depot's closing time (0 without windows), remaining route length over the limit (1 without
    a limit) and the open flag; all in [0, 1]."""
    horizon = td["time_windows"][..., 0, 1]
    finite_h = torch.isfinite(horizon)
    time = torch.where(
        finite_h, td["current_time"] / torch.where(finite_h, horizon, 1.0).clamp_min(1e-9), 0.0
    )
    limit = td["distance_limit"]
    finite_l = torch.isfinite(limit)
    safe = torch.where(finite_l, limit, 1.0).clamp_min(1e-9)
    remaining = torch.where(finite_l, (limit - td["current_route_length"]) / safe, 1.0)
    return torch.stack(
        [
            1.0 - td["used_capacity_linehaul"],
            1.0 - td["used_capacity_backhaul"],
            time,
            remaining,
            td["open_route"].float(),
        ],
        -1,
    )


PROBLEM = Problem(
    name="mtvrp",
    title="Multi-task vehicle routing (CVRP with open routes, backhauls, distance limits, time windows)",
    env_cls=MTVRPEnv,
    generator_cls=MTVRPGenerator,
    has_depot=True,
    cost=cost,
    check=check,
    check_routes=check_routes,
    node_features=node_features,
    state_features=state_features,
    num_starts=cvrp.num_starts,
    start_nodes=cvrp.start_nodes,
    instance_keys=INSTANCE_KEYS,
    file_io=False,
)
