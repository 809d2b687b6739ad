"""One routing instance in its own units, its solutions, and the distance conventions.

`Instance` is what users load from files or build from arrays; `Solution` is what every
solver returns. Both are plain numpy objects: the batched tensor world of the environments
starts at :meth:`Instance.to_tensordict`, which normalises explicitly and records how to undo it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: TSPLIB 95 edge weight types computed from 2-D node coordinates (Reinelt 1995, section 2):
#: EUC_2D (Euclidean, nearest integer), CEIL_2D, FLOOR_2D, ATT (pseudo-Euclidean, rounded
#: up), GEO (great-circle on the idealised sphere, coordinates as DDD.MM degrees and minutes),
#: MAN_2D (Manhattan) and MAX_2D (maximum norm). Files store them as such.
TSPLIB_COORD_TYPES = ("EUC_2D", "CEIL_2D", "FLOOR_2D", "ATT", "GEO", "MAN_2D", "MAX_2D")

#: Distance conventions: the TSPLIB coordinate types above; SOLOMON truncates the Euclidean
#: distance to one decimal (DIMACS/CVRPLIB convention for the Solomon sets); EXACT is the
#: unrounded Euclidean distance used for generated instances; EXPLICIT means the matrix came
#: from the file (possibly asymmetric).
CONVENTIONS = (*TSPLIB_COORD_TYPES, "SOLOMON", "EXACT", "EXPLICIT")

#: Conventions whose distances are the Euclidean distance of the coordinates (rounded or
#: not), so that the environments may use ``locs``; every other one needs the matrix.
_EUCLIDEAN = ("EUC_2D", "CEIL_2D", "FLOOR_2D", "SOLOMON", "EXACT")

#: TSPLIB's constants for GEO: its own value of pi and the earth radius in km.
_GEO_PI = 3.141592
_GEO_RRR = 6378.388

#: Relative tolerance used when comparing times and loads in instance units.
FEAS_TOL = 1e-6


class InstanceError(ValueError):
    """A malformed or inconsistent instance or solution: names the source, the field and
    what was expected."""

    def __init__(self, source: str | Path | None, field: str, message: str) -> None:
        self.source = str(source) if source is not None else "<arrays>"
        self.field = field
        self.message = message
        super().__init__(f"{self.source}: {field}: {message}")


def euclidean(coords: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances, [N, 2] -> [N, N] float64."""
    c = np.asarray(coords, dtype=np.float64)
    diff = c[:, None, :] - c[None, :, :]
    return np.sqrt((diff**2).sum(-1))


def _nint(x: np.ndarray) -> np.ndarray:
    """TSPLIB's ``nint``: ``(int)(x + 0.5)`` for the non-negative values it is applied to."""
    return np.floor(x + 0.5)


def _geo_radians(deg_min: np.ndarray) -> np.ndarray:
    # TSPLIB reads 16.47 as 16 degrees 47 minutes; the integer part is truncated toward zero
    # (the FAQ's reading of "nint", the one the published optima were computed with).
    deg = np.trunc(deg_min)
    return _GEO_PI * (deg + 5.0 * (deg_min - deg) / 3.0) / 180.0


def geo_distance(coords: np.ndarray) -> np.ndarray:
    """TSPLIB ``GEO`` distances, [N, 2] (latitude, longitude as DDD.MM) -> [N, N] integers.

    ``(int)(RRR * acos(0.5 * ((1 + q1) * q2 - (1 - q1) * q3)) + 1.0)`` with TSPLIB's
    ``PI = 3.141592`` and ``RRR = 6378.388``; the diagonal is 0 (TSPLIB's formula gives 1).
    """
    c = np.asarray(coords, dtype=np.float64)
    lat, lon = _geo_radians(c[:, 0]), _geo_radians(c[:, 1])
    q1 = np.cos(lon[:, None] - lon[None, :])
    q2 = np.cos(lat[:, None] - lat[None, :])
    q3 = np.cos(lat[:, None] + lat[None, :])
    # Rounding can push the cosine of a zero angle just above 1; acos would return NaN.
    arg = np.clip(0.5 * ((1.0 + q1) * q2 - (1.0 - q1) * q3), -1.0, 1.0)
    d = np.trunc(_GEO_RRR * np.arccos(arg) + 1.0)
    np.fill_diagonal(d, 0.0)
    return d


