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


@dataclass(frozen=True, eq=False, repr=False)
class Instance:
    """One routing instance in its own units.

    Node 0 is the depot for vehicle-routing problems. Distances are stored as a dense matrix
    already under the instance's convention, so every cost computed from an `Instance` is in the
    units a user of the original file expects.

    Attributes
    ----------
    problem : registry name of the problem (``"tsp"``, ``"cvrp"``, ``"cvrptw"``).
    distance : [N, N] float64 travel distances (and travel times) in instance units.
    coords : [N, 2] coordinates, or None for matrix-only instances.
    demand : [N] demands (0 at the depot), or None.
    capacity : vehicle capacity, or None.
    time_windows : [N, 2] earliest/latest service start, or None.
    service_time : [N] service durations, or None.
    num_vehicles : upper bound on the number of routes, or None for unlimited.
    edge_weight : the distance convention, one of :data:`CONVENTIONS`.
    name : instance name.
    source : the file it was read from, if any.
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
    ) -> Instance:
        """Build an instance from arrays (coordinates or a distance matrix).

        The problem is inferred from the data when not given: time windows -> ``cvrptw``,
        demands -> ``cvrp``, otherwise ``tsp``. With coordinates and no ``edge_weight``,
        distances are exact Euclidean; with a matrix, the convention is ``EXPLICIT``.
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
        if problem is None:
            problem = "cvrptw" if time_windows is not None else "cvrp" if demand is not None else "tsp"
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
        return self.num_nodes - 1 if self.has_depot else self.num_nodes

    @property
    def is_symmetric(self) -> bool:
        """Whether the distance matrix is symmetric."""
        return bool(np.allclose(self.distance, self.distance.T))

    def __repr__(self) -> str:
        parts = [f"{self.problem}", f"name={self.name!r}", f"nodes={self.num_nodes}"]
        if self.capacity is not None:
            parts.append(f"capacity={self.capacity:g}")
        parts.append(f"edge_weight={self.edge_weight}")
        return f"Instance({', '.join(parts)})"

    # ------------------------------------------------------------------ cost and checks
    def route_cost(self, routes: Iterable[Sequence[int]]) -> float:
        """Total distance of routes in instance units (depot legs added for VRPs; the TSP tour
        is closed)."""
        total = 0.0
        d = self.distance
        for r in routes:
            r = list(r)
            if not r:
                continue
            seq = [0, *r, 0] if self.has_depot else [*r, r[0]]
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
            # Time windows are judged on the file's own distances: rounding up (EUC_2D/CEIL_2D)
            # could make a route the Euclidean tensors call feasible arrive late.
            rounds_up = self.time_windows is not None and self.edge_weight in ("EUC_2D", "CEIL_2D")
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


def validate_instance(inst: Instance) -> None:
    """Raise :class:`InstanceError` naming the field when an instance is inconsistent."""
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
    if inst.demand is not None:
        dem = inst.demand
        if dem.shape != (n,):
            raise InstanceError(src, "DEMAND_SECTION", f"expected {n} demands (DIMENSION), got {dem.shape[0] if dem.ndim else 0}")
        if not np.isfinite(dem).all():
            raise InstanceError(src, "DEMAND_SECTION", "expected finite demands")
        if (dem < 0).any():
            bad = int(np.nonzero(dem < 0)[0][0])
            raise InstanceError(src, "DEMAND_SECTION", f"node {bad + 1}: expected a non-negative demand, got {dem[bad]:g}")
        if dem[0] != 0:
            raise InstanceError(src, "DEMAND_SECTION", f"depot (node 1): expected demand 0, got {dem[0]:g}")
        if inst.capacity is None or not math.isfinite(inst.capacity) or inst.capacity <= 0:
            raise InstanceError(src, "CAPACITY", f"expected a positive capacity, got {inst.capacity}")
        if (dem > inst.capacity).any():
            bad = int(np.nonzero(dem > inst.capacity)[0][0])
            raise InstanceError(src, "DEMAND_SECTION", f"node {bad + 1}: demand {dem[bad]:g} exceeds CAPACITY {inst.capacity:g}")
    if inst.num_vehicles is not None and inst.num_vehicles < 1:
        raise InstanceError(src, "VEHICLES", f"expected a positive number of vehicles, got {inst.num_vehicles}")
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
        st = inst.service_time if inst.service_time is not None else np.zeros(n)
        if st.shape != (n,) or not np.isfinite(st).all():
            raise InstanceError(src, "SERVICE_TIME_SECTION", f"expected {n} finite service times")
        if (st < 0).any():
            bad = int(np.nonzero(st < 0)[0][0])
            raise InstanceError(src, "SERVICE_TIME_SECTION", f"node {bad + 1}: expected a non-negative service time, got {st[bad]:g}")
        # Each customer must be servable by a dedicated vehicle leaving when the depot opens;
        # otherwise no solution exists and the environments could not guarantee a feasible
        # completion.
        arrive = np.maximum(tw[0, 0] + d[0, 1:], tw[1:, 0])
        back = arrive + st[1:] + d[1:, 0]
        bad_nodes = np.nonzero((arrive > tw[1:, 1] + FEAS_TOL) | (back > tw[0, 1] + FEAS_TOL))[0]
        if bad_nodes.size:
            b = int(bad_nodes[0]) + 1
            raise InstanceError(src, "TIME_WINDOW_SECTION", f"node {b + 1}: cannot be served within its window and return to the depot by {tw[0, 1]:g} even by a dedicated vehicle")


@dataclass(frozen=True)
class Violation:
    """One broken constraint found by a checker."""

    kind: str  # "missing", "duplicate", "unknown_node", "capacity", "time_window", "depot_return", "vehicles", "depot"
    message: str
    route: int | None = None
    node: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, eq=False, repr=False)
class Solution:
    """Routes for one instance with their cost (instance units) and the checker's verdict.

    ``routes`` hold node ids (0-based, the depot is node 0 and is not listed inside VRP routes;
    a TSP solution is one route with every node). Build it with :meth:`from_routes`, which runs
    the independent checker and computes the cost, so no unchecked solution leaves the library.
    """

    instance: Instance
    routes: tuple[tuple[int, ...], ...]
    cost: float
    violations: tuple[Violation, ...]
    runtime: float = 0.0
    solver: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)

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
        solver: str = "unknown",
        runtime: float = 0.0,
        metadata: dict[str, Any] | None = None,
    ) -> Solution:
        """Check routes with the problem's independent checker and wrap them in a Solution."""
        # Imported here because the registry imports the problem files, which import this one.
        from nco.envs.registry import get_problem

        clean = tuple(tuple(int(v) for v in r) for r in routes)
        clean = tuple(r for r in clean if r)
        problem = get_problem(instance.problem)
        violations = tuple(problem.check_routes(instance, clean))
        try:
            cost = instance.route_cost(clean)
        except InstanceError:
            cost = math.nan
        return cls(instance, clean, cost, violations, float(runtime), solver, dict(metadata or {}))

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
