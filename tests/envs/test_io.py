"""Instance files, solution files, conventions, normalisation, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import nco.envs as E
from nco.envs import Instance, InstanceError, Solution, load, read_solution
from nco.envs.instance import distance_matrix

SOLUTION_SUFFIXES = (".sol", ".opt.tour")


def _pairs(folder: Path) -> list[tuple[Path, Path, float]]:
    bks = {row["instance"]: float(row["bks"]) for row in csv.DictReader((folder / "bks.csv").open())}
    out = []
    for name, value in sorted(bks.items()):
        inst = next(p for p in folder.glob(f"{name}.*") if p.suffix in (".vrp", ".tsp", ".txt"))
        sol = next((folder / f"{name}{s}" for s in SOLUTION_SUFFIXES if (folder / f"{name}{s}").exists()), None)
        if sol is not None:
            out.append((inst, sol, value))
    return out


def test_shipped_instances_reproduce_best_known_costs_exactly(instances_dir):
    pairs = _pairs(instances_dir)
    assert len(pairs) == 7
    for inst_path, sol_path, bks in pairs:
        inst = load(inst_path)
        sol = Solution.from_routes(inst, read_solution(sol_path, inst))
        assert sol.feasible, (inst_path.name, sol.violations[:3])
        assert sol.cost == pytest.approx(bks, abs=1e-6), inst_path.name


def test_known_values_by_name(instances_dir):
    x = load(instances_dir / "X-n101-k25.vrp")
    assert (x.problem, x.num_nodes, x.capacity, x.edge_weight) == ("cvrp", 101, 206.0, "EUC_2D")
    c = load(instances_dir / "C101.txt")
    assert (c.problem, c.num_vehicles, c.capacity, c.edge_weight) == ("cvrptw", 25, 200.0, "SOLOMON")
    assert Solution.from_routes(c, read_solution(instances_dir / "C101.sol", c)).cost == pytest.approx(827.3)
    assert load(instances_dir / "kroA100.tsp").problem == "tsp"
    e13 = load(instances_dir / "E-n13-k4.vrp")
    assert e13.edge_weight == "EXPLICIT" and e13.coords is None
    td = e13.to_tensordict()
    assert "distance" in td.keys() and td["locs"].shape == (1, 13, 2)


#: Sets of the benchmark pack in the dialects and conventions nco reads; the pack's other
#: folders (vrpb, mdvrptw, vrptw-gh1000) use PyVRP's VRPLIB extensions and conventions.
PACK_SETS = ("cvrplib-x", "cvrplib-small", "tsplib", "solomon")


def test_whole_benchmark_pack_reproduces_bks(shared_data):
    rows = [r for r in csv.DictReader((shared_data / "bks.csv").open()) if r["set"] in PACK_SETS]
    checked = 0
    for row in rows:
        folder = shared_data / row["set"]
        inst_path = next(p for p in folder.glob(f"{row['instance']}.*") if p.suffix in (".vrp", ".tsp", ".txt"))
        sol_path = next((folder / f"{row['instance']}{s}" for s in SOLUTION_SUFFIXES if (folder / f"{row['instance']}{s}").exists()), None)
        if sol_path is None:  # four TSPLIB optima have no tour file
            continue
        inst = load(inst_path)
        sol = Solution.from_routes(inst, read_solution(sol_path, inst))
        assert sol.feasible, (row["instance"], sol.violations[:3])
        assert sol.cost == pytest.approx(float(row["bks"]), abs=1e-6), row["instance"]
        checked += 1
    assert checked >= 190


def test_distance_conventions():
    c = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [0.25, 0.0]])
    assert distance_matrix(c, "EUC_2D")[0, 2] == 1.0  # sqrt(2) -> 1
    assert distance_matrix(c, "EUC_2D")[0, 1] == 5.0
    assert distance_matrix(c, "CEIL_2D")[0, 2] == 2.0
    assert distance_matrix(c, "SOLOMON")[0, 2] == pytest.approx(1.4)
    assert distance_matrix(c, "SOLOMON")[0, 3] == pytest.approx(0.2)
    assert distance_matrix(c, "EXACT")[0, 2] == pytest.approx(np.sqrt(2))


def test_more_tsplib_distance_types_by_hand():
    c = np.array([[0.0, 0.0], [3.0, 4.2], [10.0, 0.0], [2.5, -1.4]])
    # |dx| + |dy| = 7.2 -> 7; max(nint 3, nint 4.2) = 4; nint(3.9) = 4, nint(2.5) = 3 (TSPLIB's
    # nint is (int)(x + 0.5)).
    assert distance_matrix(c, "MAN_2D")[0, 1] == 7.0 and distance_matrix(c, "MAX_2D")[0, 1] == 4.0
    assert distance_matrix(c, "MAN_2D")[0, 3] == 4.0 and distance_matrix(c, "MAX_2D")[0, 3] == 3.0
    assert distance_matrix(c, "CEIL_2D")[0, 1] == 6.0  # sqrt(26.64) = 5.16
    # ATT: r = sqrt(d^2 / 10); nint(r), plus one when that rounded down.
    assert distance_matrix(c, "ATT")[0, 1] == 2.0  # r = 1.632 -> 2
    assert distance_matrix(c, "ATT")[0, 2] == 4.0  # r = 3.162 -> nint 3 < r -> 4
    for conv in ("ATT", "GEO", "MAN_2D", "MAX_2D"):
        d = distance_matrix(c, conv)
        assert (np.diag(d) == 0).all() and (d == d.T).all()


# Public TSPLIB 95 data (Reinelt): coordinates and optimal tours (1-based) with their lengths.
BURMA14_GEO = [(16.47, 96.10), (16.47, 94.44), (20.09, 92.54), (22.39, 93.37), (25.23, 97.24), (22.00, 96.05), (20.47, 97.02), (17.20, 96.29), (16.30, 97.38), (14.05, 98.12), (16.53, 97.38), (21.52, 95.59), (19.41, 97.13), (20.09, 94.55)]
ULYSSES16_GEO = [(38.24, 20.42), (39.57, 26.15), (40.56, 25.32), (36.26, 23.12), (33.48, 10.54), (37.56, 12.19), (38.42, 13.11), (37.52, 20.44), (41.23, 9.10), (41.17, 13.05), (36.08, -5.21), (38.47, 15.13), (38.15, 15.35), (37.51, 15.17), (35.49, 14.32), (39.36, 19.56)]
ATT48_ATT = [(6734, 1453), (2233, 10), (5530, 1424), (401, 841), (3082, 1644), (7608, 4458), (7573, 3716), (7265, 1268), (6898, 1885), (1112, 2049), (5468, 2606), (5989, 2873), (4706, 2674), (4612, 2035), (6347, 2683), (6107, 669), (7611, 5184), (7462, 3590), (7732, 4723), (5900, 3561), (4483, 3369), (6101, 1110), (5199, 2182), (1633, 2809), (4307, 2322), (675, 1006), (7555, 4819), (7541, 3981), (3177, 756), (7352, 4506), (7545, 2801), (3245, 3305), (6426, 3173), (4608, 1198), (23, 2216), (7248, 3779), (7762, 4595), (7392, 2244), (3484, 2829), (6271, 2135), (4985, 140), (1916, 1569), (7280, 4899), (7509, 3239), (10, 2676), (6807, 2993), (5185, 3258), (3023, 1942)]
TSPLIB_OPTIMA = {
    # burma14 has no published tour file; this one is checked optimal by Held-Karp below.
    "burma14": ("GEO", BURMA14_GEO, [1, 10, 9, 11, 8, 13, 7, 12, 6, 5, 4, 3, 14, 2], 3323),
    "ulysses16": ("GEO", ULYSSES16_GEO, [1, 14, 13, 12, 7, 6, 15, 5, 11, 9, 10, 16, 3, 2, 4, 8], 6859),
    "att48": ("ATT", ATT48_ATT, [1, 8, 38, 31, 44, 18, 7, 28, 6, 37, 19, 27, 17, 43, 30, 36, 46, 33, 20, 47, 21, 32, 39, 48, 5, 42, 24, 10, 45, 35, 4, 26, 2, 29, 34, 41, 16, 22, 3, 23, 14, 25, 13, 11, 12, 15, 40, 9], 10628),
}


def _tsplib_text(name: str, ewt: str, coords: list[tuple[float, float]]) -> str:
    rows = "".join(f"{i} {x} {y}\n" for i, (x, y) in enumerate(coords, 1))
    return f"NAME: {name}\nTYPE: TSP\nDIMENSION: {len(coords)}\nEDGE_WEIGHT_TYPE: {ewt}\nNODE_COORD_SECTION\n{rows}EOF\n"


def _held_karp(d: np.ndarray) -> float:
    """Exact TSP optimum by dynamic programming over subsets of nodes 1..N-1."""
    m = d.shape[0] - 1
    inner = d[1:, 1:]
    best = np.full((1 << m, m), np.inf)
    best[1 << np.arange(m), np.arange(m)] = d[0, 1:]
    for mask in range(1, 1 << m):
        row = best[mask]
        if not np.isfinite(row).any():
            continue
        reach = (row[:, None] + inner).min(0)
        for k in np.nonzero(~((mask >> np.arange(m)) & 1).astype(bool))[0]:
            nxt = mask | (1 << int(k))
            best[nxt, k] = min(best[nxt, k], reach[k])
    return float((best[-1] + d[1:, 0]).min())


@pytest.mark.parametrize("name", sorted(TSPLIB_OPTIMA))
def test_tsplib_geo_and_att_reproduce_known_optima(tmp_path, name):
    ewt, coords, tour, optimum = TSPLIB_OPTIMA[name]
    path = tmp_path / f"{name}.tsp"
    path.write_text(_tsplib_text(name, ewt, coords))
    inst = load(path)
    assert (inst.problem, inst.edge_weight, inst.num_nodes) == ("tsp", ewt, len(coords))
    assert sorted(tour) == list(range(1, len(coords) + 1))
    sol = Solution.from_routes(inst, [[v - 1 for v in tour]])
    assert sol.feasible and sol.cost == optimum
    if name == "burma14":
        assert _held_karp(inst.distance) == optimum
    # The tensors carry the matrix: Euclidean distance on the coordinates is not the metric.
    td = inst.to_tensordict()
    assert "distance" in td.keys()
    seq = torch.tensor([[v - 1 for v in tour]])
    tensor_cost = E.get_problem("tsp").cost(td, seq).double() * float(td["scale"])
    assert tensor_cost.item() == pytest.approx(optimum, rel=1e-6)


@pytest.mark.parametrize("ewt", ["GEO", "ATT", "CEIL_2D", "MAN_2D", "MAX_2D"])
def test_writing_keeps_the_tsplib_type(tmp_path, ewt):
    _, coords, tour, _ = TSPLIB_OPTIMA["ulysses16"]
    inst = Instance.from_arrays(coords=coords, edge_weight=ewt, name="u16")
    back = load(E.write_instance(inst, tmp_path / "u16.tsp"))
    assert back.edge_weight == ewt and f"EDGE_WEIGHT_TYPE: {ewt}" in (tmp_path / "u16.tsp").read_text()
    np.testing.assert_array_equal(back.distance, inst.distance)
    sol = Solution.from_routes(back, [[v - 1 for v in tour]], solver="file")
    again = Solution.from_routes(back, read_solution(sol.write(tmp_path / "u16.tour"), back))
    assert again.routes == sol.routes and again.cost == sol.cost
    cvrp = Instance.from_arrays(coords=coords, demand=[0] + [1] * 15, capacity=5, edge_weight=ewt)
    back = load(E.write_instance(cvrp, tmp_path / "u16.vrp"))
    assert back.edge_weight == ewt and back.route_cost([[1, 2, 3]]) == cvrp.route_cost([[1, 2, 3]])


@pytest.mark.parametrize("name", ["X-n101-k25", "C101", "kroA100"])
def test_solution_write_read_roundtrip(instances_dir, tmp_path, name):
    inst_path = next(p for p in instances_dir.glob(f"{name}.*") if p.suffix in (".vrp", ".tsp", ".txt"))
    inst = load(inst_path)
    sol_path = next(instances_dir / f"{name}{s}" for s in SOLUTION_SUFFIXES if (instances_dir / f"{name}{s}").exists())
    sol = Solution.from_routes(inst, read_solution(sol_path, inst), solver="file")
    out = sol.write(tmp_path / (name + (".tour" if inst.problem == "tsp" else ".sol")))
    again = Solution.from_routes(inst, read_solution(out, inst))
    assert again.routes == sol.routes and again.cost == sol.cost
    text = out.read_text()
    if inst.problem == "tsp":
        assert "TOUR_SECTION" in text and text.rstrip().endswith("EOF")
    else:
        assert text.startswith("Route #1:") and f"Cost {sol.cost:g}" in text
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left


def test_generated_instances_roundtrip_through_files(tmp_path):
    for name in E.available():
        p = E.get_problem(name)
        td = p.generator(num_loc=15)(2, seed=5)
        inst = p.to_instance(td[0:1], name=f"g-{name}")
        assert inst.edge_weight == "EXACT"
        path = E.write_instance(inst, tmp_path / f"g-{name}{'.vrp' if p.has_depot else '.tsp'}")
        back = load(path)
        assert back.problem == name and back.edge_weight == "EXACT"
        np.testing.assert_allclose(back.distance, inst.distance, rtol=1e-10)
        if p.has_depot:
            np.testing.assert_array_equal(back.demand, inst.demand)
        # The tensor cost of any tour equals the instance cost (unit square, exact distances).
        tour = torch.randperm(15 if not p.has_depot else 15)[None] + (1 if p.has_depot else 0)
        routes = p.tours_to_routes(tour[0].tolist())
        if name == "cvrp":
            assert p.cost(td[0:1], tour).item() == pytest.approx(back.route_cost(routes), rel=1e-5)


def test_from_arrays_and_repr():
    inst = Instance.from_arrays(coords=[[0, 0], [0, 3], [4, 0]], demand=[0, 1, 2], capacity=3)
    assert inst.problem == "cvrp" and inst.route_cost([[1, 2]]) == pytest.approx(12.0)
    assert "cvrp" in repr(inst)
    sol = Solution.from_routes(inst, [[1, 2]], solver="hand", runtime=0.5)
    assert sol.feasible and "feasible" in repr(sol) and "cost=12" in repr(sol)
    bad = Solution.from_routes(inst, [[1]])
    assert not bad.feasible and [v.kind for v in bad.violations] == ["missing"]
    tsp = Instance.from_arrays(distance=np.array([[0, 1, 2], [3, 0, 1], [1, 5, 0]]))
    assert tsp.problem == "tsp" and not tsp.is_symmetric
    assert tsp.route_cost([[0, 1, 2]]) == pytest.approx(1 + 1 + 1)


def test_to_tensordict_normalisation_is_explicit(instances_dir):
    inst = load(instances_dir / "R101.txt")
    td = inst.to_tensordict()
    scale, offset = float(td["scale"]), td["offset"].numpy()
    np.testing.assert_allclose(td["locs"][0].double().numpy() * scale + offset, inst.coords, atol=1e-4)
    np.testing.assert_allclose(td["time_windows"][0].double().numpy() * scale, inst.time_windows, rtol=1e-6)
    np.testing.assert_allclose(td["demand"][0].double().numpy() * inst.capacity, inst.demand, atol=1e-4)
    assert td["locs"].min() >= 0 and td["locs"].max() <= 1 + 1e-6


# ----------------------------------------------------------------------------- bad input
BASE = """NAME : tiny
TYPE : CVRP
DIMENSION : 4
EDGE_WEIGHT_TYPE : EUC_2D
CAPACITY : 10
NODE_COORD_SECTION
1 0 0
2 3 4
3 6 8
4 0 5
DEMAND_SECTION
1 0
2 4
3 5
4 6
DEPOT_SECTION
1
-1
EOF
"""

BAD_CASES = {
    "missing demand section": (BASE.split("DEMAND_SECTION")[0] + "DEPOT_SECTION\n1\n-1\nEOF\n", "DEMAND_SECTION", "missing"),
    "wrong dimension": (BASE.replace("DIMENSION : 4", "DIMENSION : 5"), "NODE_COORD_SECTION", "expected 5 rows"),
    "demand above capacity": (BASE.replace("4 6\n", "4 11\n"), "DEMAND_SECTION", "exceeds CAPACITY"),
    "nan coordinate": (BASE.replace("3 6 8", "3 nan 8"), "NODE_COORD_SECTION", "NaN"),
    "infinite coordinate": (BASE.replace("3 6 8", "3 inf 8"), "NODE_COORD_SECTION", "infinity"),
    "negative demand": (BASE.replace("2 4\n", "2 -4\n"), "DEMAND_SECTION", "non-negative"),
    "unknown edge weight type": (BASE.replace("EUC_2D", "XRAY1"), "EDGE_WEIGHT_TYPE", "unsupported"),
    "missing capacity": (BASE.replace("CAPACITY : 10\n", ""), "CAPACITY", "missing"),
    "missing dimension": (BASE.replace("DIMENSION : 4\n", ""), "DIMENSION", "missing"),
    "time window start after end": (
        BASE.replace("TYPE : CVRP", "TYPE : VRPTW").replace("DEPOT_SECTION", "TIME_WINDOW_SECTION\n1 0 100\n2 0 50\n3 60 40\n4 0 50\nDEPOT_SECTION"),
        "TIME_WINDOW_SECTION",
        "start <= end",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_raise_specific_errors(tmp_path, case):
    text, field, message = BAD_CASES[case]
    path = tmp_path / "bad.vrp"
    path.write_text(text)
    with pytest.raises(InstanceError) as info:
        load(path)
    err = info.value
    assert str(path) in str(err) and err.field == field and message in str(err), str(err)


def test_good_base_file_loads(tmp_path):
    path = tmp_path / "ok.vrp"
    path.write_text(BASE)
    inst = load(path)
    assert inst.route_cost([[1, 2], [3]]) == 5 + 5 + 10 + 5 + 5


def _solomon_row(text: str, cust: int) -> str:
    return next(ln for ln in text.splitlines() if ln.split()[:1] == [str(cust)] and len(ln.split()) == 7)


def _with_value(text: str, cust: int, column: str, value: str) -> str:
    line = _solomon_row(text, cust)
    fields = line.split()
    fields[E.io.SOLOMON_COLUMNS.index(column)] = value
    return text.replace(line, "  " + "  ".join(fields))


@pytest.mark.parametrize(
    ("cust", "column", "value", "field", "message"),
    [
        (3, "READY TIME", "-5", "READY TIME", "node 4 (CUST NO. 3): expected a non-negative value, got -5"),
        (3, "SERVICE TIME", "-1", "SERVICE TIME", "expected a non-negative value"),
        (3, "DEMAND", "-10", "DEMAND", "expected a non-negative value"),
        (3, "DEMAND", "900", "DEMAND", "exceeds CAPACITY"),
        (3, "READY TIME", "nan", "READY TIME", "expected a finite number, got 'nan'"),
        (3, "DUE DATE", "x", "DUE DATE", "node 4 (CUST NO. 3): expected a number, got 'x'"),
        (3, "XCOORD.", "1e400", "XCOORD.", "finite"),
        (3, "CUST NO.", "7", "CUST NO.", "numbered 0, 1, 2, ... in order"),
        (0, "DUE DATE", "10", "READY TIME/DUE DATE", "cannot be served"),  # the depot closes
    ],
)
def test_bad_solomon_values_name_file_and_column(tmp_path, instances_dir, cust, column, value, field, message):
    # vrplib reads the table as integers and turns what it cannot parse into -1; nco refuses.
    path = tmp_path / "C101x.txt"
    path.write_text(_with_value((instances_dir / "C101.txt").read_text(), cust, column, value))
    with pytest.raises(InstanceError) as info:
        load(path)
    assert info.value.source == str(path) and info.value.field == field, str(info.value)
    assert message in info.value.message, str(info.value)


def test_solomon_fleet_line_and_decimal_values(tmp_path, instances_dir):
    text = (instances_dir / "C101.txt").read_text()
    for fleet, field in (("0     200", "VEHICLE NUMBER"), ("25     -3", "CAPACITY"), ("2.5  200", "VEHICLE NUMBER")):
        path = tmp_path / "fleet.txt"
        path.write_text(text.replace("25         200", fleet, 1))
        with pytest.raises(InstanceError) as info:
            load(path)
        assert info.value.field == field, str(info.value)
    path = tmp_path / "decimal.txt"
    path.write_text(_with_value(text, 3, "SERVICE TIME", "12.5"))
    assert load(path).service_time[3] == 12.5  # vrplib's integer table would have read -1


def test_time_window_values_validated_for_every_source():
    tw = [[0, 100], [-5, 50]]
    with pytest.raises(InstanceError, match="node 2: expected a non-negative earliest start"):
        Instance.from_arrays(coords=[[0, 0], [1, 0]], demand=[0, 1], capacity=3, time_windows=tw)
    with pytest.raises(InstanceError, match="VEHICLES: expected a positive number of vehicles"):
        Instance.from_arrays(coords=[[0, 0], [1, 0]], demand=[0, 1], capacity=3, num_vehicles=0)
    # Vehicles leave when the depot opens: a customer closing before that is unservable.
    with pytest.raises(InstanceError, match="node 2: cannot be served"):
        Instance.from_arrays(coords=[[0, 0], [1, 0]], demand=[0, 1], capacity=3, time_windows=[[50, 100], [0, 20]])


def test_bad_solomon_and_solution_files(tmp_path, instances_dir):
    bad = tmp_path / "bad.txt"
    bad.write_text("C999\n\nVEHICLE\nNUMBER CAPACITY\n 25 200\n")
    with pytest.raises(InstanceError, match="expected a Solomon file"):
        load(bad)
    text = (instances_dir / "C101.txt").read_text()
    line = next(ln for ln in text.splitlines() if ln.split()[:1] == ["3"])
    fields = line.split()
    fields[4], fields[5] = fields[5], fields[4]  # ready time after due date
    swapped = tmp_path / "C101x.txt"
    swapped.write_text(text.replace(line, "    " + "      ".join(fields)))
    with pytest.raises(InstanceError, match="node 4: expected start <= end"):
        load(swapped)
    inst = load(instances_dir / "X-n101-k25.vrp")
    junk = tmp_path / "junk.sol"
    junk.write_text("hello\n")
    with pytest.raises(InstanceError, match="Route"):
        read_solution(junk, inst)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.vrp")


def test_instance_validation_from_arrays():
    with pytest.raises(InstanceError, match="exceeds CAPACITY"):
        Instance.from_arrays(coords=[[0, 0], [1, 1]], demand=[0, 5], capacity=3)
    with pytest.raises(InstanceError, match="finite"):
        Instance.from_arrays(coords=[[0, 0], [np.inf, 1]])
    with pytest.raises(InstanceError, match="cannot be served"):
        Instance.from_arrays(coords=[[0, 0], [10, 0]], demand=[0, 1], capacity=3, time_windows=[[0, 5], [0, 20]], service_time=[0, 0])
