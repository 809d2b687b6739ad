"""Reading and writing instance and solution files.

Instances: VRPLIB ``.vrp`` (CVRPLib, with optional time windows) and TSPLIB ``.tsp``, parsed by
the `vrplib` package, and Solomon ``.txt``, read here; this module adds the checks that turn a
malformed file into an :class:`~nco.envs.instance.InstanceError` naming the file and field, and
applies the file's distance convention (TSPLIB: EUC_2D, CEIL_2D, FLOOR_2D, ATT, GEO, MAN_2D,
MAX_2D or EXPLICIT). Solutions: VRPLIB ``.sol`` and TSPLIB ``.tour``.

Every writer writes to a temporary file in the target folder and renames it, so a failure never
leaves a partial file behind.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import vrplib
from tensordict import TensorDict

from nco.envs.instance import (
    CONVENTIONS,
    TSPLIB_COORD_TYPES,
    Instance,
    InstanceError,
    Solution,
    distance_matrix,
    infer_problem,
)
from nco.envs.mtvrp import VARIANTS, Variant


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that is moved into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp creates 0600 files; output files should get the usual permissions.
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and move it into place only on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


# ---------------------------------------------------------------------------------- reading
def load(path: str | Path, *, edge_weight: str | None = None, scale: float = 1.0) -> Instance:
    """Read an instance file: VRPLIB ``.vrp``, TSPLIB ``.tsp`` or Solomon ``.txt``.

    The format is chosen from the content (a Solomon file starts with a name line followed by
    ``VEHICLE``), so extensions are only a hint. Raises :class:`InstanceError` naming the file
    and the field for malformed or inconsistent input, or for a field nco does not model, and
    ``FileNotFoundError`` for a missing file.

    Parameters
    ----------
    path : the file.
    edge_weight : VRPLIB files only: a convention replacing the file's coordinate
        EDGE_WEIGHT_TYPE, for sets whose published costs use another one, e.g. ``"SOLOMON"``
        (one-decimal truncation) for the Gehring-Homberger files, which state EUC_2D.
    scale : VRPLIB files only: factor applied to coordinates (or explicit weights), time
        windows, service times and route limits before the convention, e.g. 1000 with
        ``EUC_2D`` for PyVRP's ``round_func="exact"`` (``round(1000 * x)``), the units of the
        MDVRPTW best-known costs. Demands and capacity are not scaled.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such instance file")
    if edge_weight is not None and (edge_weight not in CONVENTIONS or edge_weight == "EXPLICIT"):
        raise ValueError(f"edge_weight must be a coordinate convention of {CONVENTIONS[:-1]}, got {edge_weight!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise InstanceError(path, "file", "expected a text instance file") from err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InstanceError(path, "file", "the file is empty")
    if len(lines) > 1 and lines[1].upper().startswith("VEHICLE"):
        if edge_weight is not None or scale != 1.0:
            raise ValueError(f"{path}: edge_weight and scale apply to VRPLIB files; Solomon files use SOLOMON distances")
        return _load_solomon(path, lines)
    return _load_vrplib(path, edge_weight, scale)


def _parse_error(path: Path, err: Exception) -> InstanceError:
    return InstanceError(path, "format", f"could not be parsed ({err})")


#: Columns of a Solomon customer table, in order.
#: File suffix of Solomon's CVRPTW text format (read by content; the suffix marks the file).
SOLOMON_SUFFIX = ".txt"
SOLOMON_COLUMNS = ("CUST NO.", "XCOORD.", "YCOORD.", "DEMAND", "READY TIME", "DUE DATE", "SERVICE TIME")


#: The Solomon column(s) behind each field that :func:`validate_instance` names.
_SOLOMON_FIELDS = {
    "NODE_COORD_SECTION": "XCOORD./YCOORD.",
    "distance": "XCOORD./YCOORD.",
    "DEMAND_SECTION": "DEMAND",
    "TIME_WINDOW_SECTION": "READY TIME/DUE DATE",
    "SERVICE_TIME_SECTION": "SERVICE TIME",
    "VEHICLES": "VEHICLE NUMBER",
}


def _solomon_number(path: Path, field_name: str, token: str, where: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise InstanceError(path, field_name, f"{where}: expected a number, got {token!r}") from None
    if not math.isfinite(value):
        raise InstanceError(path, field_name, f"{where}: expected a finite number, got {token!r}")
    return value


def _load_solomon(path: Path, lines: list[str]) -> Instance:
    # Read here rather than by vrplib: its reader parses the table with numpy.genfromtxt(dtype=int),
    # which silently turns every value that is not an integer ("x", "nan", "2.5", "1e12") into -1,
    # e.g. a READY TIME of -1 that PyVRP later rejects without naming the file.
    header = [ln.upper() for ln in lines[:6]]
    if len(lines) < 7 or not header[4].startswith("CUSTOMER"):
        raise InstanceError(path, "format", "expected a Solomon file: name, VEHICLE, NUMBER CAPACITY, two numbers, CUSTOMER, the column header, then one row per node")
    if not all(word in header[2] for word in ("NUMBER", "CAPACITY")):
        raise InstanceError(path, "VEHICLE", f"expected the header 'NUMBER CAPACITY', got {lines[2]!r}")
    fleet = lines[3].split()
    if len(fleet) != 2:
        raise InstanceError(path, "VEHICLE", f"expected two numbers (NUMBER CAPACITY), got {lines[3]!r}")
    vehicles = _solomon_number(path, "VEHICLE NUMBER", fleet[0], "fleet")
    if not vehicles.is_integer():
        raise InstanceError(path, "VEHICLE NUMBER", f"expected a positive integer, got {fleet[0]!r}")
    capacity = _solomon_number(path, "CAPACITY", fleet[1], "fleet")
    missing = [c for c in SOLOMON_COLUMNS if any(w not in header[5] for w in c.split())]
    if missing:
        raise InstanceError(path, "CUSTOMER", f"the column header lacks {', '.join(missing)}")
    rows = []
    for i, line in enumerate(lines[6:]):
        tokens = line.split()
        if len(tokens) != len(SOLOMON_COLUMNS):
            raise InstanceError(path, "CUSTOMER", f"row {i + 1} ({line!r}): expected {len(SOLOMON_COLUMNS)} values ({', '.join(SOLOMON_COLUMNS)}), got {len(tokens)}")
        where = f"node {i + 1} (CUST NO. {i})"
        rows.append([_solomon_number(path, col, tok, where) for col, tok in zip(SOLOMON_COLUMNS, tokens, strict=True)])
    table = np.asarray(rows, dtype=np.float64)
    # Routes refer to customers by row; a renumbered or reordered table would silently
    # relabel them.
    wrong = np.nonzero(table[:, 0] != np.arange(len(table)))[0]
    if wrong.size:
        i = int(wrong[0])
        raise InstanceError(path, "CUST NO.", f"row {i + 1}: expected customers numbered 0, 1, 2, ... in order, got {table[i, 0]:g}")
    # Checked here as well as in validate_instance to name the exact column, e.g. READY TIME.
    for col in ("DEMAND", "READY TIME", "SERVICE TIME"):
        values = table[:, SOLOMON_COLUMNS.index(col)]
        if (values < 0).any():
            i = int(np.nonzero(values < 0)[0][0])
            raise InstanceError(path, col, f"node {i + 1} (CUST NO. {i}): expected a non-negative value, got {values[i]:g}")
    coords = table[:, 1:3]
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        dist = distance_matrix(coords, "SOLOMON")
    try:
        return Instance(
            problem=infer_problem(has_demand=True, has_time_windows=True, has_variant_attributes=False),
            distance=dist,
            coords=coords,
            demand=table[:, 3],
            capacity=capacity,
            time_windows=table[:, 4:6],
            service_time=table[:, 6],
            num_vehicles=int(vehicles),
            edge_weight="SOLOMON",
            name=lines[0],
            source=str(path),
        )
    except InstanceError as err:
        # validate_instance names VRPLIB sections; a Solomon user looks for the columns.
        raise InstanceError(path, _SOLOMON_FIELDS.get(err.field, err.field), err.message) from None


def _section(raw: dict[str, Any], key: str, path: Path, field_name: str, n: int, width: int | None) -> np.ndarray:
    if key not in raw:
        raise InstanceError(path, field_name, "section is missing")
    try:
        arr = np.asarray(raw[key], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InstanceError(path, field_name, "expected a table of numbers with one row per node") from err
    shape = (n,) if width is None else (n, width)
    if arr.shape != shape:
        got = arr.shape[0] if arr.ndim else 0
        raise InstanceError(path, field_name, f"expected {n} rows (DIMENSION) of {width or 1} value(s), got {got} rows" + (f" of shape {list(arr.shape)}" if arr.ndim > 1 or width else ""))
    return arr


#: vrplib keys (lower-case field names without ``_SECTION``) that nco models; any other field
#: of a file is refused by name rather than ignored.
_KNOWN_FIELDS = frozenset(
    {
        "name", "comment", "type", "dimension", "capacity", "edge_weight_type",
        "edge_weight_format", "node_coord_type", "display_data_type", "node_coord",
        "display_data", "edge_weight", "demand", "depot", "vehicles", "service_time",
        "time_window", "backhaul", "vehicles_depot", "vehicles_max_duration",
        "vehicles_max_distance",
    }
)  # fmt: skip

#: Fields that only vehicle-routing files have (refused in a TSP file).
_VRP_FIELDS = ("capacity", "demand", "vehicles", "service_time", "time_window", "backhaul", "vehicles_depot", "vehicles_max_duration", "vehicles_max_distance")

#: TYPE values of plain CVRP files (which may still carry windows), besides the mtvrp
#: variant names; CVRPTW is read as VRPTW.
_PLAIN_TYPES = ("", "VRP", "CVRP")


def _file_field(text: str, key: str) -> str:
    """How the file spells the field vrplib calls ``key`` (``BACKHAUL_SECTION``, ``VEHICLES``)."""
    m = re.search(rf"^\s*({re.escape(key)}(_SECTION)?)\b", text, re.IGNORECASE | re.MULTILINE)
    return m.group(1).upper() if m else key.upper()


def _scalar(raw: dict[str, Any], key: str, path: Path, field_name: str) -> float | None:
    """A header value, or a per-vehicle section whose values are all equal; None if absent."""
    if key not in raw:
        return None
    v = raw[key]
    if isinstance(v, np.ndarray | list | tuple):
        arr = np.ravel(np.asarray(v, dtype=np.float64)) if np.size(v) else np.zeros(0)
        if arr.size == 0 or not (arr == arr[0]).all():
            raise InstanceError(path, field_name, "per-vehicle values are not modelled; expected one value for every vehicle")
        v = arr[0]
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not math.isfinite(float(v)):
        raise InstanceError(path, field_name, f"expected a finite number, got {v!r}")
    return float(v)


def _variant_flags(path: Path, ptype: str) -> Variant | None:
    """The attribute flags a VRP file's TYPE declares (None for the plain types)."""
    if ptype in _PLAIN_TYPES:
        return None
    if ptype == "CVRPTW":
        ptype = "VRPTW"
    if ptype not in VARIANTS:
        raise InstanceError(path, "TYPE", f"unsupported type {ptype!r}; expected TSP, CVRP, VRPTW or an mtvrp variant name [MD][O]VRP[B|MB][L][TW] (e.g. VRPB, OVRPTW, MDVRPTW)")
    return VARIANTS[ptype]


def _load_vrplib(path: Path, edge_weight: str | None = None, scale: float = 1.0) -> Instance:
    try:
        raw = vrplib.read_instance(path, compute_edge_weights=False)
    except Exception as err:
        raise _parse_error(path, err) from err
    text = path.read_text()
    for key in raw:
        if key not in _KNOWN_FIELDS:
            fld = _file_field(text, key)
            raise InstanceError(path, fld, "is not modelled by nco; refusing the file rather than solving it as another problem")
    if "dimension" not in raw:
        raise InstanceError(path, "DIMENSION", "specification is missing")
    dim = raw["dimension"]
    if not isinstance(dim, int) or dim < 2:
        raise InstanceError(path, "DIMENSION", f"expected an integer >= 2, got {dim!r}")
    ewt = str(raw.get("edge_weight_type", "")).upper()
    if not ewt:
        raise InstanceError(path, "EDGE_WEIGHT_TYPE", "specification is missing")
    supported = (*TSPLIB_COORD_TYPES, "EXPLICIT")
    if ewt not in supported:
        raise InstanceError(path, "EDGE_WEIGHT_TYPE", f"unsupported type {ewt!r}; expected one of {', '.join(supported)}")
    if edge_weight is not None and ewt == "EXPLICIT":
        raise InstanceError(path, "EDGE_WEIGHT_TYPE", f"EXPLICIT weights come from the file; cannot apply the convention {edge_weight}")
    coords = None
    if "node_coord" in raw:
        coords = _section(raw, "node_coord", path, "NODE_COORD_SECTION", dim, 2)
        if not np.isfinite(coords).all():
            bad = int(np.nonzero(~np.isfinite(coords).all(1))[0][0])
            raise InstanceError(path, "NODE_COORD_SECTION", f"node {bad + 1}: expected finite coordinates, found NaN or infinity")
        if scale != 1.0:
            # Rounded so that, e.g., 2.958 * 1000 is the integer 2958 the convention expects.
            coords = np.round(coords * scale, 9)
    if ewt in TSPLIB_COORD_TYPES:
        if coords is None:
            raise InstanceError(path, "NODE_COORD_SECTION", f"section is missing (required by EDGE_WEIGHT_TYPE {ewt})")
        ewt = edge_weight or ewt
        with np.errstate(over="ignore", invalid="ignore"):
            dist = distance_matrix(coords, ewt)
        if not np.isfinite(dist).all():
            raise InstanceError(path, "NODE_COORD_SECTION", f"coordinates too large: {ewt} distances overflow")
    else:
        fmt = str(raw.get("edge_weight_format", "")).upper()
        if fmt not in ("LOWER_ROW", "FULL_MATRIX"):
            raise InstanceError(path, "EDGE_WEIGHT_FORMAT", f"expected LOWER_ROW or FULL_MATRIX for EXPLICIT weights, got {fmt or 'nothing'!r}")
        try:
            raw_w = vrplib.read_instance(path, compute_edge_weights=True)
        except Exception as err:
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", f"could not be parsed ({err})") from err
        if "edge_weight" not in raw_w:
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", "section is missing")
        dist = np.asarray(raw_w["edge_weight"], dtype=np.float64) * scale
        if dist.shape != (dim, dim):
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", f"expected a {dim}x{dim} matrix (DIMENSION), got shape {list(dist.shape)}")
        if not (np.isfinite(dist) & (dist >= 0)).all():
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", "expected finite non-negative weights")
        # Files written by `write_instance` for exact-Euclidean (generated) or Solomon-truncated
        # instances carry the matrix for outside readers; recognising it keeps the convention.
        if coords is not None:
            for conv in ("EXACT", "SOLOMON"):
                if np.allclose(dist, distance_matrix(coords, conv), rtol=1e-9, atol=1e-9):
                    ewt = conv
                    break
    depot = raw.get("depot")
    num_depots = 1
    if depot is not None:
        dep = np.ravel(np.asarray(depot))
        num_depots = int(dep.size)
        # Several depots are the first nodes, as in PyVRP's dialect and mtvrp's tensors.
        if num_depots < 1 or num_depots >= dim or not (dep == np.arange(num_depots)).all():
            want = "a single depot at node 1" if num_depots <= 1 else f"depots at nodes 1..{num_depots} (the first nodes, each once)"
            raise InstanceError(path, "DEPOT_SECTION", f"expected {want}, got {dep + 1}")
    ptype = str(raw.get("type", "")).strip().upper()
    name = str(raw.get("name", path.stem)).strip()
    common: dict[str, Any] = dict(distance=dist, coords=coords, edge_weight=ewt, name=name, source=str(path))
    if ptype == "TSP" or ("demand" not in raw and "capacity" not in raw):
        if ptype not in ("TSP", ""):
            raise InstanceError(path, "TYPE", f"expected TSP, CVRP or VRPTW, got {ptype!r} without DEMAND_SECTION")
        extra = [k for k in _VRP_FIELDS if k in raw]
        if extra or num_depots > 1:
            fld = _file_field(text, extra[0]) if extra else "DEPOT_SECTION"
            raise InstanceError(path, fld, "is not modelled for a TSP (TYPE TSP or no DEMAND_SECTION); expected a VRP file with CAPACITY and DEMAND_SECTION")
        return Instance(problem=infer_problem(has_demand=False, has_time_windows=False, has_variant_attributes=False), **common)
    flags = _variant_flags(path, ptype)
    if "capacity" not in raw:
        raise InstanceError(path, "CAPACITY", "specification is missing")
    cap = raw["capacity"]
    if not isinstance(cap, int | float) or not math.isfinite(cap) or cap <= 0:
        raise InstanceError(path, "CAPACITY", f"expected a positive number, got {cap!r}")
    demand = _section(raw, "demand", path, "DEMAND_SECTION", dim, None)
    vehicles = raw.get("vehicles")
    kwargs: dict[str, Any] = dict(demand=demand, capacity=float(cap), num_vehicles=int(vehicles) if isinstance(vehicles, int) else None)
    typed = f"TYPE {ptype}"
    # B decides the order of linehauls and backhauls, so TYPE and BACKHAUL_SECTION must agree
    # both ways (PyVRP reads the section of a non-VRPB file as unordered pickups).
    wants_b = flags is not None and flags.backhaul
    if "backhaul" in raw:
        if not wants_b:
            raise InstanceError(path, "BACKHAUL_SECTION", f"needs TYPE VRPB (linehauls before backhauls) or a mixed-backhaul type such as VRPMB; got {typed if ptype else 'no TYPE'}")
        kwargs["backhaul"] = _section(raw, "backhaul", path, "BACKHAUL_SECTION", dim, None)
    elif wants_b:
        raise InstanceError(path, "BACKHAUL_SECTION", f"section is missing (required by {typed})")
    if flags is not None:
        kwargs["mixed_backhaul"] = flags.mixed_backhaul
        kwargs["open_routes"] = flags.open_route
    if "time_window" in raw:
        kwargs["time_windows"] = _section(raw, "time_window", path, "TIME_WINDOW_SECTION", dim, 2) * scale
    elif flags is not None and flags.time_windows:
        raise InstanceError(path, "TIME_WINDOW_SECTION", f"section is missing (required by {typed})")
    if "service_time" in raw:
        st = raw["service_time"]
        if isinstance(st, int | float) and not isinstance(st, bool):
            # PyVRP's dialect: one value in the header for every customer (none at the depots).
            if not math.isfinite(st) or st < 0:
                raise InstanceError(path, "SERVICE_TIME", f"expected a non-negative number, got {st!r}")
            service = np.full(dim, float(st))
            service[:num_depots] = 0.0
        else:
            service = _section(raw, "service_time", path, "SERVICE_TIME_SECTION", dim, None)
        kwargs["service_time"] = service * scale
    elif "time_windows" in kwargs:
        kwargs["service_time"] = np.zeros(dim)
    kwargs["max_distance"] = _scalar(raw, "vehicles_max_distance", path, "VEHICLES_MAX_DISTANCE")
    kwargs["max_duration"] = _scalar(raw, "vehicles_max_duration", path, "VEHICLES_MAX_DURATION")
    for k in ("max_distance", "max_duration"):
        if kwargs[k] is not None:
            kwargs[k] *= scale
    if flags is not None and flags.distance_limit and kwargs["max_distance"] is None and kwargs["max_duration"] is None:
        raise InstanceError(path, "VEHICLES_MAX_DISTANCE", f"missing, and no VEHICLES_MAX_DURATION either (a route limit is required by {typed})")
    if "vehicles_depot" in raw:
        vd = np.ravel(np.asarray(raw["vehicles_depot"], dtype=np.float64))
        if not (np.isfinite(vd).all() and (vd == np.round(vd)).all()):
            raise InstanceError(path, "VEHICLES_DEPOT_SECTION", "expected integer depot numbers")
        if kwargs["num_vehicles"] is None:
            kwargs["num_vehicles"] = int(vd.size)
        if num_depots > 1:
            kwargs["vehicle_depots"] = vd.astype(np.int64) - 1
        elif not (vd == 1).all():
            bad = int(np.nonzero(vd != 1)[0][0])
            raise InstanceError(path, "VEHICLES_DEPOT_SECTION", f"vehicle {bad + 1}: expected depot 1 (the only one in DEPOT_SECTION), got {vd[bad]:g}")
        elif vd.size != kwargs["num_vehicles"]:
            raise InstanceError(path, "VEHICLES_DEPOT_SECTION", f"expected {kwargs['num_vehicles']} rows (VEHICLES), got {vd.size}")
    kwargs["num_depots"] = num_depots
    variant = (
        "backhaul" in kwargs or kwargs["max_distance"] is not None or kwargs["max_duration"] is not None
        or num_depots > 1 or kwargs.get("open_routes") or kwargs.get("mixed_backhaul") or "vehicle_depots" in kwargs
    )
    problem = infer_problem(has_demand=True, has_time_windows="time_windows" in kwargs, has_variant_attributes=bool(variant))
    return Instance(problem=problem, **common, **kwargs)


# ---------------------------------------------------------------------------------- solutions
def read_solution(path: str | Path, instance: Instance) -> list[list[int]]:
    """Read routes for ``instance`` from a VRPLIB ``.sol`` or TSPLIB ``.tour`` file.

    Returns node ids (0-based; the depot is node 0 and does not appear in VRP routes). For
    multi-depot instances the routes' depots come from :func:`read_solution_depots` (or use
    :func:`load_solution`).
    """
    return _read_routes(Path(path), instance)[0]


def read_solution_depots(path: str | Path, instance: Instance) -> list[int] | None:
    """Each route's depot node for the routes :func:`read_solution` returns, or None when the
    instance has one depot or the file does not identify the depots.

    A ``Depots: d1 d2 ...`` line (node ids, written by :func:`write_solution` when no vehicle
    list says it) states them; otherwise, as PyVRP reads these files, ``Route #k`` is
    vehicle k of the instance's VEHICLES_DEPOT_SECTION (files list every vehicle, empty
    routes included, so that the numbering holds).
    """
    return _read_routes(Path(path), instance)[1]


def load_solution(path: str | Path, instance: Instance, *, solver: str = "file") -> Solution:
    """Read a solution file and check it: a :class:`Solution` with routes, depots and cost."""
    routes, depots = _read_routes(Path(path), instance)
    return Solution.from_routes(instance, routes, depots=depots, solver=solver)


def _read_routes(path: Path, instance: Instance) -> tuple[list[list[int]], list[int] | None]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such solution file")
    text = path.read_text()
    if "TOUR_SECTION" in text:
        return [_read_tour(path, text, instance)], None
    try:
        sol = vrplib.read_solution(path)
    except Exception as err:
        raise InstanceError(path, "format", f"expected 'Route #k: ...' lines ({err})") from err
    routes = [list(map(int, r)) for r in sol.get("routes", [])]
    if not any(routes):
        raise InstanceError(path, "Route", "no 'Route #k:' lines found")
    if not instance.has_depot:
        # A TSP tour written as a single VRPLIB route: cities are numbered 1..N.
        return [[v - 1 for v in r] for r in routes], None
    if instance.num_depots == 1:
        return routes, None
    if "depots" in sol:
        try:
            depots = [int(t) for t in str(sol["depots"]).split()]
        except ValueError:
            raise InstanceError(path, "Depots", f"expected depot node ids, got {sol['depots']!r}") from None
        if len(depots) != len(routes):
            raise InstanceError(path, "Depots", f"expected one depot per route ({len(routes)}), got {len(depots)}")
        return routes, depots
    vd = instance.vehicle_depots
    if vd is None:
        # Nothing ties a route to a depot; the checker reports the missing depots.
        return routes, None
    if len(routes) > vd.size:
        raise InstanceError(path, "Route", f"{len(routes)} routes for {vd.size} vehicles (VEHICLES_DEPOT_SECTION); Route #k is vehicle k")
    return routes, [int(vd[k]) for k in range(len(routes))]


def read_stated_cost(path: str | Path) -> str | None:
    """The value of a VRPLIB ``.sol`` file's ``Cost`` line, as written (e.g. ``"827.3"``).

    None when the file has no such line; TSPLIB ``.tour`` files have no cost field.
    """
    for line in Path(path).read_text().splitlines():
        key, _, value = line.strip().replace(":", " ", 1).partition(" ")
        if key.lower() == "cost" and value.strip():
            return value.strip()
    return None


def _read_tour(path: Path, text: str, instance: Instance) -> list[int]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("TOUR_SECTION"))
    tour: list[int] = []
    for ln in lines[start + 1 :]:
        for tok in ln.split():
            if tok == "EOF":
                break
            try:
                v = int(tok)
            except ValueError as err:
                raise InstanceError(path, "TOUR_SECTION", f"expected integers, got {tok!r}") from err
            if v == -1:
                break
            tour.append(v - 1)
        else:
            continue
        break
    if instance.has_depot:
        raise InstanceError(path, "TOUR_SECTION", f"a TSPLIB tour cannot describe a {instance.problem} solution; expected a VRPLIB .sol file")
    return tour


def write_solution(solution: Solution, path: str | Path) -> Path:
    """Write a solution: TSPLIB ``.tour`` for the TSP, VRPLIB ``.sol`` otherwise.

    VRPLIB: one ``Route #k: c1 c2 ...`` line per route (node ids as in PyVRP's dialect: the
    depots are 0..D-1 and not listed, customers follow), then ``Cost C``. Multi-depot
    solutions of an instance with VEHICLES_DEPOT_SECTION list every vehicle in order (``Route
    #k`` is vehicle k, empty if unused), as the PyVRP/Vidal files do; without vehicles (or
    with more routes at a depot than its vehicles) a ``Depots: d1 d2 ...`` line states each
    route's depot. TSPLIB: ``TOUR_SECTION`` with 1-based cities and ``-1``.
    """
    path = Path(path)
    inst = solution.instance
    cost = format_cost(solution.cost)
    lines = _vehicle_lines(solution) if inst.has_depot else None
    with atomic_write(path) as fh:
        if lines is not None:
            fh.writelines(lines)
            fh.write(f"Cost {cost}\n")
        elif inst.has_depot:
            for k, r in enumerate(solution.routes, 1):
                fh.write(f"Route #{k}: {' '.join(str(v) for v in r)}\n")
            if inst.num_depots > 1 and solution.route_depots is not None:
                fh.write(f"Depots: {' '.join(str(d) for d in solution.route_depots)}\n")
            fh.write(f"Cost {cost}\n")
        else:
            tour = solution.routes[0] if solution.routes else ()
            fh.write(f"NAME : {inst.name}.tour\nCOMMENT : Length {cost} ({solution.solver})\n")
            fh.write(f"TYPE : TOUR\nDIMENSION : {len(tour)}\nTOUR_SECTION\n")
            for v in tour:
                fh.write(f"{v + 1}\n")
            fh.write("-1\nEOF\n")
    return path


def _vehicle_lines(solution: Solution) -> list[str] | None:
    """``Route #k`` lines with route k on vehicle k, or None when that is not possible."""
    inst = solution.instance
    vd = inst.vehicle_depots
    if inst.num_depots == 1 or vd is None or solution.route_depots is None:
        return None
    free: dict[int, list[int]] = {}
    for k, d in enumerate(vd.tolist()):
        free.setdefault(int(d), []).append(k)
    slots: list[tuple[int, ...]] = [()] * vd.size
    for r, d in zip(solution.routes, solution.route_depots, strict=True):
        if not free.get(d):
            return None
        slots[free[d].pop(0)] = r
    return [f"Route #{k}: {' '.join(str(v) for v in r)}\n" for k, r in enumerate(slots, 1)]


def format_cost(cost: float, digits: int = 10) -> str:
    """A cost as written and printed: an integral cost (the rounded VRPLIB/TSPLIB conventions)
    as an integer, any other with ``digits`` significant digits (10 in solution files, so that
    the stated cost matches the recomputed one; the CLI prints 6, e.g. ``827.3``, ``812.877``)."""
    if math.isfinite(cost) and abs(cost - round(cost)) < 1e-9:
        return str(int(round(cost)))
    return f"{cost:.{digits}g}"


# ---------------------------------------------------------------------------------- instances
def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_instance(instance: Instance, path: str | Path) -> Path:
    """Write an instance as TSPLIB ``.tsp`` (TSP) or VRPLIB ``.vrp`` (CVRP, CVRPTW, variants).

    TSPLIB coordinate types (EUC_2D, CEIL_2D, ATT, GEO, ...) are written as such; exact,
    Solomon-truncated and explicit distances are written as a FULL_MATRIX
    ``EDGE_WEIGHT_SECTION`` (with coordinates for display), because no TSPLIB type means them
    and any outside reader must get the same costs. Variants use PyVRP's dialect (see
    README "Variant files"): TYPE is the variant name (e.g. ``VRPB``, ``MDVRPLTW``; it carries
    O and M, which have no data), BACKHAUL_SECTION, several depots in DEPOT_SECTION,
    VEHICLES_DEPOT_SECTION, VEHICLES_MAX_DISTANCE / VEHICLES_MAX_DURATION, SERVICE_TIME as one
    header value when every customer has the same (depots 0), else SERVICE_TIME_SECTION.
    """
    path = Path(path)
    inst = instance
    n = inst.num_nodes
    data: dict[str, Any] = {"NAME": inst.name}
    from nco.envs.registry import get_problem  # the registry imports this module's problems

    file_type = get_problem(inst.problem).file_type
    data["TYPE"] = file_type if file_type is not None else inst.variant
    data["DIMENSION"] = n
    if inst.edge_weight in TSPLIB_COORD_TYPES and inst.coords is not None:
        data["EDGE_WEIGHT_TYPE"] = inst.edge_weight
    else:
        data["EDGE_WEIGHT_TYPE"] = "EXPLICIT"
        data["EDGE_WEIGHT_FORMAT"] = "FULL_MATRIX"
    if inst.capacity is not None:
        data["CAPACITY"] = _num(inst.capacity)
    if inst.num_vehicles is not None:
        data["VEHICLES"] = inst.num_vehicles
    if inst.max_distance is not None:
        data["VEHICLES_MAX_DISTANCE"] = _num(inst.max_distance)
    if inst.max_duration is not None:
        data["VEHICLES_MAX_DURATION"] = _num(inst.max_duration)
    st = inst.service_time
    nd = inst.num_depots
    uniform = st is not None and bool((st[:nd] == 0).all()) and bool((st[nd:] == st[nd]).all())
    if uniform and st is not None:
        data["SERVICE_TIME"] = _num(st[nd])
    if inst.coords is not None:
        data["NODE_COORD_SECTION"] = [[_num(x), _num(y)] for x, y in inst.coords]
    if data["EDGE_WEIGHT_TYPE"] == "EXPLICIT":
        data["EDGE_WEIGHT_SECTION"] = [[f"{v:.12g}" for v in row] for row in inst.distance]
    if inst.demand is not None:
        data["DEMAND_SECTION"] = [_num(v) for v in inst.demand]
    if inst.backhaul is not None:
        data["BACKHAUL_SECTION"] = [_num(v) for v in inst.backhaul]
    if st is not None and not uniform:
        data["SERVICE_TIME_SECTION"] = [_num(v) for v in st]
    if inst.time_windows is not None:
        data["TIME_WINDOW_SECTION"] = [[_num(a), _num(b)] for a, b in inst.time_windows]
    if inst.vehicle_depots is not None:
        data["VEHICLES_DEPOT_SECTION"] = [str(int(d) + 1) for d in inst.vehicle_depots]
    if inst.demand is not None:
        data["DEPOT_SECTION"] = [str(d + 1) for d in range(nd)] + ["-1"]
    with atomic_path(path) as tmp:
        vrplib.write_instance(tmp, data)
    return path


def is_instance_file(path: Path) -> bool:
    """Whether a path looks like an instance file this module reads: a registered problem's
    instance suffix (``.vrp``, ``.tsp``) or a Solomon ``.txt``."""
    from nco.envs.registry import available, get_problem  # see write_instance

    suffixes = {get_problem(name).instance_suffix for name in available()} | {SOLOMON_SUFFIX}
    return path.suffix.lower() in suffixes




# ---------------------------------------------------------------------------------- datasets
DATASET_VERSION = 1


def save_dataset(path: str | Path, problem: str, td: TensorDict, **meta: Any) -> Path:
    """Save a batch of normalised instances as one tensor file for fast loading.

    The file holds plain tensors and strings (loadable with ``torch.load(weights_only=True)``):
    ``problem``, ``version``, ``data`` (the TensorDict as a dict) and ``meta``.
    """
    path = Path(path)
    payload = {
        "problem": problem,
        "version": DATASET_VERSION,
        "batch_size": list(td.batch_size),
        "data": {k: v.detach().cpu() for k, v in td.items()},
        "meta": {k: v for k, v in meta.items()},
    }
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def load_dataset(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[str, TensorDict]:
    """Load a tensor dataset written by :func:`save_dataset` -> (problem name, TensorDict [B])."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such dataset file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InstanceError(path, "file", f"not an nco tensor dataset ({err})") from err
    if not isinstance(payload, dict) or payload.get("version") != DATASET_VERSION or "data" not in payload:
        raise InstanceError(path, "version", f"expected an nco dataset of version {DATASET_VERSION}")
    td = TensorDict(payload["data"], batch_size=payload["batch_size"]).to(device)
    return str(payload["problem"]), td