def distance_matrix(coords: np.ndarray, convention: str) -> np.ndarray:
    """Distances between coordinates under a named convention (see :data:`CONVENTIONS`).

    Parameters
    ----------
    coords : [N, 2] coordinates in the instance's units.
    convention : one of ``EUC_2D`` (nearest integer, TSPLIB nint), ``CEIL_2D``, ``FLOOR_2D``,
        ``ATT`` (``sqrt((dx^2 + dy^2) / 10)``, rounded up), ``GEO`` (see
        :func:`geo_distance`), ``MAN_2D`` (``nint(|dx| + |dy|)``), ``MAX_2D``
        (``max(nint(|dx|), nint(|dy|))``), ``SOLOMON`` (truncated to one decimal) or ``EXACT``.

    Returns
    -------
    [N, N] float64 distances.
    """
    if convention == "GEO":
        return geo_distance(coords)
    if convention in ("MAN_2D", "MAX_2D"):
        c = np.asarray(coords, dtype=np.float64)
        diff = np.abs(c[:, None, :] - c[None, :, :])
        if convention == "MAN_2D":
            return _nint(diff.sum(-1))
        return _nint(diff).max(-1)
    d = euclidean(coords)
    if convention == "ATT":
        r = d / np.sqrt(10.0)
        t = _nint(r)
        return np.where(t < r, t + 1.0, t)
    if convention == "EUC_2D":
        return _nint(d)
    if convention == "CEIL_2D":
        return np.ceil(d)
    if convention == "FLOOR_2D":
        return np.floor(d)
    if convention == "SOLOMON":
        # Truncation at one decimal; the epsilon keeps exact tenths (e.g. 12.3 stored as
        # 12.2999...) from dropping a whole tenth.
        return np.floor(d * 10.0 + 1e-9) / 10.0
    if convention == "EXACT":
        return d
    raise ValueError(f"unknown distance convention {convention!r}; expected one of {CONVENTIONS}")


def _classical_mds(dist: np.ndarray) -> np.ndarray:
    """2-D coordinates whose Euclidean distances approximate a (symmetrised) matrix.

    Used only to give the policy positional features for matrix-only instances; costs always
    come from the matrix itself.
    """
    d = 0.5 * (dist + dist.T)
    n = d.shape[0]
    j = np.eye(n) - np.full((n, n), 1.0 / n)
    b = -0.5 * j @ (d**2) @ j
    vals, vecs = np.linalg.eigh(b)
    order = np.argsort(vals)[::-1][:2]
    return vecs[:, order] * np.sqrt(np.clip(vals[order], 0.0, None))


def infer_problem(*, has_demand: bool, has_time_windows: bool, has_variant_attributes: bool) -> str:
    """The problem an instance's attributes make it: any variant attribute (see
    :attr:`Instance.has_variant_attributes`) -> ``mtvrp``, else time windows -> ``cvrptw``,
    else demands -> ``cvrp``, else ``tsp``."""
    if has_variant_attributes:
        return "mtvrp"
    if has_time_windows:
        return "cvrptw"
    return "cvrp" if has_demand else "tsp"


