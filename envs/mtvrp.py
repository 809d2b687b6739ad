"""Multi-task vehicle routing (MTVRP): 48 CVRP variants in one batch (MVMoE / RouteFinder).

Every instance has a capacity (C) and any combination of the attributes below; a batch may mix
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
* **M**, mixed backhauls (with B data; RouteFinder's ``backhaul_class=2``): linehauls and
  backhauls in any order; the vehicle leaves the depot with all of the route's linehauls, drops
  each, picks each backhaul up, and the load on board must fit the capacity at every point.
  The env tracks the route's peak of (picked up - delivered) so that a new linehaul, which
  rides along from the depot, is allowed only if it fits at that peak.
* **MD**, multi-depot: the first ``num_depots`` nodes are depots; a route starts at a depot and
  returns to the same one. In the action sequence a depot chosen at a customer is the return
  (only the route's own depot is allowed); a depot chosen at a depot is a zero-cost switch of
  the next route's start, allowed once between two routes (again if no customer can be served
  from there). Windows, distance limits and the closing time apply per route depot. A batch
  has one number of depot slots; single-depot instances in an MD batch repeat their depot in
  every slot (and never switch), which is one depot in effect.

The 16 core variants ``[O]VRP[B][L][TW]`` (``CVRP`` when none is set) are
:data:`VARIANT_NAMES` (ids 0..15); :data:`EXTENDED_VARIANT_NAMES` adds the 8 ``[O]VRPMB[L][TW]``
and the 24 ``MD...`` variants (ids 16..47); :data:`ALL_VARIANT_NAMES` is both,
:data:`VARIANTS` maps a name to its :class:`Variant` flags and :data:`TRAIN_VARIANTS` are the
six MVMoE trains on.

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
* ``has_backhaul``, ``has_distance_limit``, ``has_time_windows``, ``has_mixed_backhaul``,
  ``has_multi_depot`` [B] bool, ``num_depots`` [B] int64 (equal within a batch) and
  ``variant`` [B] int64 (index into :data:`ALL_VARIANT_NAMES`): the instance's variant.
  Together with ``open_route`` these are the six attribute flags. Constraints and costs are read from the
  data (neutral data switches an attribute off); the flags tell the policy which variant it
  solves (e.g. a VRPB instance whose customers happen to all be linehauls) and must agree with
  the data: a flag that is off implies neutral data (:func:`to_variant` keeps them in step).

State: ``current_node`` [B], ``used_capacity_linehaul`` / ``used_capacity_backhaul`` [B]
(fractions of the capacity delivered / picked up on the current route), ``peak_load`` [B]
(M: the route's peak of picked up - delivered), ``route_depot`` [B] and ``depot_switched``
[B] (MD), ``current_time`` [B]
(departure time from the current node), ``current_route_length`` [B], ``visited`` [B, N],
``i`` [B], ``action_mask`` [B, N]. The fleet is unlimited: returning to the depot starts a new
route at time ``time_windows[:, 0, 0]`` with length and loads 0. Each step's reward is minus
the distance travelled (0 for the return leg of an open route and for a depot switch), so the
episode return is ``-cost``. After the episode (every customer served, vehicle back at a
depot) only that depot is allowed, at zero reward (padding).

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
  default; all 16 uniformly is RouteFinder's ``all`` preset), after the data above, so
  the same seed gives the same locations and demands whatever the variants; the attributes
  the variant lacks are then neutralised (backhauls become linehauls of the same amount);
* MD: ``num_depots`` (default 3) depots uniform in the unit square, drawn last (the data
  above stays that of one depot); windows and limits are relative to depot 0, so every
  customer can be served from depot 0 and the other depots are extra options.

Files: :class:`~nco.envs.instance.Instance` holds every attribute (see its docstring), so
VRPLIB files of the variants load as ``"mtvrp"`` instances; :func:`from_instance` /
:func:`to_instance` convert between them and these tensors (``PROBLEM.from_instance`` also
takes CVRP and CVRPTW instances) and :func:`check_routes` checks routes in instance units. The
env's fleet is unlimited (as for CVRP): a file's vehicle counts, also per depot, are enforced
by the checker only. A duration limit with time windows or service times has no tensor form
(L limits length) and is refused by :func:`from_instance`. The classical references also solve
the tensors directly: ``nco.solve_batch(td, solver="pyvrp")`` (rows become Instances; PyVRP and OR-Tools map every
attribute).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Unbounded
from torchrl.envs import EnvBase

from nco.envs.common import (
    DISTRIBUTIONS,
    Problem,
    as_seed,
    check_fleet,
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
    standard_capacity,
)
from nco.envs.cvrp import CAP_TOL
from nco.envs.cvrptw import sample_time_windows
from nco.envs.instance import FEAS_TOL, Instance, InstanceError, Violation


class Variant(NamedTuple):
    """Attribute flags of one variant (capacity is always on).

    ``mixed_backhaul`` (M) relaxes B's order (it implies ``backhaul``); ``multi_depot`` (MD)
    lets routes start from any of several depots. Both default to off, so the 16 core variants
    are 4-tuples padded with two False.
    """

    open_route: bool
    backhaul: bool
    distance_limit: bool
    time_windows: bool
    mixed_backhaul: bool = False
    multi_depot: bool = False

    @property
    def name(self) -> str:
        """``[MD][O]VRP[B|MB][L][TW]``; ``CVRP`` without attributes."""
        if not any(self):
            return "CVRP"
        return (
            ("MD" if self.multi_depot else "")
            + ("O" if self.open_route else "")
            + "VRP"
            + (("MB" if self.mixed_backhaul else "B") if self.backhaul else "")
            + ("L" if self.distance_limit else "")
            + ("TW" if self.time_windows else "")
        )


def _parse(name: str) -> Variant:
    n = name.upper()
    if n == "CVRP":
        return Variant(False, False, False, False)
    md = n.startswith("MD")
    rest = n[2:] if md else n
    o = rest.startswith("O")
    rest = rest[1:] if o else rest
    if not rest.startswith("VRP"):
        raise ValueError(f"unknown variant {name!r}; expected [MD][O]VRP[B|MB][L][TW] or CVRP")
    rest = rest[3:]
    mixed = rest.startswith("MB")
    rest = rest[1:] if mixed else rest
    flags = []
    for tag in ("B", "L", "TW"):
        flags.append(rest.startswith(tag))
        rest = rest[len(tag) :] if flags[-1] else rest
    if rest or (not (o or md) and not any(flags)):
        raise ValueError(f"unknown variant {name!r}; expected [MD][O]VRP[B|MB][L][TW] or CVRP")
    return Variant(o, flags[0], flags[1], flags[2], mixed, md)


#: The 16 variants in RouteFinder's order; a variant's index in this tuple is its ``variant`` id.
VARIANT_NAMES: tuple[str, ...] = (
    "CVRP", "OVRP", "VRPB", "VRPL", "VRPTW", "OVRPTW", "OVRPB", "OVRPL",
    "VRPBL", "VRPBTW", "VRPLTW", "OVRPBL", "OVRPBTW", "OVRPLTW", "VRPBLTW", "OVRPBLTW",
)  # fmt: skip
#: The 32 extended variants (RouteFinder's later set): mixed backhauls (M, instead of B's
#: linehauls-first order) and multi-depot (MD), ids 16..47 after the 16 core variants.
_MIXED = tuple(
    Variant(o, True, lim, tw, mixed_backhaul=True).name
    for o in (False, True)
    for lim in (False, True)
    for tw in (False, True)
)
EXTENDED_VARIANT_NAMES: tuple[str, ...] = _MIXED + tuple(
    _parse(n)._replace(multi_depot=True).name for n in (*VARIANT_NAMES, *_MIXED)
)
#: Every variant id's name: the 16 core variants first, then the extended ones.
ALL_VARIANT_NAMES: tuple[str, ...] = VARIANT_NAMES + EXTENDED_VARIANT_NAMES
#: name -> attribute flags, all 48 variants
VARIANTS: dict[str, Variant] = {n: _parse(n) for n in ALL_VARIANT_NAMES}
#: The six training variants of MVMoE (Zhou et al. 2024); the other ten are its zero-shot set.
TRAIN_VARIANTS: tuple[str, ...] = ("CVRP", "OVRP", "VRPB", "VRPL", "VRPTW", "OVRPTW")

assert all(v.name == n for n, v in VARIANTS.items()) and len(set(VARIANTS.values())) == 48

#: Number of attribute flags: O, B, L, TW, M, MD.
NUM_FLAGS = 6
#: [48, 6] bool flags (O, B, L, TW, M, MD) per variant id.
_FLAGS = torch.tensor([list(VARIANTS[n]) for n in ALL_VARIANT_NAMES], dtype=torch.bool)
#: variant id per flag combination, indexed [O, B, L, TW, M, MD]; -1 where M lacks B
_IDS = torch.full((2,) * NUM_FLAGS, -1, dtype=torch.int64)
for _i, _n in enumerate(ALL_VARIANT_NAMES):
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
    "has_mixed_backhaul",
    "has_multi_depot",
    "num_depots",
    "variant",
)


def variant_index(name: str) -> int:
    """The ``variant`` id of a variant name (case-insensitive)."""
    key = name.upper()
    if key not in VARIANTS:
        raise ValueError(
            f"unknown variant {name!r}; expected one of {', '.join(ALL_VARIANT_NAMES)}"
        )
    return ALL_VARIANT_NAMES.index(key)


def variant_ids(flags: torch.Tensor) -> torch.Tensor:
    """Variant ids [B] of flag tensors [B, 6] (bool: O, B, L, TW, M, MD); ValueError for M
    without B."""
    ids = _IDS.to(flags.device)[tuple(f.long() for f in flags.unbind(-1))]
    if bool((ids < 0).any()):
        raise ValueError("mixed backhauls (M) need backhaul data (B) in every instance")
    return ids


def instance_flags(td: TensorDict) -> torch.Tensor:
    """The attribute flags [B, 6] (O, B, L, TW, M, MD) of instance tensors."""
    return torch.stack(
        [
            td["open_route"],
            td["has_backhaul"],
            td["has_distance_limit"],
            td["has_time_windows"],
            td["has_mixed_backhaul"],
            td["has_multi_depot"],
        ],
        -1,
    )


def variant_names(td: TensorDict) -> list[str]:
    """Variant name of each instance of a batch [B]."""
    return [ALL_VARIANT_NAMES[int(i)] for i in td["variant"].reshape(-1)]


# ----------------------------------------------------------------------------- instances
def neutralise(td: TensorDict, flags: torch.Tensor) -> TensorDict:
    """Switch off the attributes not in ``flags`` [B, 6] (O, B, L, TW, M, MD) -> a new
    TensorDict.

    O and M are set from their flags; without B backhauls become linehauls of the same amount
    (and M is off); without L the limit is +inf; without TW every window is [0, +inf) and
    service times are 0; without MD every depot slot is a copy of depot 0 (same location and
    window), which is one depot in effect. The flag and ``variant`` tensors are written from
    ``flags``.
    """
    out = td.clone()
    if flags.shape[-1] == 4:
        flags = torch.cat([flags, torch.zeros_like(flags[..., :2])], -1)
    o, b, lim, tw, mixed, md = flags.unbind(-1)
    mixed = mixed & b
    k = int(out["num_depots"].max()) if out["num_depots"].numel() else 1
    if k > 1:
        copy = ~md[:, None]
        for key in ("locs", "time_windows"):
            x = out[key]
            first = x[:, :1].expand_as(x[:, :k])
            out[key] = torch.cat([torch.where(copy[..., None], first, x[:, :k]), x[:, k:]], 1)
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
    out["has_mixed_backhaul"] = mixed.clone()
    out["has_multi_depot"] = md.clone() & (out["num_depots"] > 1)
    flags = torch.stack([o, b, lim, tw, mixed, out["has_multi_depot"]], -1)
    out["variant"] = variant_ids(flags)
    return out


def to_variant(td: TensorDict, name: str) -> TensorDict:
    """The same instances as variant ``name``: attributes it lacks are switched off (see
    :func:`neutralise`), open routes switched on or off. Attributes it needs (B, L, TW) must be
    present in ``td``; ValueError otherwise (their data cannot be invented)."""
    want = VARIANTS.get(name.upper())
    if want is None:
        raise ValueError(
            f"unknown variant {name!r}; expected one of {', '.join(ALL_VARIANT_NAMES)}"
        )
    for flag, key in (
        (want.backhaul, "has_backhaul"),
        (want.distance_limit, "has_distance_limit"),
        (want.time_windows, "has_time_windows"),
        (want.multi_depot, "has_multi_depot"),
    ):
        if flag and not bool(td[key].all()):
            raise ValueError(f"cannot make {name}: some instances lack {key[4:]} data")
    b = td.batch_size[0]
    flags = torch.tensor(list(want), dtype=torch.bool, device=td["locs"].device)
    return neutralise(td, flags.expand(b, NUM_FLAGS))


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
    mixed_backhaul: bool | torch.Tensor = False,
    num_depots: int = 1,
) -> TensorDict:
    """MTVRP tensors from arrays: demands in capacity units (divided by ``capacity`` here),
    absent attributes neutral, flags and ``variant`` derived from what is given.

    Shapes: ``locs`` [B, N, 2], the first ``num_depots`` rows the depots (MD when more than
    one); demands [B, N] (0 at the depots); ``time_windows`` [B, N, 2]; ``service_time``
    [B, N]; scalars or [B] tensors for the rest. ``mixed_backhaul`` (M) needs
    ``demand_backhaul``.
    """
    if not 1 <= num_depots < locs.shape[1]:
        raise ValueError(f"num_depots must be in 1..{locs.shape[1] - 1}, got {num_depots}")
    b, n = locs.shape[:2]
    dev = locs.device
    f32: dict[str, Any] = dict(dtype=torch.float32, device=dev)
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
    mixed = torch.as_tensor(mixed_backhaul, dtype=torch.bool, device=dev).expand(b).clone()
    md = torch.full((b,), num_depots > 1, device=dev)
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
            "has_mixed_backhaul": mixed,
            "has_multi_depot": md,
            "num_depots": torch.full((b,), num_depots, dtype=torch.int64, device=dev),
            "variant": variant_ids(torch.stack([o, has_b, has_l, has_tw, mixed, md], -1)),
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
    num_depots : depots of MD instances (RouteFinder: 3). A batch has this many depot slots
        when ``variants`` includes an MD variant (single-depot instances then repeat their
        depot in every slot), else one.

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
    num_depots: int = 3

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
        object.__setattr__(
            self, "variants", tuple(ALL_VARIANT_NAMES[variant_index(v)] for v in names)
        )
        if self.num_depots < 1:
            raise ValueError(f"num_depots must be >= 1, got {self.num_depots}")
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
    def depot_slots(self) -> int:
        """Depot rows per instance: ``num_depots`` if an MD variant can be drawn, else 1."""
        md = any(VARIANTS[v].multi_depot for v in self.variants)
        return self.num_depots if md else 1

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
        k = self.depot_slots
        if k > 1:
            # Extra depots after everything else: the core data stays that of one depot. The
            # windows and the limit above are relative to depot 0, so every customer can be
            # served from depot 0; the other depots are extra options.
            extra = torch.rand(b, k - 1, 2, generator=g, device=device)
            locs = torch.cat([locs[:, :1], extra, locs[:, 1:]], 1)
            lh = torch.cat([lh[:, :1].expand(b, k), lh[:, 1:]], 1)
            bh = torch.cat([bh[:, :1].expand(b, k), bh[:, 1:]], 1)
            tw = torch.cat([tw[:, :1].expand(b, k, 2), tw[:, 1:]], 1)
            service_time = torch.cat([service_time[:, :1].expand(b, k), service_time[:, 1:]], 1)
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
                "num_depots": torch.full((b,), k, dtype=torch.int64, device=device),
            },
            batch_size=[b],
            device=device,
        )
        return neutralise(full, _FLAGS.to(device)[ids])


# ----------------------------------------------------------------------------- environment
def is_depot_node(td: TensorDict) -> torch.Tensor:
    """[B, N] bool: the depot slots (the first ``num_depots`` nodes)."""
    n = td["locs"].shape[-2]
    return torch.arange(n, device=td["locs"].device) < td["num_depots"][..., None]


def distances_to(td: TensorDict, node: torch.Tensor) -> torch.Tensor:
    """Distance of every node to ``node`` [B] -> [B, N] (column of the matrix if given)."""
    if "distance" in td.keys():
        dist = td["distance"]
        return dist.gather(2, node[:, None, None].expand(-1, dist.shape[1], 1)).squeeze(2)
    return distance_rows(td, node)


def _depot_serves(td: TensorDict, done: torch.Tensor) -> torch.Tensor:
    """[B, N] bool: depot slots from which a fresh route can serve some customer not in
    ``done`` (window, return before the depot closes, distance limit, capacity)."""
    k = int(td["num_depots"].max())
    n = td["locs"].shape[-2]
    if "distance" in td.keys():
        out_d = td["distance"][:, :k, :]  # [B, K, N] depot -> node
        back_d = td["distance"][:, :, :k].transpose(1, 2)  # [B, K, N] node -> depot
    else:
        out_d = back_d = torch.cdist(td["locs"][:, :k], td["locs"])
    tw = td["time_windows"]
    start = torch.maximum(tw[:, :k, 0:1] + out_d, tw[:, None, :, 0])
    closed = ~td["open_route"][:, None, None]
    in_window = start <= tw[:, None, :, 1] + MASK_TOL
    returns = (start + td["service_time"][:, None] + back_d <= tw[:, :k, 1:2] + MASK_TOL) | ~closed
    tail = torch.where(closed, back_d, torch.zeros_like(back_d))
    in_limit = out_d + tail <= td["distance_limit"][:, None, None] + MASK_TOL
    fits = (td["demand_linehaul"] <= 1.0 + CAP_TOL) & (td["demand_backhaul"] <= 1.0 + CAP_TOL)
    ok = in_window & returns & in_limit & (fits & ~done)[:, None]
    serves = torch.zeros(td["locs"].shape[0], n, dtype=torch.bool, device=ok.device)
    serves[:, :k] = ok.any(2)
    return serves


def mtvrp_mask(
    td: TensorDict,
    used_lh: torch.Tensor,
    used_bh: torch.Tensor,
    visited: torch.Tensor,
    current: torch.Tensor,
    time: torch.Tensor,
    length: torch.Tensor,
    peak: torch.Tensor | None = None,
    route_depot: torch.Tensor | None = None,
    switched: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feasible next nodes [B, N].

    A customer is allowed when unvisited and its demand fits, it is a backhaul or no backhaul
    has been collected on the route yet (unless M), service can start within its window, the
    route length after it (plus the way back unless open) stays within the limit, and (unless
    open) the route's depot can still be reached before it closes.

    Depots: from a customer only the route's own depot (the return). At a depot, another
    depot (MD instances only) is a zero-cost switch of the next route's start, allowed once
    between two routes unless no customer can be served from here, and only to a depot from
    which a new route can serve a customer (so a switch is always followed by a customer). The
    current depot itself is allowed only when no customer can be served and no switch is
    possible (the padding action once every customer is served).
    """
    zeros_b = torch.zeros_like(current)
    rd = zeros_b if route_depot is None else route_depot
    travel = distance_rows(td, current)
    back = distances_to(td, rd)
    closed = ~td["open_route"][:, None]
    tw = td["time_windows"]
    start = torch.maximum(time[:, None] + travel, tw[..., 0])
    in_window = start <= tw[..., 1] + MASK_TOL
    horizon = tw[..., 1].gather(1, rd[:, None])
    returns = start + td["service_time"] + back <= horizon + MASK_TOL
    in_time = in_window & (returns | ~closed)
    tail = torch.where(closed, back, torch.zeros_like(back))
    in_limit = length[:, None] + travel + tail <= td["distance_limit"][:, None] + MASK_TOL
    lh, bh = td["demand_linehaul"], td["demand_backhaul"]
    # The vehicle leaves loaded with all of the route's linehauls, so a new linehaul raises the
    # load at every earlier point: it fits when it fits at the route's peak (see step).
    peak = torch.zeros_like(used_lh) if peak is None else peak
    fits = (lh <= (1.0 - used_lh - peak)[:, None] + CAP_TOL) & (
        bh <= (1.0 - used_bh)[:, None] + CAP_TOL
    )
    order = (bh > 0) | (used_bh <= 0)[:, None] | td["has_mixed_backhaul"][:, None]
    depot = is_depot_node(td)
    cust = fits & order & in_time & in_limit & ~visited & ~depot
    idx = torch.arange(depot.shape[1], device=depot.device)[None]
    at_depot = current < td["num_depots"]
    can_serve = cust.any(1)
    left = ~(visited | depot).all(1)
    was_switch = torch.zeros_like(at_depot) if switched is None else switched
    switch = (
        depot
        & (idx != current[:, None])
        & (at_depot & td["has_multi_depot"] & left & (~was_switch | ~can_serve))[:, None]
    )
    if td["has_multi_depot"].any():
        # Only to a depot that can serve a customer, so a policy cannot switch back and forth
        # between depots that serve nothing (every switch is followed by a customer).
        switch = switch & _depot_serves(td, visited | depot)
    ret = ~at_depot[:, None] & (idx == rd[:, None])
    stay = (at_depot & ~can_serve & ~switch.any(1))[:, None] & (idx == current[:, None])
    return cust | ret | switch | stay


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
        **generator_params: Any,
    ) -> None:
        super().__init__(device=device)
        self.generator = generator if generator is not None else MTVRPGenerator(**generator_params)
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
                "variant": Categorical(
                    len(ALL_VARIANT_NAMES), shape=bs, dtype=torch.int64, device=dev
                ),
                "used_capacity_linehaul": load,
                "used_capacity_backhaul": load.clone(),
                "peak_load": load.clone(),
                "has_mixed_backhaul": flag(),
                "has_multi_depot": flag(),
                "num_depots": Unbounded(shape=bs, dtype=torch.int64, device=dev),
                "route_depot": Unbounded(shape=bs, dtype=torch.int64, device=dev),
                "depot_switched": flag(),
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
                "peak_load": zero.clone(),
                "route_depot": current.clone(),
                "depot_switched": torch.zeros(b, dtype=torch.bool, device=dev),
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
        k = td["num_depots"]
        at_depot = action < k
        # depot -> depot is a switch of the next route's start (or padding): no travel
        switch = at_depot & (td["current_node"] < k)
        step_len = pairwise_distance(td, td["current_node"], action)
        zero = torch.zeros_like(step_len)
        step_len = torch.where(switch, zero, step_len)
        lh = td["demand_linehaul"].gather(1, idx).squeeze(1)
        bh = td["demand_backhaul"].gather(1, idx).squeeze(1)
        used_lh = torch.where(at_depot, zero, td["used_capacity_linehaul"] + lh)
        used_bh = torch.where(at_depot, zero, td["used_capacity_backhaul"] + bh)
        # peak of (picked up - delivered) over the route's points, 0 at the depot (see mask)
        peak = torch.where(at_depot, zero, torch.maximum(td["peak_load"], used_bh - used_lh))
        tw = td["time_windows"]
        earliest = tw[..., 0].gather(1, idx).squeeze(1)
        service = td["service_time"].gather(1, idx).squeeze(1)
        depart = torch.maximum(td["current_time"] + step_len, earliest) + service
        time = torch.where(at_depot, earliest, depart)
        length = torch.where(at_depot, zero, td["current_route_length"] + step_len)
        # the return leg of an open route is free
        paid = torch.where(at_depot & td["open_route"], zero, step_len)
        visited = td["visited"].scatter(1, idx, True)
        done = at_depot & (visited | is_depot_node(td)).all(1)
        route_depot = torch.where(at_depot, action, td["route_depot"])
        switched = switch & (action != td["current_node"])
        out = self._keep(td)
        out.update(
            {
                "current_node": action,
                "used_capacity_linehaul": used_lh,
                "used_capacity_backhaul": used_bh,
                "peak_load": peak,
                "route_depot": route_depot,
                "depot_switched": switched,
                "current_time": time,
                "current_route_length": length,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": mtvrp_mask(
                    td, used_lh, used_bh, visited, action, time, length, peak, route_depot, switched
                ),
                "reward": -paid[:, None].to(torch.float32),
                "done": done[:, None],
                "terminated": done[:, None],
            }
        )
        return out


