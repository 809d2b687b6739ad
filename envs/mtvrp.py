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
  route is open, is at most ``distance_limit``. With time windows an L instance may instead
  (or also) carry a route **duration** limit ``duration_limit`` (PyVRP's duration: travel,
  service and waiting from leaving the depot to returning, or to the end of the last service
  on an open route): ``distance_limit`` then holds the same value (a route is never longer
  than it lasts, so that length limit is implied), which is what the network reads as its L
  feature. The env enforces it exactly as the checker measures it: the vehicle leaves the
  depot as late as the route's windows allow (a later departure never lengthens a route), so
  a route's least duration is its length of time in the env's schedule (which leaves at the
  depot's opening) minus ``min(W, S)``, W the route's total waiting and S the most its
  departure can be delayed without missing a window (nor leaving after the depot closes, nor,
  closed, returning after it closes): ``S = min_k(W_k + l_k - b_k)`` over its customers k (W_k
  the waiting up to k, b_k its service start), Savelsbergh's forward time slack. The env tracks
  W and S (``route_wait``, ``route_slack``) and masks out a customer when the route's least
  duration after serving it and returning to the route's depot (no return leg when open)
  would exceed ``duration_limit``. This is :func:`route_duration` (PyVRP's definition, the
  checker's) computed forward, so a plan the mask allows passes the checker's duration test.
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
* ``duration_limit`` [B], optional (absent or +inf: none): a route duration limit, see L.
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
(departure time from the current node), ``current_route_length`` [B], ``route_wait`` and
``route_slack`` [B] (the route's waiting and forward time slack, see L; 0 and the depot's
closing minus opening while at a depot), ``visited`` [B, N],
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

Two more ``distribution`` values draw data like the shared variant files, scaled as
:func:`from_instance` scales a file (coordinates into the unit square by one factor, times and
limits divided by it, demands by the capacity), so that a generated instance looks to the
network like a converted file:

* ``vrpb`` (Queiroga et al. 2020, default variant VRPB): an X-like instance of
  :class:`~nco.envs.uchoa.UchoaGenerator` (depot, customers, demands and capacity per
  instance, as the X files Queiroga's VRPB files keep unchanged) whose first
  ``ceil(s n)`` customers are linehauls and the others backhauls of the same amount, with the
  linehaul share s drawn from Queiroga's 50%, 66% and 80% (backhaul fractions 50, 34, 20%; the
  shared files are the 50% ones). X files list the large demands of small-large instances
  first, so those are linehauls; otherwise the order is random. Windows, limits and extra
  depots of other variants follow RouteFinder's laws above.
* ``mdvrptw`` (Cordeau et al. 2001 as extended by Vidal et al. 2013, the shared PR11A-PR24A;
  default variant MDVRPLTW, with a ``duration_limit``): in the files' units, 4, 6 or 12 depots
  (weights 6:4:4, as the files; drawn once per call: a batch has one depot count, unless
  ``num_depots`` fixes it) uniform in [-50, 50]^2; customers uniform in [-100, 100]^2, each
  kept with probability ``1 - exp(-d / 20)`` for its distance d to the nearest depot (the
  files are sparser near depots); demands and service times U{1..25}; windows
  ``[e, e + w]`` with e ~ U{60..480}, w ~ U{90..180}; depot windows [0, 1000]; (capacity,
  duration limit) drawn from the files' pairs (170-200, 400-475). A customer that cannot be
  served alone from depot 0 is drawn again (so every variant of the data is solvable). Scaled,
  the horizon is about 5, the duration limit 2.0-2.4. B variants use ``backhaul_ratio``.
  The files' vehicle counts are not drawn (the env's fleet is unlimited).

Files: :class:`~nco.envs.instance.Instance` holds every attribute (see its docstring), so
VRPLIB files of the variants load as ``"mtvrp"`` instances; :func:`from_instance` /
:func:`to_instance` convert between them and these tensors (``PROBLEM.from_instance`` also
takes CVRP and CVRPTW instances) and :func:`check_routes` checks routes in instance units. The
env's fleet is unlimited (as for CVRP): a file's vehicle counts, also per depot, are enforced
by the checker only. A duration limit with time windows becomes ``duration_limit`` (see L); one
with service times but no windows is refused by :func:`from_instance`. The classical references also solve
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
    numpy_rng,
    pairwise_distance,
    reset_input,
    sample_coords,
    set_random_action,
    standard_capacity,
)
from nco.envs.cvrp import CAP_TOL
from nco.envs.cvrptw import sample_time_windows
from nco.envs.instance import FEAS_TOL, Instance, InstanceError, Violation
from nco.envs.uchoa import UchoaGenerator


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

#: Generator distributions: the coordinate laws shared with the other problems (RouteFinder's
#: data otherwise), plus ``vrpb`` (X-like VRPB instances as Queiroga et al. 2020) and
#: ``mdvrptw`` (multi-depot VRPTW as Cordeau et al. 2001 / Vidal et al. 2013); see the module
#: docstring.
MTVRP_DISTRIBUTIONS: tuple[str, ...] = (*DISTRIBUTIONS, "vrpb", "mdvrptw")
#: The variants a distribution draws when ``variants`` is not given.
DEFAULT_VARIANTS: dict[str, tuple[str, ...]] = {"vrpb": ("VRPB",), "mdvrptw": ("MDVRPLTW",)}

#: ``vrpb``: the linehaul shares of Queiroga et al. (2020), one drawn per instance; the first
#: ``ceil(share n)`` customers of the X-like instance (in the X files' order) are linehauls.
VRPB_LINEHAUL_SHARES = (0.5, 0.66, 0.8)