@dataclass(frozen=True, eq=False, repr=False)
class Instance:
    """One routing instance in its own units.

    Node 0 is the depot for vehicle-routing problems; a multi-depot instance has its
    ``num_depots`` depots at nodes ``0..num_depots-1`` (mtvrp's MD convention). Distances are
    stored as a dense matrix already under the instance's convention, so every cost computed
    from an `Instance` is in the units a user of the original file expects.

    The variant attributes (``backhaul`` to ``vehicle_depots``) default to "absent"; an instance
    with any of them is an ``"mtvrp"`` instance whose :attr:`variant` names the combination
    (e.g. ``"VRPB"``, ``"MDVRPLTW"``), while plain CVRP/CVRPTW instances stay ``"cvrp"`` and
    ``"cvrptw"``.

    Attributes
    ----------
    problem : registry name of the problem (``"tsp"``, ``"cvrp"``, ``"cvrptw"``, ``"mtvrp"``).
    distance : [N, N] float64 travel distances (and travel times) in instance units.
    coords : [N, 2] coordinates, or None for matrix-only instances.
    demand : [N] demands (0 at the depots), or None; the linehaul (delivery) amounts when the
        instance has backhauls.
    capacity : vehicle capacity, or None.
    time_windows : [N, 2] earliest/latest service start, or None. A depot's row is its opening
        and closing time (routes leave no earlier and, unless open, return no later).
    service_time : [N] service durations, or None (files may state one value for every
        customer; it is stored per node, 0 at the depots).
    num_vehicles : upper bound on the number of routes, or None for unlimited.
    edge_weight : the distance convention, one of :data:`CONVENTIONS`.
    name : instance name.
    source : the file it was read from, if any.
    backhaul : [N] backhaul (pickup) amounts, 0 at the depots, or None. Each customer is a
        linehaul or a backhaul, not both; without ``mixed_backhaul`` a route serves all its
        linehauls before its first backhaul (classic VRPB), and the linehaul total and the
        backhaul total of a route must each fit the capacity.
    mixed_backhaul : linehauls and backhauls in any order; the load on board (all of the
        route's linehauls at the start, minus deliveries, plus pickups) must fit everywhere.
    open_routes : routes end at their last customer: no return leg is paid or timed.
    max_distance : limit on each route's length (the return leg included unless open), or None.
    max_duration : limit on each route's duration, or None: with time windows PyVRP's duration
        (travel, service and waiting, the route leaving its depot as late as its windows
        allow, so that waiting is minimal); without them length plus service times.
    num_depots : number of depots (the first nodes).
    vehicle_depots : [K] int64, the depot (0-based node) of each of the K vehicles, in the
        file's vehicle order (VEHICLES_DEPOT_SECTION), or None (any number of routes per
        depot up to ``num_vehicles`` in all). Route ``#k`` of a VRPLIB ``.sol`` is vehicle k.
    """

    problem: str
    distance: np.ndarray
    coords: np.ndarray | None = None
    demand: np.ndarray | None = None
    capacity: float | None = None
    time_windows: np.ndarray | None = None
    service_time: np.ndarray | None = None
    num_vehicles: int | None = None
    edge_weight: str = "EXACT"
    name: str = "instance"
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    backhaul: np.ndarray | None = None
    mixed_backhaul: bool = False
    open_routes: bool = False
    max_distance: float | None = None
    max_duration: float | None = None
    num_depots: int = 1
    vehicle_depots: np.ndarray | None = None

    def __post_init__(self) -> None:
        validate_instance(self)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        *,
        coords: Sequence[Sequence[float]] | np.ndarray | None = None,
        distance: np.ndarray | None = None,
        demand: Sequence[float] | np.ndarray | None = None,
        capacity: float | None = None,
        time_windows: np.ndarray | None = None,
        service_time: Sequence[float] | np.ndarray | None = None,
        num_vehicles: int | None = None,
        edge_weight: str | None = None,
        problem: str | None = None,
        name: str = "instance",
        backhaul: Sequence[float] | np.ndarray | None = None,
        mixed_backhaul: bool = False,
        open_routes: bool = False,
        max_distance: float | None = None,
        max_duration: float | None = None,
        num_depots: int = 1,
        vehicle_depots: Sequence[int] | np.ndarray | None = None,
    ) -> Instance:
        """Build an instance from arrays (coordinates or a distance matrix).

        The problem is inferred from the data when not given: any variant attribute (backhauls,
        open routes, a distance or duration limit, several depots, vehicles per depot) ->
        ``mtvrp``, time windows -> ``cvrptw``, demands -> ``cvrp``, otherwise ``tsp``. With
        coordinates and no ``edge_weight``, distances are exact Euclidean; with a matrix, the
        convention is ``EXPLICIT``. ``num_vehicles`` defaults to ``len(vehicle_depots)``.
        """
        if coords is None and distance is None:
            raise InstanceError(None, "coords/distance", "give coordinates or a distance matrix")
        c = None if coords is None else np.asarray(coords, dtype=np.float64)
        if c is not None and (c.ndim != 2 or c.shape[1] != 2):
            raise InstanceError(None, "coords", f"expected shape [N, 2], got {list(c.shape)}")
        if c is not None and not np.isfinite(c).all():
            raise InstanceError(None, "coords", "expected finite numbers, found NaN or infinity")
        if distance is not None:
            dist = np.asarray(distance, dtype=np.float64)
            conv = edge_weight or "EXPLICIT"
        else:
            assert c is not None
            conv = edge_weight or "EXACT"
            dist = distance_matrix(c, conv)
        variant_data = (backhaul, max_distance, max_duration, vehicle_depots)
        if problem is None:
            problem = infer_problem(
                has_demand=demand is not None,
                has_time_windows=time_windows is not None,
                has_variant_attributes=any(x is not None for x in variant_data) or open_routes or mixed_backhaul or num_depots > 1,
            )
        vd = None if vehicle_depots is None else np.asarray(vehicle_depots, dtype=np.int64)
        if num_vehicles is None and vd is not None:
            num_vehicles = int(vd.size)
        return cls(
            problem=problem,
            distance=dist,
            coords=c,
            demand=None if demand is None else np.asarray(demand, dtype=np.float64),
            capacity=None if capacity is None else float(capacity),
            time_windows=None if time_windows is None else np.asarray(time_windows, np.float64),
            service_time=None if service_time is None else np.asarray(service_time, np.float64),
            num_vehicles=num_vehicles,
            edge_weight=conv,
            name=name,
            backhaul=None if backhaul is None else np.asarray(backhaul, dtype=np.float64),
            mixed_backhaul=bool(mixed_backhaul),
            open_routes=bool(open_routes),
            max_distance=None if max_distance is None else float(max_distance),
            max_duration=None if max_duration is None else float(max_duration),
            num_depots=int(num_depots),
            vehicle_depots=vd,
        )

    # ------------------------------------------------------------------ properties
    @property
    def num_nodes(self) -> int:
        """Number of nodes, depot included."""
        return int(self.distance.shape[0])

    @property
    def has_depot(self) -> bool:
        """Whether node 0 is a depot (every problem but the TSP)."""
        return self.demand is not None

    @property
    def num_customers(self) -> int:
        """Number of nodes to visit (cities for the TSP)."""
        return self.num_nodes - self.num_depots if self.has_depot else self.num_nodes

    @property
    def has_variant_attributes(self) -> bool:
        """Whether it has any attribute beyond CVRP(TW): backhauls, open routes, a route
        limit, several depots or vehicles per depot (then its problem is the variant family's)."""
        return (
            self.backhaul is not None
            or self.mixed_backhaul
            or self.open_routes
            or self.max_distance is not None
            or self.max_duration is not None
            or self.num_depots > 1
            or self.vehicle_depots is not None
        )

    @property
    def variant(self) -> str:
        """The variant's name in mtvrp's grammar ``[MD][O]VRP[B|MB][L][TW]`` (``"CVRP"``
        without attributes; ``"TSP"`` for the TSP). L stands for either route limit."""
        if not self.has_depot:
            return "TSP"
        # Imported here: mtvrp imports this module; one naming grammar for files and tensors.
        from nco.envs.mtvrp import Variant

        return Variant(
            self.open_routes,
            self.backhaul is not None,
            self.max_distance is not None or self.max_duration is not None,
            self.time_windows is not None,
            self.mixed_backhaul,
            self.num_depots > 1,
        ).name

    @property
    def vehicles_per_depot(self) -> np.ndarray | None:
        """[num_depots] number of vehicles based at each depot, or None when not stated."""
        if self.vehicle_depots is None:
            return None
        return np.bincount(self.vehicle_depots, minlength=self.num_depots)

    @property
    def is_symmetric(self) -> bool:
        """Whether the distance matrix is symmetric."""
        return bool(np.allclose(self.distance, self.distance.T))

    def __repr__(self) -> str:
        parts = [f"{self.problem}", f"name={self.name!r}", f"nodes={self.num_nodes}"]
        if self.has_variant_attributes:
            parts.insert(1, f"variant={self.variant}")
        if self.capacity is not None:
            parts.append(f"capacity={self.capacity:g}")
        parts.append(f"edge_weight={self.edge_weight}")
        return f"Instance({', '.join(parts)})"

    # ------------------------------------------------------------------ cost and checks
    def route_cost(self, routes: Iterable[Sequence[int]], depots: Sequence[int] | None = None) -> float:
        """Total distance of routes in instance units (depot legs added for VRPs, the return
        leg left out for open routes; the TSP tour is closed).

        ``depots[k]`` is route k's depot node; it must be given for multi-depot instances
        (default: depot 0 for every route).
        """
        total = 0.0
        d = self.distance
        routes = [list(r) for r in routes]
        if depots is None:
            if self.num_depots > 1 and any(routes):
                raise InstanceError(self.source or self.name, "routes", "multi-depot instance: state each route's depot")
            depots = [0] * len(routes)
        if len(depots) != len(routes):
            raise InstanceError(self.source or self.name, "routes", f"expected one depot per route, got {len(depots)} for {len(routes)} routes")
        for r, dep in zip(routes, depots, strict=True):
            if not r:
                continue
            if not 0 <= int(dep) < self.num_depots:
                raise InstanceError(self.source or self.name, "routes", f"node {dep} is not a depot")
            if self.has_depot:
                seq = [int(dep), *r] if self.open_routes else [int(dep), *r, int(dep)]
            else:
                seq = [*r, r[0]]
            idx = np.asarray(seq, dtype=np.int64)
            if (idx < 0).any() or (idx >= self.num_nodes).any():
                raise InstanceError(self.source or self.name, "routes", "node id out of range")
            total += float(d[idx[:-1], idx[1:]].sum())
        return total

    def to_tensordict(self, *, device: str | torch.device = "cpu", with_distance: bool | None = None) -> TensorDict:
        """Normalised tensors for the environments and policies, batch size [1].

        Coordinates are shifted and scaled by one factor into the unit square, distances,
        times and service times are divided by the same factor, and demands by the capacity.
        The factors are kept under ``"scale"``/``"offset"``/``"capacity"`` so that
        :func:`denormalise_cost` can map costs back. ``distance`` [1, N, N] is included when the
        instance has no coordinates, an explicit (possibly asymmetric) matrix or a
        non-Euclidean convention (ATT, GEO, MAN_2D, MAX_2D), or when ``with_distance=True``;
        otherwise environments use Euclidean distance on ``locs``.
        """
        if self.coords is not None:
            lo = self.coords.min(0)
            span = float((self.coords.max(0) - lo).max())
            scale = span if span > 0 else 1.0
            locs = (self.coords - lo) / scale
        else:
            lo = np.zeros(2)
            scale = float(self.distance.max()) or 1.0
            locs = _classical_mds(self.distance / scale)
            locs = locs - locs.min(0)
            locs = locs / max(float(locs.max()), 1e-12)
        if with_distance is None:
            # Time windows and route limits are judged on the file's own distances: rounding up
            # (EUC_2D/CEIL_2D) could make a route the Euclidean tensors call feasible arrive
            # late or run too long.
            timed = self.time_windows is not None or self.max_distance is not None or self.max_duration is not None
            rounds_up = timed and self.edge_weight in ("EUC_2D", "CEIL_2D")
            with_distance = self.coords is None or self.edge_weight not in _EUCLIDEAN or rounds_up
        data: dict[str, torch.Tensor] = {
            "locs": torch.as_tensor(locs, dtype=torch.float32),
            "scale": torch.tensor(scale, dtype=torch.float64),
            "offset": torch.as_tensor(lo, dtype=torch.float64),
        }
        if with_distance:
            data["distance"] = torch.as_tensor(self.distance / scale, dtype=torch.float32)
        if self.demand is not None:
            assert self.capacity is not None
            data["demand"] = torch.as_tensor(self.demand / self.capacity, dtype=torch.float32)
            data["capacity"] = torch.tensor(self.capacity, dtype=torch.float64)
        if self.time_windows is not None:
            data["time_windows"] = torch.as_tensor(self.time_windows / scale, dtype=torch.float32)
            st = self.service_time if self.service_time is not None else np.zeros(self.num_nodes)
            data["service_time"] = torch.as_tensor(st / scale, dtype=torch.float32)
        td = TensorDict(data, batch_size=[])
        return td.unsqueeze(0).to(device)