# ----------------------------------------------------------------------------- pure functions
def cost(td: TensorDict, tours: torch.Tensor) -> torch.Tensor:
    """Total length [B] of action sequences ``tours`` [B, T], depot 0 implied at both ends;
    arcs into a depot cost 0 for instances with ``open_route``, and arcs between two depots
    (MD switches, padding) cost 0."""
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
    k = td["num_depots"][:, None]
    free = (to < k) & (td["open_route"][:, None] | (frm < k))
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
    mixed_backhaul: bool = False,
    *,
    num_depots: int = 1,
    depots: Sequence[int] | None = None,
    ends: Sequence[int] | None = None,
    tol: float = CHECK_TOL,
) -> list[Violation]:
    """Independent MTVRP checker on plain float64 arrays (written without the env's masks).

    Kinds: ``missing``/``duplicate``/``unknown_node``/``depot`` (every customer exactly once),
    ``capacity`` (a route's linehaul or backhaul total; with ``mixed_backhaul`` the load on
    board anywhere along the route: it leaves the depot with all the route's linehauls, drops
    each, picks each backhaul up), ``backhaul_order`` (a linehaul after a backhaul, unless
    ``mixed_backhaul``), ``distance_limit`` (route length, return leg included unless open),
    ``time_window`` (service starts after a window closes), ``depot_return`` (a closed route
    back after its depot closes) and ``depot_mismatch`` (a route ending at another depot than
    it started from). Nodes ``0..num_depots-1`` are depots; ``depots[k]`` is route k's start
    depot and ``ends[k]`` the depot it returns to (both default to depot 0). Neutral data (infinite limit and windows, zero backhauls)
    never produces a violation. ``tol`` is the relative slack on times and lengths.
    """
    n = dist.shape[0]
    out = check_visits(routes, range(num_depots, n))
    cap_tol = CAP_TOL * capacity
    starts = list(depots) if depots is not None else [0] * len(routes)
    finish = list(ends) if ends is not None else starts
    for k, r in enumerate(routes):
        ids = [v for v in r if num_depots <= v < n]
        d = int(starts[k])
        if not 0 <= d < num_depots:
            out.append(Violation("depot", f"route {k + 1}: starts at {d}, not a depot", route=k))
            continue
        if int(finish[k]) != d:
            out.append(
                Violation(
                    "depot_mismatch",
                    f"route {k + 1}: starts at depot {d} but returns to {int(finish[k])}",
                    route=k,
                )
            )
        horizon = float(time_windows[d, 1])
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
        if mixed_backhaul:
            on_board = float(np.sum(linehaul[ids])) if ids else 0.0
            for v in ids:
                on_board += float(backhaul[v]) - float(linehaul[v])
                if on_board > capacity + cap_tol:
                    out.append(
                        Violation(
                            "capacity",
                            f"route {k + 1}: {on_board:g} on board after node {v} exceeds capacity {capacity:g}",
                            route=k,
                            node=v,
                        )
                    )
                    break
            ids_order: list[int] = []
        else:
            ids_order = ids
        seen_backhaul = False
        for v in ids_order:
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
        path = [d, *ids] if open_route else [d, *ids, d]
        length = float(sum(dist[a, b] for a, b in zip(path, path[1:])))
        if length > distance_limit + tol * max(
            1.0, distance_limit if math.isfinite(distance_limit) else 1.0
        ):
            out.append(
                Violation(
                    "distance_limit",
                    f"route {k + 1}: length {length:.6g} exceeds the limit {distance_limit:.6g}",
                    route=k,
                )
            )
        t = float(time_windows[d, 0])
        prev = d
        for v in ids:
            begin = max(t + dist[prev, v], float(time_windows[v, 0]))
            late = float(time_windows[v, 1])
            if begin > late + tol * max(1.0, abs(late) if math.isfinite(late) else 1.0):
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
            back = t + dist[prev, d]
            if back > horizon + tol * max(
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


def split_depot_routes(
    seq: Sequence[int], num_depots: int = 1
) -> tuple[list[list[int]], list[int], list[int]]:
    """Split an action sequence into routes of customers with their start and end depots.

    A route starts at the depot visited last before its first customer (depot 0 at the
    beginning) and ends at the next depot visited (depot 0, implied, if the sequence stops
    at a customer, as in :func:`cost`).
    """
    routes: list[list[int]] = []
    starts: list[int] = []
    ends: list[int] = []
    cur: list[int] = []
    start = 0
    for v in seq:
        v = int(v)
        if v < num_depots:
            if cur:
                routes.append(cur)
                starts.append(start)
                ends.append(v)
                cur = []
            start = v
        else:
            cur.append(v)
    if cur:
        routes.append(cur)
        starts.append(start)
        ends.append(0)
    return routes, starts, ends


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
    mixed = td["has_mixed_backhaul"].detach().cpu().numpy()
    depots = td["num_depots"].detach().cpu().numpy()
    out = []
    for b in range(seqs.shape[0]):
        k = int(depots[b])
        routes, starts, ends = split_depot_routes(seqs[b], k)
        out.append(
            check_core(
                numpy_distance(td, b),
                lh[b],
                bh[b],
                1.0,
                tw[b],
                st[b],
                float(lim[b]),
                bool(opened[b]),
                routes,
                bool(mixed[b]),
                num_depots=k,
                depots=starts,
                ends=ends,
            )
        )
    return out


def route_duration(
    dist: np.ndarray,
    time_windows: np.ndarray | None,
    service_time: np.ndarray,
    depot: int,
    route: Sequence[int],
    open_route: bool,
) -> float:
    """Duration of one route in instance units, as PyVRP defines it.

    Travel plus service plus waiting, from leaving the depot to returning (open routes: to
    the end of the last service). With time windows the vehicle leaves as late as every window
    (and the depot's closing time) still allows, never before the depot opens: a later start
    never lengthens a route, so this is the least duration of the route. Without windows there
    is no waiting: length plus service times.
    """
    path = [depot, *route] if open_route else [depot, *route, depot]
    legs = [float(dist[a, b]) for a, b in zip(path, path[1:])]
    if time_windows is None:
        return float(sum(legs) + sum(float(service_time[v]) for v in route))
    # offset of each arrival from the departure when nothing waits
    offset, latest = 0.0, float(time_windows[depot, 1])
    for i, v in enumerate(route):
        offset += legs[i]
        latest = min(latest, float(time_windows[v, 1]) - offset)
        offset += float(service_time[v])
    if not open_route:
        latest = min(latest, float(time_windows[depot, 1]) - (offset + legs[-1]))
    start = max(float(time_windows[depot, 0]), latest)
    t = start
    for i, v in enumerate(route):
        t = max(t + legs[i], float(time_windows[v, 0])) + float(service_time[v])
    if not open_route:
        t += legs[-1]
    return t - start


def check_routes(
    instance: Instance, routes: Sequence[Sequence[int]], depots: Sequence[int] | None = None
) -> list[Violation]:
    """Check routes of an :class:`Instance` in its own units: everything :func:`check_core`
    checks plus ``duration`` (:func:`route_duration` over ``max_duration``) and ``vehicles``
    (more routes than ``num_vehicles``, or than the vehicles based at a depot).

    ``depots[k]`` is route k's depot node; multi-depot instances must state it (a
    ``depot`` violation otherwise, and depot 0 is assumed).
    """
    inst = instance
    assert inst.demand is not None and inst.capacity is not None
    n, nd = inst.num_nodes, inst.num_depots
    out: list[Violation] = []
    if depots is None:
        if nd > 1 and routes:
            out.append(Violation("depot", f"multi-depot instance ({nd} depots): the routes' depots are not stated"))
        depots = [0] * len(routes)
    depots = [int(d) for d in depots]
    if len(depots) != len(routes):
        out.append(Violation("depot", f"{len(depots)} depots stated for {len(routes)} routes"))
        depots = (depots + [0] * len(routes))[: len(routes)]
    tw = inst.time_windows
    if tw is None:
        tw = np.zeros((n, 2))
        tw[:, 1] = math.inf
    st = inst.service_time if inst.service_time is not None else np.zeros(n)
    bh = inst.backhaul if inst.backhaul is not None else np.zeros(n)
    limit = inst.max_distance if inst.max_distance is not None else math.inf
    out += check_core(
        inst.distance,
        inst.demand,
        bh,
        inst.capacity,
        tw,
        st,
        limit,
        inst.open_routes,
        routes,
        inst.mixed_backhaul,
        num_depots=nd,
        depots=depots,
        tol=FEAS_TOL,
    )
    if inst.max_duration is not None:
        lim = inst.max_duration
        for k, (r, d) in enumerate(zip(routes, depots, strict=True)):
            ids = [v for v in r if nd <= v < n]
            if not 0 <= d < nd or not ids:
                continue
            dur = route_duration(inst.distance, inst.time_windows, st, d, ids, inst.open_routes)
            if dur > lim + FEAS_TOL * max(1.0, lim):
                out.append(Violation("duration", f"route {k + 1}: duration {dur:.6g} exceeds the limit {lim:.6g}", route=k))
    out.extend(check_fleet(depots, inst.num_vehicles, inst.vehicles_per_depot))
    return out


def from_instance(instance: Instance, *, device: str | torch.device = "cpu") -> TensorDict:
    """MTVRP tensors (batch [1]) of a CVRP, CVRPTW or variant :class:`Instance`.

    Normalised as :meth:`Instance.to_tensordict` (coordinates into the unit square with one
    factor kept under ``scale``/``offset``, distances, times and the limit divided by it,
    demands by the capacity), plus the flags of :data:`INSTANCE_KEYS`. Route limits become L:
    ``max_distance``, or ``max_duration`` when durations equal lengths (no windows, no service
    times). A duration limit with windows or service times has no tensor form: InstanceError.
    The fleet (``num_vehicles``, ``vehicle_depots``) is left to the checker.
    """
    inst = instance
    src = inst.source or inst.name
    if inst.demand is None or inst.capacity is None:
        raise InstanceError(src, "DEMAND_SECTION", "mtvrp needs demands and a capacity")
    n = inst.num_nodes
    timed = inst.time_windows is not None or (inst.service_time is not None and bool((inst.service_time > 0).any()))
    if inst.max_duration is not None and timed:
        raise InstanceError(src, "VEHICLES_MAX_DURATION", "mtvrp's L limits route length; a duration limit with time windows or service times (travel + service + waiting) has no mtvrp tensor form")
    limits = [x for x in (inst.max_distance, inst.max_duration) if x is not None]
    base = inst.to_tensordict(device=device)
    scale = float(base["scale"][0])
    f32 = dict(dtype=torch.float32, device=base.device)
    one = dict(device=base.device)
    cap = float(inst.capacity)
    bh = inst.backhaul if inst.backhaul is not None else np.zeros(n)
    if inst.time_windows is not None:
        tw = base["time_windows"]
        st = base["service_time"]
    else:
        tw = torch.zeros(1, n, 2, **f32)
        tw[..., 1] = math.inf
        st = torch.zeros(1, n, **f32)
    flags = torch.tensor(
        [[inst.open_routes, inst.backhaul is not None, bool(limits), inst.time_windows is not None, inst.mixed_backhaul, inst.num_depots > 1]],
        dtype=torch.bool,
        **one,
    )
    td = base.select(*[k for k in ("locs", "scale", "offset", "distance") if k in base.keys()])
    td.update(
        {
            "demand_linehaul": base["demand"],
            "demand_backhaul": torch.as_tensor(bh / cap, **f32)[None],
            "capacity": torch.tensor([cap], dtype=torch.float64, **one),
            "open_route": flags[:, 0].clone(),
            "distance_limit": torch.tensor([min(limits) / scale if limits else math.inf], **f32),
            "time_windows": tw,
            "service_time": st,
            "has_backhaul": flags[:, 1].clone(),
            "has_distance_limit": flags[:, 2].clone(),
            "has_time_windows": flags[:, 3].clone(),
            "has_mixed_backhaul": flags[:, 4].clone(),
            "has_multi_depot": flags[:, 5].clone(),
            "num_depots": torch.tensor([inst.num_depots], dtype=torch.int64, **one),
            "variant": variant_ids(flags),
        }
    )
    return td


def to_instance(td: TensorDict, *, name: str = "generated") -> Instance:
    """One MTVRP tensor instance (batch [] or [1]) -> :class:`Instance` in original units.

    The inverse of :func:`from_instance` (``scale``/``offset`` applied when present, else the
    unit square with EXACT distances). Attributes follow the flags: B -> ``backhaul``, L ->
    ``max_distance``, TW -> windows and service times, O, M, MD (depot slots) as flagged.
    The result is an ``"mtvrp"`` instance whatever its variant (CVRP and VRPTW included), so
    that a generated batch stays one problem.
    """
    if td.batch_dims:
        td = td[0]
    slots = int(td["num_depots"])
    nd = slots if bool(td["has_multi_depot"]) else 1
    # A single-depot instance of an MD batch repeats its depot in every slot: keep one.
    keep = np.r_[0:nd, slots : td["locs"].shape[-2]]

    def arr(key: str) -> np.ndarray:
        x = td[key].detach().cpu().double().numpy()
        if key == "distance":
            return x[np.ix_(keep, keep)]
        return x[keep] if x.ndim and key != "offset" else x

    def amounts(key: str) -> np.ndarray:
        x = arr(key) * cap
        rounded = np.round(x)
        return rounded if np.allclose(x, rounded, atol=1e-4) else x

    scale = float(td["scale"]) if "scale" in td.keys() else 1.0
    offset = arr("offset") if "offset" in td.keys() else np.zeros(2)
    cap = float(td["capacity"]) if "capacity" in td.keys() else 1.0
    has_tw = bool(td["has_time_windows"])
    return Instance.from_arrays(
        problem="mtvrp",
        coords=arr("locs") * scale + offset,
        distance=arr("distance") * scale if "distance" in td.keys() else None,
        demand=amounts("demand_linehaul"),
        capacity=cap,
        time_windows=arr("time_windows") * scale if has_tw else None,
        service_time=arr("service_time") * scale if has_tw else None,
        name=name,
        backhaul=amounts("demand_backhaul") if bool(td["has_backhaul"]) else None,
        mixed_backhaul=bool(td["has_mixed_backhaul"]),
        open_routes=bool(td["open_route"]),
        max_distance=float(td["distance_limit"]) * scale if bool(td["has_distance_limit"]) else None,
        num_depots=nd,
    )


def split_depot_tour(tour: Sequence[int], num_depots: int = 1) -> tuple[list[list[int]], list[int]]:
    """An action sequence -> (routes of customers, each route's depot); see
    :func:`split_depot_routes` (a route returns to the depot it started from in valid tours)."""
    routes, starts, _ = split_depot_routes(tour, num_depots)
    return routes, starts


# ----------------------------------------------------------------------------- policy interface
#: Node feature columns (see :func:`node_features`).
NODE_FEATURES = (
    "x", "y", "demand_linehaul", "demand_backhaul", "tw_start", "tw_end", "service_time",
    "open_route", "distance_limit", "has_backhaul", "has_distance_limit", "has_time_windows",
    "has_mixed_backhaul", "has_multi_depot", "is_depot",
)  # fmt: skip


def node_features(td: TensorDict) -> torch.Tensor:
    """[B, N, 15] encoder input, columns :data:`NODE_FEATURES`.

    Per node: x, y, linehaul and backhaul demand (fractions of capacity), window start and end,
    service time (infinite values, i.e. switched-off windows, read 0 as in RouteFinder). Global
    attributes: open flag, distance limit (0 when unlimited) and the B, L, TW, M, MD flags,
    written in the depot rows only (zeros for customers), then the depot flag (the first
    ``num_depots`` rows). The encoder projects depot
    rows with their own linear map, so this is RouteFinder's "global features embedded in the
    depot and spread by attention"; broadcasting them to every row instead would add the same
    vector to all customers, which instance normalisation (POMO) largely subtracts again.
    """
    locs = td["locs"]
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
            td["has_mixed_backhaul"].float(),
            td["has_multi_depot"].float(),
        ],
        -1,
    )
    idx = torch.arange(n, device=locs.device)
    is_depot = (idx < td["num_depots"][..., None]).to(locs.dtype)[..., None]
    return torch.cat([per_node, glob[..., None, :] * is_depot, is_depot], -1)


