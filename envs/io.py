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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
import vrplib
from tensordict import TensorDict

from nco.envs.instance import TSPLIB_COORD_TYPES, Instance, InstanceError, distance_matrix

if TYPE_CHECKING:
    from nco.envs.instance import Solution


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
def load(path: str | Path) -> Instance:
    """Read an instance file: VRPLIB ``.vrp``, TSPLIB ``.tsp`` or Solomon ``.txt``.

    The format is chosen from the content (a Solomon file starts with a name line followed by
    ``VEHICLE``), so extensions are only a hint. Raises :class:`InstanceError` naming the file
    and the field for malformed or inconsistent input, and ``FileNotFoundError`` for a missing
    file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such instance file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise InstanceError(path, "file", "expected a text instance file") from err
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InstanceError(path, "file", "the file is empty")
    if len(lines) > 1 and lines[1].upper().startswith("VEHICLE"):
        return _load_solomon(path, lines)
    return _load_vrplib(path)


def _parse_error(path: Path, err: Exception) -> InstanceError:
    return InstanceError(path, "format", f"could not be parsed ({err})")


#: Columns of a Solomon customer table, in order.
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
            problem="cvrptw",
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


def _load_vrplib(path: Path) -> Instance:
    try:
        raw = vrplib.read_instance(path, compute_edge_weights=False)
    except Exception as err:
        raise _parse_error(path, err) from err
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
    coords = None
    if "node_coord" in raw:
        coords = _section(raw, "node_coord", path, "NODE_COORD_SECTION", dim, 2)
        if not np.isfinite(coords).all():
            bad = int(np.nonzero(~np.isfinite(coords).all(1))[0][0])
            raise InstanceError(path, "NODE_COORD_SECTION", f"node {bad + 1}: expected finite coordinates, found NaN or infinity")
    if ewt in TSPLIB_COORD_TYPES:
        if coords is None:
            raise InstanceError(path, "NODE_COORD_SECTION", f"section is missing (required by EDGE_WEIGHT_TYPE {ewt})")
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
        dist = np.asarray(raw_w["edge_weight"], dtype=np.float64)
        if dist.shape != (dim, dim):
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", f"expected a {dim}x{dim} matrix (DIMENSION), got shape {list(dist.shape)}")
        if not (np.isfinite(dist) & (dist >= 0)).all():
            raise InstanceError(path, "EDGE_WEIGHT_SECTION", "expected finite non-negative weights")
        if coords is not None and np.allclose(dist, distance_matrix(coords, "EXACT"), rtol=1e-9, atol=1e-9):
            # Files written by `write_instance` for exact-Euclidean (generated) instances carry
            # the matrix for outside readers; recognising it keeps the tensors coordinate-based.
            ewt = "EXACT"
    depot = raw.get("depot")
    if depot is not None and (np.size(depot) != 1 or int(np.ravel(depot)[0]) != 0):
        raise InstanceError(path, "DEPOT_SECTION", f"expected a single depot at node 1, got {np.ravel(depot) + 1}")
    ptype = str(raw.get("type", "")).upper()
    name = str(raw.get("name", path.stem)).strip()
    common = dict(distance=dist, coords=coords, edge_weight=ewt, name=name, source=str(path))
    if ptype == "TSP" or ("demand" not in raw and "capacity" not in raw):
        if ptype not in ("TSP", ""):
            raise InstanceError(path, "TYPE", f"expected TSP, CVRP or VRPTW, got {ptype!r} without DEMAND_SECTION")
        return Instance(problem="tsp", **common)  # type: ignore[arg-type]
    if "capacity" not in raw:
        raise InstanceError(path, "CAPACITY", "specification is missing")
    cap = raw["capacity"]
    if not isinstance(cap, int | float) or not math.isfinite(cap) or cap <= 0:
        raise InstanceError(path, "CAPACITY", f"expected a positive number, got {cap!r}")
    demand = _section(raw, "demand", path, "DEMAND_SECTION", dim, None)
    vehicles = raw.get("vehicles")
    kwargs: dict[str, Any] = dict(demand=demand, capacity=float(cap), num_vehicles=int(vehicles) if isinstance(vehicles, int) else None)
    if "time_window" in raw:
        kwargs["time_windows"] = _section(raw, "time_window", path, "TIME_WINDOW_SECTION", dim, 2)
        kwargs["service_time"] = (
            _section(raw, "service_time", path, "SERVICE_TIME_SECTION", dim, None)
            if "service_time" in raw
            else np.zeros(dim)
        )
        return Instance(problem="cvrptw", **common, **kwargs)  # type: ignore[arg-type]
    return Instance(problem="cvrp", **common, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- solutions
def read_solution(path: str | Path, instance: Instance) -> list[list[int]]:
    """Read routes for ``instance`` from a VRPLIB ``.sol`` or TSPLIB ``.tour`` file.

    Returns node ids (0-based; the depot is node 0 and does not appear in VRP routes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such solution file")
    text = path.read_text()
    if "TOUR_SECTION" in text:
        return [_read_tour(path, text, instance)]
    try:
        sol = vrplib.read_solution(path)
    except Exception as err:
        raise InstanceError(path, "format", f"expected 'Route #k: ...' lines ({err})") from err
    routes = [list(map(int, r)) for r in sol.get("routes", [])]
    if not routes:
        raise InstanceError(path, "Route", "no 'Route #k:' lines found")
    if not instance.has_depot:
        # A TSP tour written as a single VRPLIB route: cities are numbered 1..N.
        return [[v - 1 for v in r] for r in routes]
    return routes


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

    VRPLIB: one ``Route #k: c1 c2 ...`` line per route (customers numbered as in CVRPLib, the
    depot being 0), then ``Cost C``. TSPLIB: ``TOUR_SECTION`` with 1-based cities and ``-1``.
    """
    path = Path(path)
    inst = solution.instance
    cost = _format_cost(solution.cost)
    with atomic_write(path) as fh:
        if inst.has_depot:
            for k, r in enumerate(solution.routes, 1):
                fh.write(f"Route #{k}: {' '.join(str(v) for v in r)}\n")
            fh.write(f"Cost {cost}\n")
        else:
            tour = solution.routes[0] if solution.routes else ()
            fh.write(f"NAME : {inst.name}.tour\nCOMMENT : Length {cost} ({solution.solver})\n")
            fh.write(f"TYPE : TOUR\nDIMENSION : {len(tour)}\nTOUR_SECTION\n")
            for v in tour:
                fh.write(f"{v + 1}\n")
            fh.write("-1\nEOF\n")
    return path


def _format_cost(cost: float) -> str:
    if math.isfinite(cost) and abs(cost - round(cost)) < 1e-9:
        return str(int(round(cost)))
    return f"{cost:.10g}"


# ---------------------------------------------------------------------------------- instances
def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_instance(instance: Instance, path: str | Path) -> Path:
    """Write an instance as TSPLIB ``.tsp`` (TSP) or VRPLIB ``.vrp`` (CVRP, CVRPTW).

    TSPLIB coordinate types (EUC_2D, CEIL_2D, ATT, GEO, ...) are written as such; exact and explicit distances are
    written as a FULL_MATRIX ``EDGE_WEIGHT_SECTION`` (with coordinates for display), because no
    TSPLIB type means unrounded Euclidean and any outside reader must get the same costs.
    """
    path = Path(path)
    inst = instance
    n = inst.num_nodes
    data: dict[str, Any] = {"NAME": inst.name}
    data["TYPE"] = {"tsp": "TSP", "cvrp": "CVRP", "cvrptw": "VRPTW"}.get(inst.problem, inst.problem.upper())
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
    if inst.coords is not None:
        data["NODE_COORD_SECTION"] = [[_num(x), _num(y)] for x, y in inst.coords]
    if data["EDGE_WEIGHT_TYPE"] == "EXPLICIT":
        data["EDGE_WEIGHT_SECTION"] = [[f"{v:.12g}" for v in row] for row in inst.distance]
    if inst.demand is not None:
        data["DEMAND_SECTION"] = [_num(v) for v in inst.demand]
        data["DEPOT_SECTION"] = ["1", "-1"]
    if inst.time_windows is not None:
        st = inst.service_time if inst.service_time is not None else np.zeros(n)
        data["SERVICE_TIME_SECTION"] = [_num(v) for v in st]
        data["TIME_WINDOW_SECTION"] = [[_num(a), _num(b)] for a, b in inst.time_windows]
    with atomic_path(path) as tmp:
        vrplib.write_instance(tmp, data)
    return path


def is_instance_file(path: Path) -> bool:
    """Whether a path looks like an instance file this module reads."""
    return path.suffix.lower() in (".vrp", ".tsp", ".txt")




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