def denormalise_cost(td: TensorDict, cost: torch.Tensor) -> torch.Tensor:
    """Map a cost computed on normalised tensors back to instance units (``cost * scale``).

    Exact for the EXACT convention; for rounding conventions use :meth:`Instance.route_cost`.
    """
    scale = td.get("scale", None)
    return cost if scale is None else cost.to(torch.float64) * scale.to(cost.device)


def _node(i: int) -> str:
    return f"node {i + 1}"


def validate_instance(inst: Instance) -> None:
    """Raise :class:`InstanceError` naming the field when an instance is inconsistent.

    Fields are named as in VRPLIB files (``DEMAND_SECTION``, ``VEHICLES_MAX_DURATION``, ...)
    and nodes 1-based as there.
    """
    src = inst.source or inst.name
    d = inst.distance
    if inst.edge_weight not in CONVENTIONS:
        raise InstanceError(src, "EDGE_WEIGHT_TYPE", f"unknown convention {inst.edge_weight!r}; expected one of {', '.join(CONVENTIONS)}")
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise InstanceError(src, "distance", f"expected a square matrix, got shape {list(d.shape)}")
    n = d.shape[0]
    if n < 2:
        raise InstanceError(src, "DIMENSION", f"expected at least 2 nodes, got {n}")
    if not np.isfinite(d).all():
        raise InstanceError(src, "distance", "expected finite distances, found NaN or infinity")
    if (d < 0).any():
        raise InstanceError(src, "distance", "expected non-negative distances")
    if inst.coords is not None:
        if inst.coords.shape != (n, 2):
            raise InstanceError(src, "NODE_COORD_SECTION", f"expected {n} coordinate pairs (DIMENSION), got {inst.coords.shape[0]}")
        if not np.isfinite(inst.coords).all():
            bad = int(np.nonzero(~np.isfinite(inst.coords).all(1))[0][0])
            raise InstanceError(src, "NODE_COORD_SECTION", f"node {bad + 1}: expected finite coordinates, found NaN or infinity")
    nd = inst.num_depots
    if not isinstance(nd, int | np.integer) or not 1 <= nd < n:
        raise InstanceError(src, "DEPOT_SECTION", f"expected between 1 and {n - 1} depots (the first nodes), got {nd}")
    has_variant = (
        inst.backhaul is not None or inst.mixed_backhaul or inst.open_routes or inst.max_distance is not None
        or inst.max_duration is not None or nd > 1 or inst.vehicle_depots is not None
    )
    if has_variant and inst.demand is None:
        raise InstanceError(src, "DEMAND_SECTION", "section is missing (required by the variant attributes: backhauls, open routes, route limits, depots)")
    if inst.demand is not None:
        dem = inst.demand
        if dem.shape != (n,):
            raise InstanceError(src, "DEMAND_SECTION", f"expected {n} demands (DIMENSION), got {dem.shape[0] if dem.ndim else 0}")
        if not np.isfinite(dem).all():
            raise InstanceError(src, "DEMAND_SECTION", "expected finite demands")
        if (dem < 0).any():
            bad = int(np.nonzero(dem < 0)[0][0])
            raise InstanceError(src, "DEMAND_SECTION", f"node {bad + 1}: expected a non-negative demand, got {dem[bad]:g}")
        if (dem[:nd] != 0).any():
            bad = int(np.nonzero(dem[:nd] != 0)[0][0])
            raise InstanceError(src, "DEMAND_SECTION", f"depot ({_node(bad)}): expected demand 0, got {dem[bad]:g}")
        if inst.capacity is None or not math.isfinite(inst.capacity) or inst.capacity <= 0:
            raise InstanceError(src, "CAPACITY", f"expected a positive capacity, got {inst.capacity}")
        if (dem > inst.capacity).any():
            bad = int(np.nonzero(dem > inst.capacity)[0][0])
            raise InstanceError(src, "DEMAND_SECTION", f"node {bad + 1}: demand {dem[bad]:g} exceeds CAPACITY {inst.capacity:g}")
    if inst.backhaul is not None:
        assert inst.demand is not None and inst.capacity is not None
        bh = inst.backhaul
        if bh.shape != (n,):
            raise InstanceError(src, "BACKHAUL_SECTION", f"expected {n} backhaul amounts (DIMENSION), got {bh.shape[0] if bh.ndim else 0}")
        if not np.isfinite(bh).all() or (bh < 0).any():
            bad = int(np.nonzero(~np.isfinite(bh) | (bh < 0))[0][0])
            raise InstanceError(src, "BACKHAUL_SECTION", f"node {bad + 1}: expected a finite non-negative amount, got {bh[bad]:g}")
        if (bh[:nd] != 0).any():
            bad = int(np.nonzero(bh[:nd] != 0)[0][0])
            raise InstanceError(src, "BACKHAUL_SECTION", f"depot ({_node(bad)}): expected 0, got {bh[bad]:g}")
        if (bh > inst.capacity).any():
            bad = int(np.nonzero(bh > inst.capacity)[0][0])
            raise InstanceError(src, "BACKHAUL_SECTION", f"node {bad + 1}: amount {bh[bad]:g} exceeds CAPACITY {inst.capacity:g}")
        # A customer with both would need a rule for where its pickup goes (VRPSPD), which
        # neither precedence rule (B, M) states.
        both = np.nonzero((bh > 0) & (inst.demand > 0))[0]
        if both.size:
            b = int(both[0])
            raise InstanceError(src, "BACKHAUL_SECTION", f"node {b + 1}: has both a linehaul ({inst.demand[b]:g}) and a backhaul ({bh[b]:g}) demand; expected one of them")
    if inst.mixed_backhaul and inst.backhaul is None:
        raise InstanceError(src, "BACKHAUL_SECTION", "section is missing (required by mixed backhauls)")
    for fld, lim in (("VEHICLES_MAX_DISTANCE", inst.max_distance), ("VEHICLES_MAX_DURATION", inst.max_duration)):
        if lim is not None and (not math.isfinite(lim) or lim <= 0):
            raise InstanceError(src, fld, f"expected a positive finite limit, got {lim}")
    if inst.num_vehicles is not None and inst.num_vehicles < 1:
        raise InstanceError(src, "VEHICLES", f"expected a positive number of vehicles, got {inst.num_vehicles}")
    if inst.vehicle_depots is not None:
        vd = inst.vehicle_depots
        if vd.ndim != 1 or vd.size == 0:
            raise InstanceError(src, "VEHICLES_DEPOT_SECTION", "expected one depot per vehicle")
        if inst.num_vehicles is not None and vd.size != inst.num_vehicles:
            raise InstanceError(src, "VEHICLES_DEPOT_SECTION", f"expected {inst.num_vehicles} rows (VEHICLES), got {vd.size}")
        if ((vd < 0) | (vd >= nd)).any():
            bad = int(np.nonzero((vd < 0) | (vd >= nd))[0][0])
            raise InstanceError(src, "VEHICLES_DEPOT_SECTION", f"vehicle {bad + 1}: expected a depot in 1..{nd} (DEPOT_SECTION), got {int(vd[bad]) + 1}")
    if inst.service_time is not None:
        st = inst.service_time
        if st.shape != (n,) or not np.isfinite(st).all():
            raise InstanceError(src, "SERVICE_TIME_SECTION", f"expected {n} finite service times")
        if (st < 0).any():
            bad = int(np.nonzero(st < 0)[0][0])
            raise InstanceError(src, "SERVICE_TIME_SECTION", f"node {bad + 1}: expected a non-negative service time, got {st[bad]:g}")
    st = inst.service_time if inst.service_time is not None else np.zeros(n)
    if inst.time_windows is not None:
        tw = inst.time_windows
        if tw.shape != (n, 2):
            raise InstanceError(src, "TIME_WINDOW_SECTION", f"expected {n} [earliest, latest] pairs, got shape {list(tw.shape)}")
        if not np.isfinite(tw).all():
            raise InstanceError(src, "TIME_WINDOW_SECTION", "expected finite time windows")
        if (tw[:, 0] > tw[:, 1]).any():
            bad = int(np.nonzero(tw[:, 0] > tw[:, 1])[0][0])
            raise InstanceError(src, "TIME_WINDOW_SECTION", f"node {bad + 1}: expected start <= end, got [{tw[bad, 0]:g}, {tw[bad, 1]:g}]")
        # Times count from 0; a negative start means nothing to the solvers (PyVRP refuses it
        # with "tw_early must be >= 0", naming neither file nor field).
        if (tw[:, 0] < 0).any():
            bad = int(np.nonzero(tw[:, 0] < 0)[0][0])
            raise InstanceError(src, "TIME_WINDOW_SECTION", f"node {bad + 1}: expected a non-negative earliest start (ready time), got {tw[bad, 0]:g}")
    if inst.demand is not None:
        _check_servable(inst, src, st)