# ``mdvrptw`` in the files' units (Cordeau's square [-100, 100]^2, times in the same units);
# every constant was measured on the 14 shared files PR11A-PR24A (tests/envs/
# test_variant_generators.py compares the generated statistics with them).
#: Depots per instance and how many files have that many (PR11-16: 4, PR17-20: 6, PR21-24: 12).
MDVRPTW_DEPOTS: tuple[tuple[int, int], ...] = ((4, 6), (6, 4), (12, 4))
#: (capacity, duration limit) pairs of the files; one drawn per instance.
MDVRPTW_FLEET: tuple[tuple[int, int], ...] = (
    (200, 450), (195, 440), (190, 430), (185, 420), (180, 410), (175, 400), (200, 460),
    (190, 440), (180, 420), (170, 400), (200, 475), (190, 450), (180, 425), (170, 400),
)  # fmt: skip
#: Half side of the customers' square and of the depots' square (depots uniform in it).
MDVRPTW_SQUARE, MDVRPTW_DEPOT_SQUARE = 100.0, 50.0
#: Depot window [0, horizon]; integer uniform laws (inclusive) of demands, service times,
#: window starts and window widths.
MDVRPTW_HORIZON = 1000.0
MDVRPTW_DEMAND, MDVRPTW_SERVICE = (1, 25), (1, 25)
MDVRPTW_READY, MDVRPTW_WIDTH = (60, 480), (90, 180)
#: Customers are sparser near the depots: a uniform point is kept with probability
#: ``1 - exp(-d / MDVRPTW_THINNING)``, d its distance to the nearest depot (the files' density
#: ratio to a uniform square is 0.21, 0.53, 0.65, 0.83, 0.91 at d = 5, 15, 25, 35, 45).
MDVRPTW_THINNING = 20.0

