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


def test_whole_benchmark_pack_reproduces_bks(shared_data):
    rows = list(csv.DictReader((shared_data / "bks.csv").open()))
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
    for name in [n for n in E.available() if E.get_problem(n).file_io]:
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
    "unknown edge weight type": (BASE.replace("EUC_2D", "GEO"), "EDGE_WEIGHT_TYPE", "unsupported"),
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


def test_bad_solomon_and_solution_files(tmp_path, instances_dir):
    bad = tmp_path / "bad.txt"
    bad.write_text("C999\n\nVEHICLE\nNUMBER CAPACITY\n 25 200\n")
    with pytest.raises(InstanceError, match="could not be parsed"):
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