def _check_servable(inst: Instance, src: str, st: np.ndarray) -> None:
    # Each customer must be servable by a dedicated vehicle from some depot (one that has
    # vehicles) within every constraint; otherwise no solution exists and the environments
    # could not guarantee a feasible completion.
    nd, d = inst.num_depots, inst.distance
    depots = np.arange(nd)
    if inst.vehicle_depots is not None:
        depots = np.unique(inst.vehicle_depots)
    out_leg, back_leg = d[depots][:, nd:], d[nd:, depots].T  # [D', C]
    ret = np.zeros_like(back_leg) if inst.open_routes else back_leg
    ok = np.ones(out_leg.shape, dtype=bool)
    what = []
    if inst.time_windows is not None:
        tw = inst.time_windows
        arrive = np.maximum(tw[depots, 0][:, None] + out_leg, tw[nd:, 0][None])
        ok &= arrive <= tw[nd:, 1][None] + FEAS_TOL
        if not inst.open_routes:
            ok &= arrive + st[nd:][None] + back_leg <= tw[depots, 1][:, None] + FEAS_TOL
        what.append("within its window" + ("" if inst.open_routes else " and return to a depot before it closes"))
    if inst.max_distance is not None:
        ok &= out_leg + ret <= inst.max_distance * (1 + FEAS_TOL)
        what.append(f"within VEHICLES_MAX_DISTANCE {inst.max_distance:g}")
    if inst.max_duration is not None:
        # a dedicated vehicle leaves just in time, so it never waits
        ok &= out_leg + st[nd:][None] + ret <= inst.max_duration * (1 + FEAS_TOL)
        what.append(f"within VEHICLES_MAX_DURATION {inst.max_duration:g}")
    bad = np.nonzero(~ok.any(0))[0]
    if bad.size:
        b = int(bad[0]) + nd
        fld = "TIME_WINDOW_SECTION" if inst.time_windows is not None else "VEHICLES_MAX_DISTANCE" if inst.max_distance is not None else "VEHICLES_MAX_DURATION"
        if inst.time_windows is not None and nd == 1 and not inst.open_routes and len(what) == 1:
            tw = inst.time_windows
            raise InstanceError(src, fld, f"node {b + 1}: cannot be served within its window and return to the depot by {tw[0, 1]:g} even by a dedicated vehicle")
        raise InstanceError(src, fld, f"node {b + 1}: cannot be served {' and '.join(what)} even by a dedicated vehicle from any depot")