#: Instance keys that may be absent: ``duration_limit`` [B] (+inf or absent: none) and the
#: fleet, ``depot_vehicles`` [B, num_depots] (vehicles based at each depot slot) and
#: ``max_vehicles`` [B] (vehicles in all), float, +inf or absent: unlimited (see
#: :func:`vehicles_left`).
OPTIONAL_KEYS = ("duration_limit", "depot_vehicles", "max_vehicles")
#: The fleet keys of :data:`OPTIONAL_KEYS`; with either present the env tracks ``depot_routes``.
FLEET_KEYS = ("depot_vehicles", "max_vehicles")

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
    (and M is off); without L the limits are +inf; without TW every window is [0, +inf) and
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
    if "duration_limit" in out.keys():
        out["duration_limit"] = torch.where(
            lim, out["duration_limit"], torch.full_like(out["duration_limit"], math.inf)
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
    max_duration: float | torch.Tensor | None = None,
) -> TensorDict:
    """MTVRP tensors from arrays: demands in capacity units (divided by ``capacity`` here),
    absent attributes neutral, flags and ``variant`` derived from what is given.

    ``max_duration`` is a route duration limit (travel, service and waiting; see the module
    docstring): it adds ``duration_limit`` and is an L limit, also on length (``distance_limit``
    is the smaller of the two).

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
    has_l = torch.full((b,), distance_limit is not None or max_duration is not None, device=dev)
    has_tw = torch.full((b,), time_windows is not None, device=dev)
    limit = (
        torch.full((b,), math.inf, **f32)
        if distance_limit is None
        else torch.as_tensor(distance_limit, **f32).expand(b).clone()
    )
    duration = None
    if max_duration is not None:
        duration = torch.as_tensor(max_duration, **f32).expand(b).clone()
        limit = torch.minimum(limit, duration)
    if time_windows is None:
        tw = torch.zeros(b, n, 2, **f32)
        tw[..., 1] = math.inf
    else:
        tw = torch.as_tensor(time_windows, **f32)
    st = torch.zeros(b, n, **f32) if service_time is None else torch.as_tensor(service_time, **f32)
    o = torch.as_tensor(open_route, dtype=torch.bool, device=dev).expand(b).clone()
    mixed = torch.as_tensor(mixed_backhaul, dtype=torch.bool, device=dev).expand(b).clone()
    md = torch.full((b,), num_depots > 1, device=dev)
    extra = {} if duration is None else {"duration_limit": duration}
    return TensorDict(
        {
            **extra,
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
    variants : variant names to draw from (default: all 16; ``VRPB`` for ``distribution="vrpb"``,
        ``MDVRPLTW`` for ``"mdvrptw"``).
    variant_probs : their probabilities (normalised; default uniform).
    distribution : ``uniform``, ``clustered`` or ``mixed`` customer coordinates (RouteFinder's
        data otherwise); ``vrpb``: X-like customers, demands and capacity with Queiroga's
        linehaul shares; ``mdvrptw``: Cordeau/Vidal-like multi-depot instances with windows and
        a duration limit (see the module docstring).
    capacity : vehicle capacity; default :func:`~nco.envs.common.standard_capacity`.
    min_demand, max_demand : integer demands (linehaul and backhaul) in this range.
    backhaul_ratio : probability that a customer is a backhaul (B variants).
    max_time : depot closing time of TW variants.
    max_distance_limit : upper end of RouteFinder's sampled distance limit.
    distance_limit : a fixed limit for every L instance instead (MVMoE: 3.0); must be at least
        2 sqrt 2 so that every customer of the unit square is reachable.
    num_depots : depots of MD instances (RouteFinder: 3). A batch has this many depot slots
        when ``variants`` includes an MD variant (single-depot instances then repeat their
        depot in every slot), else one. With ``mdvrptw`` and no value, each call draws it from
        the files' counts (:data:`MDVRPTW_DEPOTS`).

    ``vrpb`` and ``mdvrptw`` draw capacities (and ``mdvrptw`` horizons and limits) per
    instance: ``capacity``, ``min_demand``, ``max_demand`` (and for ``mdvrptw`` ``max_time``,
    ``max_distance_limit``, ``distance_limit``; for ``vrpb`` ``backhaul_ratio``) must keep
    their defaults. See the module docstring for the distributions.
    """

    num_loc: int = 20
    variants: tuple[str, ...] | None = None
    variant_probs: tuple[float, ...] | None = None
    distribution: str = "uniform"
    capacity: float | None = None
    min_demand: int = 1
    max_demand: int = 9
    backhaul_ratio: float = 0.2
    max_time: float = 4.6
    max_distance_limit: float = 2.8
    distance_limit: float | None = None
    num_depots: int | None = None

    def __post_init__(self) -> None:
        if self.num_loc < 1:
            raise ValueError(f"num_loc must be >= 1, got {self.num_loc}")
        if self.distribution not in MTVRP_DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {MTVRP_DISTRIBUTIONS}, got {self.distribution!r}"
            )
        family = self.distribution in DEFAULT_VARIANTS
        if family:
            fixed: dict[str, object] = {"capacity": None, "min_demand": 1, "max_demand": 9}
            if self.distribution == "vrpb":
                fixed["backhaul_ratio"] = 0.2
            else:
                fixed.update(max_time=4.6, max_distance_limit=2.8, distance_limit=None)
            changed = [k for k, v in fixed.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(
                    f"distribution {self.distribution!r} draws its own capacities, demands and "
                    f"limits; leave {', '.join(changed)} at the default"
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
        if self.variants is None:
            names: tuple[str, ...] = DEFAULT_VARIANTS.get(self.distribution, VARIANT_NAMES)
        elif isinstance(self.variants, str):
            names = (self.variants,)
        else:
            names = tuple(self.variants)
        if not names:
            raise ValueError("variants must name at least one variant")
        variants = tuple(ALL_VARIANT_NAMES[variant_index(v)] for v in names)
        object.__setattr__(self, "variants", variants)
        if self.num_depots is None:
            # mdvrptw without a count draws one per call (the files' 4, 6 or 12)
            if self.distribution != "mdvrptw":
                object.__setattr__(self, "num_depots", 3)
        elif self.num_depots < 1:
            raise ValueError(f"num_depots must be >= 1, got {self.num_depots}")
        if self.variant_probs is not None:
            probs = tuple(float(p) for p in self.variant_probs)
            if len(probs) != len(variants):
                raise ValueError(
                    f"variant_probs has {len(probs)} entries for {len(variants)} variants"
                )
            if any(not math.isfinite(p) or p < 0 for p in probs) or sum(probs) <= 0:
                raise ValueError(
                    f"variant_probs must be non-negative with a positive sum, got {probs}"
                )
            object.__setattr__(self, "variant_probs", probs)

    @property
    def vehicle_capacity(self) -> float:
        """The capacity used (explicit or standard); ``vrpb`` and ``mdvrptw`` draw one per
        instance (ValueError: read ``td["capacity"]``)."""
        if self.distribution in DEFAULT_VARIANTS:
            raise ValueError(
                f"distribution {self.distribution!r} draws the capacity per instance; read td['capacity']"
            )
        return (
            float(self.capacity) if self.capacity is not None else standard_capacity(self.num_loc)
        )

    @property
    def depot_slots(self) -> int | None:
        """Depot rows per instance: ``num_depots`` if an MD variant can be drawn, else 1;
        None where each call draws the count (``mdvrptw`` without ``num_depots``)."""
        if self.distribution == "mdvrptw":
            return self.num_depots
        md = any(VARIANTS[v].multi_depot for v in self.variants or ())
        return self.num_depots if md else 1

    @property
    def probabilities(self) -> tuple[float, ...]:
        """Normalised probability of each entry of ``variants``."""
        names = self.variants or ()
        p = self.variant_probs if self.variant_probs is not None else (1.0,) * len(names)
        s = sum(p)
        return tuple(x / s for x in p)

    def _variant_ids(self, b: int, g: torch.Generator, device: str | torch.device) -> torch.Tensor:
        probs = torch.tensor(self.probabilities, dtype=torch.float32, device=device)
        pick = torch.multinomial(probs, b, replacement=True, generator=g)
        names = self.variants or ()
        return torch.tensor([variant_index(v) for v in names], device=device)[pick]

    def __call__(
        self,
        batch_size: int | Sequence[int],
        *,
        seed: int | None = None,
        rng: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> TensorDict:
        """Generate a batch [B] with the keys of the module docstring (``mdvrptw`` adds
        ``duration_limit``)."""
        (b,) = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        g = rng if rng is not None else make_rng(as_seed(seed), device)
        if self.distribution == "mdvrptw":
            return self._mdvrptw(b, g, device)
        n = self.num_loc
        if self.distribution == "vrpb":
            x = UchoaGenerator(n)(b, rng=g, device=device)
            # the unit square as from_instance scales a file, so that the network sees what a
            # converted Queiroga file shows
            locs = unit_square(x["locs"])
            amount = x["demand"][:, 1:]
            cap = x["capacity"]
            share = torch.tensor(VRPB_LINEHAUL_SHARES, dtype=torch.float64, device=device)
            share = share[torch.randint(0, len(VRPB_LINEHAUL_SHARES), (b,), generator=g, device=device)]
            # Queiroga's rule: the first ceil(share n) customers of the X file are linehauls.
            # X files list the large demands of small-large instances first (demands in
            # 1..10 and 50..100, none between), so those are all linehauls; otherwise the
            # X-like order is a random permutation and the backhauls a random subset.
            q = amount * cap[:, None]
            mid = ((q > 10.5) & (q < 49.5)).any(1, keepdim=True)
            large = (q > 49.5) & ~mid
            key = (~large).long() * n + torch.arange(n, device=device)
            rank = key.argsort(1).argsort(1)
            linehauls = torch.ceil(share * n - 1e-9).long()
            is_bh = rank >= linehauls[:, None]
        else:
            depot = torch.rand(b, 1, 2, generator=g, device=device)
            locs = torch.cat([depot, sample_coords(b, n, self.distribution, g, device)], 1)
            cap = torch.full((b,), self.vehicle_capacity, dtype=torch.float64, device=device)
            amount = (
                torch.randint(
                    self.min_demand, self.max_demand + 1, (b, n), generator=g, device=device
                ).float()
                / float(cap[0])
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
        ids = self._variant_ids(b, g, device)
        k = self.depot_slots or 1
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
                "capacity": cap,
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

    def _mdvrptw(self, b: int, g: torch.Generator, device: str | torch.device) -> TensorDict:
        """Cordeau/Vidal-like instances (see the module docstring), scaled as from_instance
        scales a file: coordinates into the unit square by one factor, times and the duration
        limit divided by it, demands by the capacity."""
        rng = numpy_rng(None, g)
        n = self.num_loc
        k = self.num_depots
        if k is None:
            counts = np.array([c for c, _ in MDVRPTW_DEPOTS])
            weights = np.array([w for _, w in MDVRPTW_DEPOTS], dtype=np.float64)
            k = int(rng.choice(counts, p=weights / weights.sum()))
        data = sample_mdvrptw(rng, b, n, k)
        is_bh = rng.random((b, n)) < self.backhaul_ratio
        coords = data["coords"]
        lo = coords.min(1, keepdims=True)
        span = np.maximum((coords.max(1, keepdims=True) - lo).max(-1), 1e-9)  # [B, 1]
        cap = data["capacity"]
        amount = data["demand"] / cap[:, None]
        lh = np.concatenate([np.zeros((b, k)), np.where(is_bh, 0.0, amount)], 1)
        bh = np.concatenate([np.zeros((b, k)), np.where(is_bh, amount, 0.0)], 1)
        tw = np.zeros((b, k + n, 2))
        tw[:, :k, 1] = MDVRPTW_HORIZON
        tw[:, k:, 0] = data["ready"]
        tw[:, k:, 1] = data["ready"] + data["width"]
        st = np.concatenate([np.zeros((b, k)), data["service"]], 1)
        limit = data["duration"] / span[:, 0]

        def f32(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, dtype=torch.float32, device=device)

        full = TensorDict(
            {
                "locs": f32((coords - lo) / span[..., None]),
                "demand_linehaul": f32(lh),
                "demand_backhaul": f32(bh),
                "capacity": torch.as_tensor(cap, dtype=torch.float64, device=device),
                "open_route": torch.ones(b, dtype=torch.bool, device=device),
                # the duration limit is also the L feature's value (a route's length never
                # exceeds its duration, so the length limit it implies is redundant)
                "distance_limit": f32(limit),
                "duration_limit": f32(limit),
                "time_windows": f32(tw / span[..., None]),
                "service_time": f32(st / span),
                "num_depots": torch.full((b,), k, dtype=torch.int64, device=device),
            },
            batch_size=[b],
            device=device,
        )
        return neutralise(full, _FLAGS.to(device)[self._variant_ids(b, g, device)])


def unit_square(locs: torch.Tensor) -> torch.Tensor:
    """Coordinates [B, N, 2] shifted and scaled by one factor per instance into the unit square,
    as :meth:`~nco.envs.Instance.to_tensordict` normalises a file."""
    lo = locs.amin(1, keepdim=True)
    span = (locs.amax(1, keepdim=True) - lo).amax(-1, keepdim=True).clamp_min(1e-9)
    return (locs - lo) / span


def sample_mdvrptw(rng: np.random.Generator, b: int, n: int, k: int) -> dict[str, np.ndarray]:
    """Cordeau/Vidal-like MDVRPTW data in the files' units (see the module docstring).

    Returns ``coords`` [B, k + n, 2] (depots first), ``demand``, ``service``, ``ready``,
    ``width`` [B, n] (integers as floats), ``capacity`` and ``duration`` [B]. Every customer can
    be served alone from depot 0 (within its window, back before the horizon, within the
    duration limit): a customer that cannot is drawn again, so that the instance stays solvable
    whichever attributes a variant switches off (the files: 99.6-100% of the customers can be
    served from every depot).
    """
    depots = rng.uniform(-MDVRPTW_DEPOT_SQUARE, MDVRPTW_DEPOT_SQUARE, (b, k, 2))
    fleet = np.array(MDVRPTW_FLEET, dtype=np.float64)[rng.integers(0, len(MDVRPTW_FLEET), b)]
    cust = np.empty((b, n, 2))
    attrs = {key: np.empty((b, n)) for key in ("demand", "service", "ready", "width")}
    laws = {
        "demand": MDVRPTW_DEMAND,
        "service": MDVRPTW_SERVICE,
        "ready": MDVRPTW_READY,
        "width": MDVRPTW_WIDTH,
    }
    for i in range(b):
        todo = np.arange(n)
        while todo.size:
            pts = _thinned_points(rng, depots[i], todo.size)
            cust[i, todo] = pts
            for key, (lo, hi) in laws.items():
                attrs[key][i, todo] = rng.integers(lo, hi, endpoint=True, size=todo.size)
            d0 = np.linalg.norm(pts - depots[i, 0], axis=-1)
            start = np.maximum(d0, attrs["ready"][i, todo])
            service = attrs["service"][i, todo]
            ok = start <= attrs["ready"][i, todo] + attrs["width"][i, todo]
            ok &= start + service + d0 <= MDVRPTW_HORIZON
            # alone, a vehicle leaves just in time and never waits
            ok &= 2.0 * d0 + service <= fleet[i, 1] * (1.0 - 1e-6)
            todo = todo[~ok]
    return {
        "coords": np.concatenate([depots, cust], 1),
        **attrs,
        "capacity": fleet[:, 0],
        "duration": fleet[:, 1],
    }


def _thinned_points(rng: np.random.Generator, depots: np.ndarray, m: int) -> np.ndarray:
    """``m`` points [m, 2] uniform in the customers' square, each kept with probability
    ``1 - exp(-d / MDVRPTW_THINNING)`` (d: distance to the nearest of ``depots`` [k, 2])."""
    out = np.empty((0, 2))
    while out.shape[0] < m:
        cand = rng.uniform(-MDVRPTW_SQUARE, MDVRPTW_SQUARE, (2 * (m - out.shape[0]) + 8, 2))
        d = np.linalg.norm(cand[:, None] - depots[None], axis=-1).min(1)
        keep = rng.random(cand.shape[0]) < 1.0 - np.exp(-d / MDVRPTW_THINNING)
        out = np.concatenate([out, cand[keep]])
    return out[:m]


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
    ``done`` (window, return before the depot closes, distance and duration limits,
    capacity)."""
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
    if "duration_limit" in td.keys():
        opening, closing = tw[:, :k, 0:1], tw[:, :k, 1:2]
        alone = least_duration(
            opening,
            out_d,
            tw[:, None, :, 0],
            tw[:, None, :, 1],
            td["service_time"][:, None],
            tail,
            torch.zeros_like(opening),
            closing - opening,
            opening,
            torch.where(closed, closing, math.inf),
        )
        in_limit = in_limit & (alone <= td["duration_limit"][:, None, None] + MASK_TOL)
    fits = (td["demand_linehaul"] <= 1.0 + CAP_TOL) & (td["demand_backhaul"] <= 1.0 + CAP_TOL)
    ok = in_window & returns & in_limit & (fits & ~done)[:, None]
    serves = torch.zeros(td["locs"].shape[0], n, dtype=torch.bool, device=ok.device)
    serves[:, :k] = ok.any(2)
    return serves


def has_fleet(td: TensorDict) -> bool:
    """Whether the tensors carry a fleet (``depot_vehicles`` or ``max_vehicles``): the env then
    tracks ``depot_routes`` and limits the routes (see :func:`vehicles_left`)."""
    keys = td.keys()
    return any(k in keys for k in FLEET_KEYS)


def vehicles_left(td: TensorDict, depot_routes: torch.Tensor) -> torch.Tensor:
    """[B, N] bool: the depot slots with a vehicle left to start a new route, given the routes
    started from each slot so far, ``depot_routes`` [B, K]: fewer than ``depot_vehicles`` there
    and fewer than ``max_vehicles`` in all (an absent key or +inf: no limit). False for
    customers."""
    b, k = depot_routes.shape
    n = td["locs"].shape[-2]
    left = torch.ones(b, k, dtype=torch.bool, device=depot_routes.device)
    if "depot_vehicles" in td.keys():
        left = depot_routes < td["depot_vehicles"][:, :k]
    if "max_vehicles" in td.keys():
        left = left & (depot_routes.sum(1) < td["max_vehicles"])[:, None]
    out = torch.zeros(b, n, dtype=torch.bool, device=depot_routes.device)
    out[:, :k] = left
    return out


def spare_vehicles(
    td: TensorDict, depot_routes: torch.Tensor, where: torch.Tensor | None = None
) -> torch.Tensor:
    """[B] float: the routes the fleet still allows (+inf: unlimited), from the depot slots
    ``where`` [B, N] only when given: the vehicles left at those depots, at most what
    ``max_vehicles`` leaves in all."""
    b, k = depot_routes.shape
    out = torch.full((b,), math.inf, device=depot_routes.device)
    if "depot_vehicles" in td.keys():
        left = (td["depot_vehicles"][:, :k] - depot_routes).clamp_min(0.0)
        if where is not None:
            left = torch.where(where[:, :k], left, torch.zeros_like(left))
        out = left.sum(1)
    if "max_vehicles" in td.keys():
        out = torch.minimum(out, (td["max_vehicles"] - depot_routes.sum(1)).clamp_min(0.0))
    return out


def routes_needed(td: TensorDict, visited: torch.Tensor) -> torch.Tensor:
    """[B] float: a lower bound on the routes that serve the unvisited customers: their
    linehaul total and their backhaul total over the capacity (a route carries at most one
    capacity of each), rounded up, and at least 1 while a customer is left."""
    cust = ~(visited | is_depot_node(td))
    lh = torch.where(cust, td["demand_linehaul"], 0.0).sum(1)
    bh = torch.where(cust, td["demand_backhaul"], 0.0).sum(1)
    # rounded down by float32's error on the sums, so that the bound never overstates
    load = torch.maximum(lh, bh)
    need = torch.ceil(load * (1.0 - 1e-5) - 1e-4).clamp_min(0.0)
    return torch.maximum(need, cust.any(1).to(need.dtype))


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
    wait: torch.Tensor | None = None,
    slack: torch.Tensor | None = None,
    depot_routes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feasible next nodes [B, N].

    A customer is allowed when unvisited and its demand fits, it is a backhaul or no backhaul
    has been collected on the route yet (unless M), service can start within its window, the
    route length after it (plus the way back unless open) stays within the limit, (unless
    open) the route's depot can still be reached before it closes, and, with a
    ``duration_limit``, the route's least duration after it (and the way back unless open;
    from the route's waiting ``wait`` and forward time slack ``slack``, see
    :func:`least_duration`) stays within that limit.

    Depots: from a customer only the route's own depot (the return). At a depot, another
    depot (MD instances only) is a zero-cost switch of the next route's start, allowed once
    between two routes unless no customer can be served from here, and only to a depot from
    which a new route can serve a customer (so a switch is always followed by a customer). The
    current depot itself is allowed only when no customer can be served and no switch is
    possible (the padding action once every customer is served).

    Fleet (``depot_routes`` [B, K], the routes started from each depot slot, given with a
    ``depot_vehicles`` / ``max_vehicles`` key; see :func:`vehicles_left`): at a depot, a
    customer (a new route) is allowed only when the depot has a vehicle left, and a switch only
    to a depot with a vehicle left (a switch is allowed again when the current depot has none,
    still only to depots that can serve a customer). From a customer the return is refused
    while the route can go on to a customer and the vehicles left at the depots that could
    serve a remaining customer are fewer than the remaining customers need
    (:func:`routes_needed`, at least one): returning then leaves every completion over the
    fleet (so the last vehicle keeps going while it can). Where these rules leave a depot with customers to serve and no action,
    the fleet cannot be met and that step's mask is the one without a fleet (the plan exceeds
    the fleet, which the checker reports), so a rollout never gets stuck. Unlimited values
    (+inf) give exactly the mask without a fleet.
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
    at_depot = current < td["num_depots"]
    if "duration_limit" in td.keys():
        opening, closing = (tw[..., j].gather(1, rd[:, None]) for j in (0, 1))
        w0 = torch.zeros_like(time) if wait is None else wait
        s0 = (closing - opening).squeeze(1) if slack is None else slack
        w0 = torch.where(at_depot, 0.0, w0)
        s0 = torch.where(at_depot, (closing - opening).squeeze(1), s0)
        dur = least_duration(
            time[:, None],
            travel,
            tw[..., 0],
            tw[..., 1],
            td["service_time"],
            tail,
            w0[:, None],
            s0[:, None],
            opening,
            torch.where(closed, horizon, math.inf),
        )
        in_limit = in_limit & (dur <= td["duration_limit"][:, None] + MASK_TOL)
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
    can_serve = cust.any(1)
    left = ~(visited | depot).all(1)
    was_switch = torch.zeros_like(at_depot) if switched is None else switched
    switch = (
        depot
        & (idx != current[:, None])
        & (at_depot & td["has_multi_depot"] & left & (~was_switch | ~can_serve))[:, None]
    )
    fleet = depot_routes is not None and has_fleet(td)
    serves = None
    if td["has_multi_depot"].any() or fleet:
        serves = _depot_serves(td, visited | depot)
    if td["has_multi_depot"].any():
        # Only to a depot that can serve a customer, so a policy cannot switch back and forth
        # between depots that serve nothing (every switch is followed by a customer).
        assert serves is not None
        switch = switch & serves
    ret = ~at_depot[:, None] & (idx == rd[:, None])
    stay = (at_depot & ~can_serve & ~switch.any(1))[:, None] & (idx == current[:, None])
    free = cust | ret | switch | stay
    if not fleet:
        return free
    assert depot_routes is not None and serves is not None
    # The same rules with the fleet (see the docstring): a new route only from a depot with a
    # vehicle left, a switch only to one.
    has = vehicles_left(td, depot_routes)
    here = has.gather(1, current[:, None]).squeeze(1)
    cust_f = cust & (~at_depot | here)[:, None]
    serve_f = cust_f.any(1)
    switch_f = (
        depot
        & (idx != current[:, None])
        & (at_depot & td["has_multi_depot"] & left & (~was_switch | ~serve_f))[:, None]
        & serves
        & has
    )
    # A route keeps going while it can when returning would leave fewer vehicles than the
    # remaining customers need (their demand over the capacity, at least 1), counting the
    # vehicles of the depots that could serve one of them (and some depot could: otherwise
    # the fleet is not the cause): then every plan through this return exceeds the fleet.
    # only a row's own depots count: the other slots of a single-depot row (MD off) copy its
    # depot, and it can never switch to them
    mine = (idx < td["num_depots"][:, None]) & (td["has_multi_depot"][:, None] | (idx == 0))
    own = serves & mine
    short = own.any(1) & (spare_vehicles(td, depot_routes, own) < routes_needed(td, visited))
    ret_f = ret & ~(short & can_serve)[:, None]
    fleet_mask = cust_f | ret_f | switch_f | (stay & ~left[:, None])
    # a depot with customers left and no action under the fleet: the fleet cannot be met
    use = ~at_depot | ~left | cust_f.any(1) | switch_f.any(1)
    return torch.where(use[:, None], fleet_mask, free)


def least_duration(
    time: torch.Tensor,
    travel: torch.Tensor,
    ready: torch.Tensor,
    due: torch.Tensor,
    service: torch.Tensor,
    tail: torch.Tensor,
    wait: torch.Tensor,
    slack: torch.Tensor,
    opening: torch.Tensor,
    horizon: torch.Tensor | float,
) -> torch.Tensor:
    """Least duration (PyVRP's, as :func:`route_duration`) of a route extended by one node and
    ended there, all arguments broadcast together.

    The route so far left its depot at ``opening``, is ready at ``time`` with total waiting
    ``wait`` and forward time slack ``slack`` (the most its departure can be delayed: the
    depot's closing minus opening at the depot); the node is ``travel`` away with window
    [``ready``, ``due``] and ``service``; ``tail`` is the way back (0 for an open route) and
    ``horizon`` the depot's closing time for the return (+inf for an open route). Delaying the
    departure by d (at most the slack) removes min(d, waiting) of the duration.
    """
    arrive = time + travel
    start = torch.maximum(arrive, ready)
    waited = wait + (start - arrive)
    end = start + service + tail
    room = torch.minimum(torch.minimum(slack, waited + due - start), waited + horizon - end)
    return end - opening - torch.minimum(waited, room).clamp_min(0.0)


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
        # the optional duration limit is declared where the generator draws it
        optional = {"duration_limit": real()} if self.generator.distribution == "mdvrptw" else {}
        instance_specs(
            self,
            n,
            {
                **optional,
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
                "route_wait": real(),
                "route_slack": real(),
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
        for k in ("time_windows", "distance_limit", "duration_limit", *FLEET_KEYS):
            if k in td.keys() and torch.isnan(td[k]).any():
                raise ValueError(f"instance tensor {k!r} contains NaN")
        if "depot_vehicles" in td.keys():
            slots = _depot_slots(td)
            if td["depot_vehicles"].shape[-1] != slots:
                raise ValueError(
                    f"depot_vehicles has {td['depot_vehicles'].shape[-1]} columns for {slots} depot slots"
                )
        for k in FLEET_KEYS:
            if k in td.keys() and bool((td[k] < 0).any()):
                raise ValueError(f"instance tensor {k!r} has negative vehicle counts")
        return flat_batch(self._reset_flat, td)

    def _keep(self, td: TensorDict) -> TensorDict:
        return td.select(
            *[
                k
                for k in (*INSTANCE_KEYS, *OPTIONAL_KEYS, "distance", "scale", "offset")
                if k in td.keys()
            ]
        )

    def _reset_flat(self, td: TensorDict) -> TensorDict:
        b, n = td["demand_linehaul"].shape
        dev = td["demand_linehaul"].device
        current = torch.zeros(b, dtype=torch.int64, device=dev)
        zero = torch.zeros(b, dtype=torch.float32, device=dev)
        time = td["time_windows"][:, 0, 0].clone()
        visited = torch.zeros(b, n, dtype=torch.bool, device=dev)
        out = self._keep(td)
        routes = None
        if has_fleet(td):
            # routes started from each depot slot (the fleet's state)
            routes = torch.zeros(b, _depot_slots(td), dtype=torch.float32, device=dev)
            out["depot_routes"] = routes
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
                "route_wait": zero.clone(),
                "route_slack": td["time_windows"][:, 0, 1] - time,
                "visited": visited,
                "i": torch.zeros(b, dtype=torch.int64, device=dev),
                "action_mask": mtvrp_mask(
                    td, zero, zero, visited, current, time, zero, depot_routes=routes
                ),
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
        # the route's waiting and forward time slack (see least_duration); reset at a depot
        due = tw[..., 1].gather(1, idx).squeeze(1)
        arrive = td["current_time"] + step_len
        begin = torch.maximum(arrive, earliest)
        waited = td["route_wait"] + (begin - arrive)
        wait = torch.where(at_depot, zero, waited)
        slack = torch.where(
            at_depot, due - earliest, torch.minimum(td["route_slack"], waited + due - begin)
        )
        out = self._keep(td)
        routes = None
        if "depot_routes" in td.keys():
            # a depot -> customer step starts a route from the current depot
            start = (td["current_node"] < k) & ~at_depot
            routes = td["depot_routes"].scatter_add(
                1, td["route_depot"][:, None], start[:, None].to(td["depot_routes"].dtype)
            )
            out["depot_routes"] = routes
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
                "route_wait": wait,
                "route_slack": slack,
                "visited": visited,
                "i": td["i"] + 1,
                "action_mask": mtvrp_mask(
                    td,
                    used_lh,
                    used_bh,
                    visited,
                    action,
                    time,
                    length,
                    peak,
                    route_depot,
                    switched,
                    wait,
                    slack,
                    routes,
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
    """Check action sequences [B, T] against normalised tensors; one violation list per element
    (with a ``duration_limit``, also ``duration``: :func:`route_duration` over it; with a fleet,
    ``depot_vehicles`` / ``max_vehicles``, also ``vehicles``: more routes than the vehicles in
    all or based at a depot, :func:`~nco.envs.common.check_fleet`)."""
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
    dur_lim = arr("duration_limit") if "duration_limit" in td.keys() else None
    per_depot = arr("depot_vehicles") if "depot_vehicles" in td.keys() else None
    total = arr("max_vehicles") if "max_vehicles" in td.keys() else None
    out = []
    for b in range(seqs.shape[0]):
        k = int(depots[b])
        routes, starts, ends = split_depot_routes(seqs[b], k)
        dist = numpy_distance(td, b)
        found = check_core(
            dist,
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
        if dur_lim is not None and math.isfinite(float(dur_lim[b])):
            cap = float(dur_lim[b])
            for r, (route, d) in enumerate(zip(routes, starts, strict=True)):
                dur = route_duration(dist, tw[b], st[b], d, route, bool(opened[b]))
                if dur > cap + CHECK_TOL * max(1.0, cap):
                    found.append(
                        Violation(
                            "duration",
                            f"route {r + 1}: duration {dur:.6g} exceeds the limit {cap:.6g}",
                            route=r,
                        )
                    )
        if per_depot is not None or total is not None:
            cap_b = None if total is None or not math.isfinite(total[b]) else int(total[b])
            per_b = None
            if per_depot is not None and np.isfinite(per_depot[b]).any():
                # unlimited slots: more than any plan can use
                per_b = np.where(np.isfinite(per_depot[b]), per_depot[b], len(routes) + 1)
                per_b = np.round(per_b).astype(np.int64)
            found.extend(check_fleet(starts, cap_b, per_b))
        out.append(found)
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
    if not math.isfinite(latest):
        # no window closes (switched-off windows in tensors): leaving late enough never waits
        return float(sum(legs) + sum(float(service_time[v]) for v in route))
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
    ``distance_limit`` is the smaller of ``max_distance`` and ``max_duration`` (a route is never
    longer than it lasts); with time windows a ``max_duration`` also becomes
    ``duration_limit``, which the env enforces conservatively (see :class:`MTVRPEnv`). A
    duration limit with service times but no windows is refused (InstanceError: TW off means
    no service times in the tensors). The fleet (``num_vehicles``, ``vehicle_depots``) becomes
    ``max_vehicles`` and ``depot_vehicles`` (:func:`fleet_tensors`), which the env enforces
    where the fleet can still be met; the checker has the last word.
    """
    inst = instance
    src = inst.source or inst.name
    if inst.demand is None or inst.capacity is None:
        raise InstanceError(src, "DEMAND_SECTION", "mtvrp needs demands and a capacity")
    n = inst.num_nodes
    timed = inst.time_windows is not None or (inst.service_time is not None and bool((inst.service_time > 0).any()))
    if inst.max_duration is not None and timed and inst.time_windows is None:
        # TW off means zero service times in the tensors (and none in to_instance)
        raise InstanceError(src, "VEHICLES_MAX_DURATION", "a duration limit with service times but no time windows has no mtvrp tensor form (service times are part of TW)")
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
    if inst.max_duration is not None and timed:
        td["duration_limit"] = torch.tensor([inst.max_duration / scale], **f32)
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
    td.update(fleet_tensors(inst, device=base.device))
    return td


def fleet_tensors(instance: Instance, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The fleet keys (batch [1]) of an :class:`Instance`: ``depot_vehicles`` [1, num_depots]
    (its ``vehicles_per_depot``; +inf when the file states no depots) and ``max_vehicles`` [1]
    (``num_vehicles``; +inf when unset); no keys when it has no fleet."""
    inst = instance
    if inst.num_vehicles is None and inst.vehicle_depots is None:
        return {}
    per = inst.vehicles_per_depot
    f32 = torch.float32
    return {
        "depot_vehicles": (
            torch.full((1, inst.num_depots), math.inf, dtype=f32, device=device)
            if per is None
            else torch.as_tensor(per, dtype=f32, device=device)[None]
        ),
        "max_vehicles": torch.tensor(
            [math.inf if inst.num_vehicles is None else float(inst.num_vehicles)],
            dtype=f32,
            device=device,
        ),
    }


def _fleet_fields(td: TensorDict, nd: int) -> dict[str, Any]:
    """``num_vehicles`` / ``vehicle_depots`` of :func:`to_instance` from the fleet keys of one
    instance (batch []); ValueError for a fleet an :class:`Instance` cannot hold (per-depot
    counts on some depots only, or a total below their sum)."""
    keys = td.keys()
    total = float(td["max_vehicles"]) if "max_vehicles" in keys else math.inf
    per = td["depot_vehicles"][:nd].double().cpu().numpy() if "depot_vehicles" in keys else None
    out: dict[str, Any] = {}
    if per is not None and np.isfinite(per).any():
        if not np.isfinite(per).all() or total < per.sum():
            raise ValueError(
                f"fleet {per.tolist()} per depot with {total:g} in all has no Instance form "
                "(vehicle_depots lists every vehicle's depot)"
            )
        counts = np.round(per).astype(np.int64)
        out["vehicle_depots"] = np.repeat(np.arange(nd), counts)
        out["num_vehicles"] = int(counts.sum())
    elif math.isfinite(total):
        out["num_vehicles"] = int(round(total))
    return out


def to_instance(td: TensorDict, *, name: str = "generated") -> Instance:
    """One MTVRP tensor instance (batch [] or [1]) -> :class:`Instance` in original units.

    The inverse of :func:`from_instance` (``scale``/``offset`` applied when present, else the
    unit square with EXACT distances). Attributes follow the flags: B -> ``backhaul``, L ->
    ``max_distance`` (with TW and a ``duration_limit``: ``max_duration``, and ``max_distance``
    only where ``distance_limit`` is tighter), TW -> windows and service times, O, M, MD
    (depot slots) as flagged.
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
    has_l = bool(td["has_distance_limit"])
    length = float(td["distance_limit"]) if has_l else math.inf
    duration = float(td["duration_limit"]) if has_l and "duration_limit" in td.keys() else math.inf
    max_duration = None
    if has_tw and math.isfinite(duration):
        max_duration = duration * scale
        # distance_limit carries the duration limit too; only a tighter one is a length limit
        if length >= duration * (1 - 1e-6):
            length = math.inf
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
        max_distance=length * scale if math.isfinite(length) else None,
        max_duration=max_duration,
        num_depots=nd,
        **_fleet_fields(td, nd),
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
    remaining route length over the limit (1 without a limit; with a ``duration_limit`` the
    smaller of that and the remaining duration, limit minus the route's least duration so far,
    over the duration limit), the open flag and the location
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
    if "duration_limit" in td.keys():
        # the tighter of the length and the duration budget (absent key: features unchanged)
        dur = td["duration_limit"]
        finite_d = torch.isfinite(dur)
        opening = td["time_windows"][..., 0].gather(-1, td["route_depot"][..., None]).squeeze(-1)
        shift = torch.minimum(td["route_wait"], td["route_slack"]).clamp_min(0.0)
        used = td["current_time"] - opening - shift
        left = (dur - used) / torch.where(finite_d, dur, 1.0).clamp_min(1e-9)
        remaining = torch.where(finite_d, torch.minimum(remaining, left), remaining)
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
    distributions=MTVRP_DISTRIBUTIONS,
    instance_to_td=from_instance,
    td_to_instance=to_instance,
    accepts=("cvrp", "cvrptw"),
    split_depot_tour=split_depot_tour,
    file_type=None,
    has_variants=True,
    reward_norm="std",
)