def state_features(td: TensorDict) -> torch.Tensor:
    """[B, 7]: room for linehauls (capacity left at the route's fullest point) and for
    backhauls (fractions), current time over the depot's closing time (0 without windows),
    remaining route length over the limit (1 without a limit), the open flag and the location
    of the depot the route started from (MD: where a closed route must return)."""
    horizon = td["time_windows"][..., 0, 1]
    finite_h = torch.isfinite(horizon)
    time = torch.where(
        finite_h, td["current_time"] / torch.where(finite_h, horizon, 1.0).clamp_min(1e-9), 0.0
    )
    limit = td["distance_limit"]
    finite_l = torch.isfinite(limit)
    safe = torch.where(finite_l, limit, 1.0).clamp_min(1e-9)
    remaining = torch.where(finite_l, (limit - td["current_route_length"]) / safe, 1.0)
    locs = td["locs"]
    depot = locs.gather(-2, td["route_depot"][..., None, None].expand(*locs.shape[:-2], 1, 2))
    return torch.cat(
        [
            torch.stack(
                [
                    1.0 - td["used_capacity_linehaul"] - td["peak_load"],
                    1.0 - td["used_capacity_backhaul"],
                    time,
                    remaining,
                    td["open_route"].float(),
                ],
                -1,
            ),
            depot.squeeze(-2),
        ],
        -1,
    )


def num_starts(td: TensorDict) -> int:
    """POMO starts: one per customer."""
    return int(td["locs"].shape[-2]) - _depot_slots(td)


def start_nodes(td: TensorDict, n: int) -> torch.Tensor:
    """First actions [B, n] for POMO multistart: the first n customers (routes from depot 0)."""
    b = td["locs"].shape[0]
    k = _depot_slots(td)
    return torch.arange(k, k + n, device=td["locs"].device).expand(b, n)


def _depot_slots(td: TensorDict) -> int:
    k = td["num_depots"]
    if k.numel() and bool((k != k.reshape(-1)[0]).any()):
        raise ValueError("every instance of a batch needs the same number of depot slots")
    return int(k.reshape(-1)[0]) if k.numel() else 1


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
    num_starts=num_starts,
    start_nodes=start_nodes,
    instance_keys=INSTANCE_KEYS,
    instance_to_td=from_instance,
    td_to_instance=to_instance,
    accepts=("cvrp", "cvrptw"),
    split_depot_tour=split_depot_tour,
    file_type=None,
    has_variants=True,
    reward_norm="std",
)