@dataclass(frozen=True)
class Violation:
    """One broken constraint found by a checker."""

    #: "missing", "duplicate", "unknown_node", "capacity", "time_window", "depot_return",
    #: "vehicles", "depot", and for variants "backhaul_order", "distance_limit", "duration",
    #: "depot_mismatch"
    kind: str
    message: str
    route: int | None = None
    node: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, eq=False, repr=False)
class Solution:
    """Routes for one instance with their cost (instance units) and the checker's verdict.

    ``routes`` hold node ids (0-based, the depot is node 0 and is not listed inside VRP routes;
    a TSP solution is one route with every node). ``route_depots`` (None for single-depot
    instances) gives each route's depot node, parallel to ``routes``: a multi-depot route
    starts and ends at its depot, which is not listed in the route either. Build it with
    :meth:`from_routes`, which runs the independent checker and computes the cost, so no
    unchecked solution leaves the library.
    """

    instance: Instance
    routes: tuple[tuple[int, ...], ...]
    cost: float
    violations: tuple[Violation, ...]
    runtime: float = 0.0
    solver: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)
    route_depots: tuple[int, ...] | None = None

    @property
    def feasible(self) -> bool:
        """True when the checker found no violation."""
        return not self.violations

    @classmethod
    def from_routes(
        cls,
        instance: Instance,
        routes: Iterable[Sequence[int]],
        *,
        depots: Sequence[int] | None = None,
        solver: str = "unknown",
        runtime: float = 0.0,
        metadata: dict[str, Any] | None = None,
    ) -> Solution:
        """Check routes with the problem's independent checker and wrap them in a Solution.

        ``depots[k]`` is route k's depot node (required for multi-depot instances; for others
        it may be omitted or all 0). Empty routes are dropped together with their depot.
        """
        # Imported here because the registry imports the problem files, which import this one.
        from nco.envs.registry import get_problem

        raw = [tuple(int(v) for v in r) for r in routes]
        deps = None if depots is None else [int(d) for d in depots]
        extra: list[Violation] = []
        if deps is not None and len(deps) != len(raw):
            extra.append(Violation("depot", f"{len(deps)} depots stated for {len(raw)} routes"))
            deps = None
        keep = [k for k, r in enumerate(raw) if r]
        clean = tuple(raw[k] for k in keep)
        route_depots = None if deps is None else tuple(deps[k] for k in keep)
        problem = get_problem(instance.problem)
        if instance.num_depots > 1:
            violations = [*extra, *problem.check_routes(instance, clean, depots=route_depots)]
        else:
            violations = [*extra, *problem.check_routes(instance, clean)]
            if route_depots is not None:
                for k, dep in enumerate(route_depots):
                    if dep != 0:
                        violations.append(Violation("depot", f"route {k + 1}: starts at node {dep}, but the only depot is node 0", route=k))
                route_depots = None
        try:
            cost = instance.route_cost(clean, route_depots)
        except InstanceError:
            cost = math.nan
        return cls(instance, clean, cost, tuple(violations), float(runtime), solver, dict(metadata or {}), route_depots)

    def __repr__(self) -> str:
        status = "feasible" if self.feasible else f"INFEASIBLE ({len(self.violations)} violations)"
        return (
            f"Solution({self.instance.name}: cost={self.cost:.6g}, routes={len(self.routes)}, "
            f"{status}, solver={self.solver}, runtime={self.runtime:.3f}s)"
        )

    def write(self, path: str | Path) -> Path:
        """Write VRPLIB ``.sol`` (VRPs) or TSPLIB ``.tour`` (TSP); see :mod:`nco.envs.io`."""
        from nco.envs.io import write_solution

        return write_solution(self, path)

    def plot(self, ax: Axes | None = None, **kwargs: Any) -> Axes:
        """Draw the routes on the instance; see :func:`nco.plotting.routes.plot_solution`."""
        # Imported on call: envs sits below the plotting layer and must not load it (or
        # matplotlib) at import time; only users who plot pay for matplotlib.
        from nco.plotting.routes import plot_solution

        return plot_solution(self, ax, **kwargs)
