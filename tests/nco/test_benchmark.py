"""Benchmark runner and the solve/benchmark commands: rows agree with an outside
recomputation from the written files, runs resume, bad input exits 2."""

from __future__ import annotations

import csv
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vrplib

import nco.envs as E
from nco.benchmark import (
    format_budget_tables,
    format_summary,
    generate_instances,
    read_results,
    run_benchmark,
    summarize,
)
from nco.commands import benchmark as bench_cmd
from nco.commands import solve as solve_cmd

PY = sys.executable


def _outside_cost(instance_file: Path, solution_file: Path) -> tuple[float, list[list[int]], dict]:
    """Cost of a solution file recomputed with vrplib + numpy only (no nco code)."""
    raw = vrplib.read_instance(instance_file)
    dist = np.asarray(raw["edge_weight"], dtype=float)
    text = solution_file.read_text()
    if "TOUR_SECTION" in text:
        body = text.split("TOUR_SECTION")[1].split()
        tour = [int(t) - 1 for t in body if t not in ("-1", "EOF")]
        routes = [tour]
        cost = float(sum(dist[a, b] for a, b in zip(tour, tour[1:] + tour[:1])))
    else:
        routes = [list(map(int, r)) for r in vrplib.read_solution(solution_file)["routes"]]
        cost = float(sum(dist[a, b] for r in routes for a, b in zip([0, *r], [*r, 0])))
    return cost, routes, raw


@pytest.fixture(scope="module")
def small_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, str]], list[str]]:
    run = tmp_path_factory.mktemp("run")
    files = generate_instances("cvrp", 10, 2, 5, run / "instances") + generate_instances(
        "tsp", 8, 1, 5, run / "instances"
    )
    log: list[str] = []
    rows = run_benchmark(
        files,
        ["ortools", "hgs", "pyvrp"],
        [0.2],
        run,
        seed=3,
        workers=1,
        reference="none",
        progress=log.append,
    )
    return run, rows, log


def test_rows_cover_the_grid(small_run: tuple[Path, list[dict[str, str]], list[str]]) -> None:
    run, rows, _ = small_run
    assert len(rows) == 3 * 3
    with (run / "results.csv").open() as fh:
        header = next(csv.reader(fh))
    for col in (
        "instance",
        "problem",
        "n",
        "solver",
        "time_limit",
        "seed",
        "cost",
        "feasible",
        "violations",
        "runtime",
        "reference",
        "gap_pct",
        "solution_file",
    ):
        assert col in header
    assert {(r["solver"], r["time_limit"], r["seed"]) for r in rows} == {
        (s, "0.2", "3") for s in ("ortools", "hgs", "pyvrp")
    }
    assert all(r["feasible"] == "True" and r["error"] == "" for r in rows)


def test_rows_agree_with_outside_recomputation(
    small_run: tuple[Path, list[dict[str, str]], list[str]],
) -> None:
    run, rows, _ = small_run
    for r in rows:
        cost, routes, raw = _outside_cost(Path(r["instance_file"]), run / r["solution_file"])
        assert float(r["cost"]) == pytest.approx(cost, rel=1e-9), r
        visited = sorted(v for route in routes for v in route)
        if r["problem"] == "tsp":
            assert visited == list(range(raw["dimension"]))
        else:
            assert visited == list(range(1, raw["dimension"]))
            demand = np.asarray(raw["demand"], dtype=float)
            assert all(demand[route].sum() <= raw["capacity"] for route in routes)
        # nco's own reader agrees too.
        inst = E.load(r["instance_file"])
        assert inst.route_cost(E.read_solution(run / r["solution_file"], inst)) == pytest.approx(
            cost, rel=1e-9
        )


def test_resume_skips_existing_rows(
    small_run: tuple[Path, list[dict[str, str]], list[str]],
) -> None:
    run, rows, _ = small_run
    files = sorted((run / "instances").iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in (run / "solutions").iterdir()}
    log: list[str] = []
    again = run_benchmark(
        files,
        ["ortools", "hgs", "pyvrp"],
        [0.2],
        run,
        seed=3,
        reference="none",
        progress=log.append,
    )
    assert any("resuming: 9 of 9" in line for line in log)
    assert not any(line.startswith("[") for line in log)  # nothing solved
    assert len(read_results(run / "results.csv")) == 9
    assert {p.name: p.stat().st_mtime_ns for p in (run / "solutions").iterdir()} == before
    assert [r["cost"] for r in again] == [r["cost"] for r in rows]


def test_summary_table(small_run: tuple[Path, list[dict[str, str]], list[str]]) -> None:
    _, rows, _ = small_run
    summary = summarize(rows)
    assert {s["solver"] for s in summary} == {"ortools", "hgs", "pyvrp"}
    for s in summary:  # one group per problem: 2 CVRP instances, 1 TSP instance
        assert s["runs"] == {"cvrp": 2, "tsp": 1}[s["problem"]] and s["feasible_pct"] == 100.0
        assert s["mean_gap_best_pct"] >= 0.0
    text = format_summary(summary)
    assert "gap best %" in text and "pyvrp" in text


def test_one_table_per_problem() -> None:
    """TSP and CVRP rows of one run are never averaged together."""

    def row(problem: str, instance: str, cost: float) -> dict[str, str]:
        return {"problem": problem, "instance": instance, "solver": "pyvrp", "time_limit": "1",
                "time_per_100": "", "cost": str(cost), "feasible": "True", "gap_pct": "",
                "runtime": "0.9", "cpu_time": "0.9"}

    rows = [row("tsp", "a", 10.0), row("tsp", "b", 30.0), row("cvrp", "c", 1000.0)]
    summary = summarize(rows)
    assert sorted((s["problem"], s["runs"], s["mean_cost"]) for s in summary) == [
        ("cvrp", 1, 1000.0),
        ("tsp", 2, 20.0),
    ]
    text = format_summary(summary)
    assert text.startswith("cvrp:\n") and "\n\ntsp:\n" in text
    md = format_budget_tables(summary)
    assert "**cvrp — 1 s**" in md and "**tsp — 1 s**" in md
    # one problem: the table has no heading, as before
    assert not format_summary(summarize(rows[:2])).startswith("tsp")


def test_pyvrp_reference_and_unsupported_skip(tmp_path: Path) -> None:
    files = generate_instances("cvrptw", 8, 1, 2, tmp_path / "instances")
    log: list[str] = []
    rows = run_benchmark(
        files, ["hgs", "ortools"], [0.2], tmp_path, reference="pyvrp:0.3", progress=log.append
    )
    assert any("'hgs' does not support 'cvrptw'" in line for line in log)
    by = {(r["solver"], r["time_limit"]): r for r in rows}
    assert set(by) == {("pyvrp", "0.3"), ("ortools", "0.2")}
    ref = float(by[("pyvrp", "0.3")]["cost"])
    assert float(by[("ortools", "0.2")]["reference"]) == pytest.approx(ref)
    assert float(by[("ortools", "0.2")]["gap_pct"]) == pytest.approx(
        100 * (float(by[("ortools", "0.2")]["cost"]) / ref - 1), abs=1e-5
    )


def test_bks_reference_and_plot(tmp_path: Path) -> None:
    files = generate_instances("cvrp", 8, 2, 9, tmp_path / "instances")
    names = [E.load(f).name for f in files]
    bks = tmp_path / "bks.csv"
    bks.write_text("instance,bks\n" + "".join(f"{n},1.0\n" for n in names))
    rows = run_benchmark(
        files, ["pyvrp"], [0.1, 0.2], tmp_path / "run", reference=str(bks), progress=lambda s: None
    )
    assert all(float(r["reference"]) == 1.0 and r["gap_pct"] != "" for r in rows)
    from nco.plotting.gap_vs_time import plot_gap_vs_time

    png = plot_gap_vs_time(tmp_path / "run" / "results.csv", tmp_path / "gap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_command_with_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = bench_cmd.main(
        [
            "--problem",
            "cvrp",
            "--size",
            "8",
            "--num",
            "2",
            "--seed",
            "1",
            "--solvers",
            "hgs,pyvrp",
            "--time-limits",
            "0.2",
            "--workers",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "mean cost" in captured.out and "gap best %" in captured.out
    assert len(read_results(out / "results.csv")) == 4
    assert len(list((out / "instances").glob("*.vrp"))) == 2
    assert (out / "gap_vs_time.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--problem",
                "cvrp",
                "--size",
                "5",
                "--num",
                "1",
                "--solvers",
                "ortools,nope",
                "--out",
                "OUT",
            ],
            "unknown solver",
        ),
        (["EMPTY", "--out", "OUT"], "no instance files"),
        (["BAD", "--out", "OUT"], "broken.vrp"),
        (["--problem", "cvrp", "--size", "5", "--num", "1"], "--out"),
        (["--problem", "cvrp", "--time-limits", "1,x", "--out", "OUT"], "--time-limits"),
        (["--problem", "nope", "--out", "OUT"], "unknown problem"),
    ],
    ids=[
        "unknown-solver",
        "empty-dir",
        "unreadable-instance",
        "missing-out",
        "bad-time-limits",
        "unknown-problem",
    ],
)
def test_benchmark_bad_input_exits_2(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    subst = _bad_inputs(tmp_path)
    code = bench_cmd.main([subst.get(a, a) for a in args])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("nco benchmark: error:") and message in lines[0]
    ), lines


def _bad_inputs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "bad").mkdir(exist_ok=True)
    (tmp_path / "bad" / "broken.vrp").write_text(
        "NAME : broken\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nNODE_COORD_SECTION\n1 0 0\n"
    )
    return {
        "OUT": str(tmp_path / "out"),
        "EMPTY": str(tmp_path / "empty"),
        "BAD": str(tmp_path / "bad"),
    }


def test_benchmark_module_entry_exits_2_without_traceback(tmp_path: Path) -> None:
    subst = _bad_inputs(tmp_path)
    proc = subprocess.run(
        [PY, "-m", "nco.commands.benchmark", subst["BAD"], "--out", subst["OUT"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "broken.vrp" in lines[0]


def test_solve_command_writes_solutions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = generate_instances("cvrp", 8, 2, 4, tmp_path / "instances")
    out = tmp_path / "sols"
    code = solve_cmd.main(
        [*map(str, files), "--solver", "ortools", "--time-limit", "0.2", "--out", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert text.count("feasible") == 2
    for f in files:
        inst = E.load(f)
        sol_file = out / f"{inst.name}.ortools.sol"
        assert sol_file.is_file()
        assert E.Solution.from_routes(inst, E.read_solution(sol_file, inst)).feasible


def test_solve_command_gap_from_bks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (f,) = generate_instances("tsp", 7, 1, 4, tmp_path)
    bks = tmp_path / "bks.csv"
    bks.write_text(f"instance,bks\n{E.load(f).name},1.0\n")
    code = solve_cmd.main(
        [
            str(f),
            "--solver",
            "pyvrp",
            "--time-limit",
            "0.1",
            "--bks",
            str(bks),
            "--out",
            str(tmp_path / "t.tour"),
        ]
    )
    assert code == 0
    assert "gap" in capsys.readouterr().out
    assert (tmp_path / "t.tour").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["INST", "--solver", "nope"], "unknown solver"),
        (["INST", "INST", "--solver", "hgs", "--plot", "x.png"], "--plot: give one instance"),
        (["missing.vrp", "--solver", "hgs"], "no such instance file"),
        (["TW", "--solver", "hgs"], "does not support 'cvrptw'"),
    ],
    ids=["unknown-solver", "plot", "missing-file", "unsupported"],
)
def test_solve_bad_input_exits_2(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (inst,) = generate_instances("cvrp", 5, 1, 1, tmp_path)
    (tw,) = generate_instances("cvrptw", 5, 1, 1, tmp_path)
    subst = {"INST": str(inst), "TW": str(tw)}
    code = solve_cmd.main([subst.get(a, a) for a in args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nco solve: error:") and message in err[0]


# ---------------------------------------------------------------------------------- variants
def test_mtvrp_files_are_the_same_instances_in_every_variant(tmp_path: Path) -> None:
    from nco.benchmark import BenchmarkError, parse_variants

    variants = ("CVRP", "VRPTW", "OVRPB", "MDVRP")
    files = generate_instances("mtvrp", 7, 3, 4, tmp_path / "a", variants=variants)
    assert [f.name for f in files[:4]] == [f"mtvrp7-{v}-uniform-s4-0000.vrp" for v in variants]
    assert len(files) == 12  # instance-major: every variant of instance 0 first
    insts = [E.load(f) for f in files]
    assert [i.variant for i in insts] == list(variants) * 3
    # the same customers in every variant (MD adds depots in front)
    for k in range(3):
        group = insts[4 * k : 4 * k + 4]
        ref = group[0].coords[1:]
        for inst in group[1:]:
            np.testing.assert_allclose(inst.coords[inst.num_depots :], ref)
    # a set without MD gives the very same files for the variants it shares
    again = generate_instances("mtvrp", 7, 3, 4, tmp_path / "b", variants=("CVRP", "OVRPB"))
    for f in again:
        assert f.read_bytes() == (tmp_path / "a" / f.name).read_bytes()
    assert len(parse_variants("core")) == 16 and len(parse_variants("all")) == 48
    assert parse_variants("vrptw,ovrpb") == ("VRPTW", "OVRPB")
    with pytest.raises(BenchmarkError, match="VRPX"):
        parse_variants("CVRP,VRPX")
    with pytest.raises(BenchmarkError, match="--variants applies to mtvrp"):
        generate_instances("cvrp", 7, 1, 4, tmp_path / "c", variants=("CVRP",))


def _row(inst, variant, solver, cost, feasible=True, n=10):
    return {
        "instance": inst, "problem": "mtvrp", "variant": variant, "n": str(n), "solver": solver,
        "time_limit": "1", "time_per_100": "", "seed": "0", "cost": "" if cost is None else str(cost),
        "feasible": str(feasible), "runtime": "1",
    }  # fmt: skip


def test_variant_tables_gaps_to_the_best_reference() -> None:
    from nco.benchmark import variant_tables

    rows = [
        _row("a", "CVRP", "pyvrp", 10.0), _row("a", "CVRP", "ortools", 11.0),
        _row("a", "CVRP", "neural@m", 11.0),
        _row("b", "CVRP", "pyvrp", 20.0), _row("b", "CVRP", "ortools", 19.0),
        _row("b", "CVRP", "neural@m", 20.9),
        _row("c", "OVRP", "pyvrp", 5.0), _row("c", "OVRP", "ortools", 5.0, feasible=False),
        _row("c", "OVRP", "neural@m", 6.0, feasible=False),
        _row("d", "MDVRP", "pyvrp", 8.0), _row("d", "MDVRP", "ortools", 8.0),
        _row("d", "MDVRP", "neural@m", 8.8),
    ]  # fmt: skip
    (t,) = variant_tables(rows, trained={"neural@m": ("CVRP",)})
    assert t.label == "1" and t.references == ("pyvrp", "ortools") and t.models == ("neural@m",)
    assert t.variants == ("CVRP", "OVRP", "MDVRP")  # mtvrp's order
    assert t.costs["pyvrp"]["CVRP"] == pytest.approx(15.0)
    assert math.isnan(t.costs["ortools"]["OVRP"]) and t.infeasible["ortools"]["OVRP"] == 1
    assert t.gaps["neural@m"]["CVRP"] == pytest.approx((10.0 + 10.0) / 2)  # 11/10, 20.9/19
    assert math.isnan(t.gaps["neural@m"]["OVRP"]) and t.infeasible["neural@m"]["OVRP"] == 1
    assert t.groups["neural@m"]["trained"] == pytest.approx(10.0)
    assert t.groups["neural@m"]["extended"] == pytest.approx(10.0)
    assert math.isnan(t.groups["neural@m"]["zero-shot"])  # OVRP: no feasible model plan
    lines = t.text.splitlines()
    assert any(ln.startswith("CVRP*") for ln in lines)
    assert any(ln.startswith("OVRP ") and ln.endswith("0/1/1") for ln in lines)
    assert (
        "RESULT model=neural@m budget=1 trained_gap=10.000 zeroshot_gap=nan extended_gap=10.000"
        in lines
    )
    # references named explicitly; a row without a variant column takes it from its name
    old = [{**r, "variant": ""} for r in rows[:3]]
    old = [{**r, "instance": "mtvrp10-CVRP-uniform-s1-0000"} for r in old]
    (t2,) = variant_tables(old, references=["ortools"])
    assert t2.variants == ("CVRP",) and t2.models == ("pyvrp", "neural@m")
    assert t2.gaps["pyvrp"]["CVRP"] == pytest.approx(100 * (10 / 11 - 1))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny mtvrp checkpoints (trained on CVRP and VRPTW): a run and an exported copy."""
    from nco.checkpoints import export_model, resolve_checkpoint
    from tests.conftest import train_tiny_mtvrp

    base = tmp_path_factory.mktemp("models")
    run = train_tiny_mtvrp(base / "tiny-pomo", "pomo", size=6)
    return run, export_model(resolve_checkpoint(run), base / "other.pt")


def test_mtvrp_benchmark_several_checkpoints_table_and_resume(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyvrp")
    pytest.importorskip("ortools")
    first, second = tiny_models
    out = tmp_path / "mt"
    argv = [
        "--problem", "mtvrp", "--size", "6", "--num", "2", "--variants", "OVRP,VRPB,VRPMB,MDVRP",
        "--solvers", "pyvrp,ortools,neural", "--time-limits", "0.3", "--out", str(out), "--no-plot",
    ]  # fmt: skip
    assert bench_cmd.main([*argv, "--model", f"{first},{second}"]) == 0
    text = capsys.readouterr().out
    rows = read_results(out / "results.csv")
    labels = ["pyvrp", "ortools", "neural@tiny-pomo", "neural@other"]
    assert sorted({r["solver"] for r in rows}) == sorted(labels)
    assert len(rows) == 4 * 2 * 4 and all(r["feasible"] == "True" for r in rows), [
        (r["solver"], r["error"], r["violations"]) for r in rows if r["feasible"] != "True"
    ]
    assert {r["variant"] for r in rows} == {"OVRP", "VRPB", "VRPMB", "MDVRP"}
    assert {r["problem"] for r in rows} == {"mtvrp"}
    assert {r["model"] for r in rows if r["solver"] == "neural@other"} == {str(second)}
    table = (out / "table.txt").read_text()
    assert table.strip() in text
    result = [ln for ln in table.splitlines() if ln.startswith("RESULT")]
    assert [ln.split()[1] for ln in result] == ["model=neural@tiny-pomo", "model=neural@other"]
    assert all("zeroshot_gap=" in ln and "extended_gap=" in ln for ln in result)
    # gaps agree with results.csv: model cost / best reference cost per instance
    best: dict[str, float] = {}
    for r in rows:
        if r["solver"] in ("pyvrp", "ortools"):
            best[r["instance"]] = min(best.get(r["instance"], math.inf), float(r["cost"]))
    gaps = [
        100 * (float(r["cost"]) / best[r["instance"]] - 1)
        for r in rows
        if r["variant"] == "VRPB" and r["solver"] == "neural@tiny-pomo"
    ]
    line = next(ln for ln in table.splitlines() if ln.startswith("VRPB "))
    assert float(line.split()[4]) == pytest.approx(sum(gaps) / len(gaps), abs=0.006)
    # a rerun solves nothing again; one more checkpoint runs only its own rows
    assert bench_cmd.main([*argv, "--model", f"{first},{second}"]) == 0
    err = capsys.readouterr().err
    assert "resuming: 32 of 32 runs already" in err
    assert len(read_results(out / "results.csv")) == 32
    assert bench_cmd.main([*argv, "--solvers", "pyvrp,neural@cvrp50,neural@mtvrp50"]) == 0
    captured = capsys.readouterr()
    assert "resuming: 8 of 16 runs already" in captured.err
    assert "solver 'neural@cvrp50' does not support 'mtvrp'" in captured.err
    assert len(read_results(out / "results.csv")) == 40


def test_mtvrp_checkpoint_on_the_cvrp_and_vrptw_variant_files(tmp_path: Path) -> None:
    # a size no other test decodes (a calibration cached per size would hide the failure)
    files = generate_instances("mtvrp", 9, 1, 2, tmp_path / "i", variants=("CVRP", "VRPTW"))
    assert [E.load(f).problem for f in files] == ["cvrp", "cvrptw"]  # plain files stay plain
    rows = run_benchmark(
        files, ["neural@mtvrp50"], [0.5], tmp_path / "run", reference="none", progress=print
    )
    assert [r["variant"] for r in rows] == ["CVRP", "VRPTW"]
    assert all(r["feasible"] == "True" for r in rows)


def test_load_options_reach_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--edge-weight SOLOMON (one-decimal truncation) and --scale 1000 with EUC_2D are the
    conventions every file, its .sol reference and its costs are read with."""
    pytest.importorskip("pyvrp")
    folder = tmp_path / "set"
    folder.mkdir()
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 10, (7, 2)).round(3)
    coords = "\n".join(f"{i + 1} {x} {y}" for i, (x, y) in enumerate(xy))
    demand = "\n".join(f"{i + 1} {0 if i == 0 else 1}" for i in range(7))
    (folder / "t1.vrp").write_text(
        f"NAME : t1\nTYPE : CVRP\nDIMENSION : 7\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 3\n"
        f"NODE_COORD_SECTION\n{coords}\nDEMAND_SECTION\n{demand}\nDEPOT_SECTION\n1\n-1\nEOF\n"
    )
    (folder / "t1.sol").write_text("Route #1: 1 2 3\nRoute #2: 4 5 6\nCost 0\n")
    for flags, load in (
        (["--edge-weight", "SOLOMON"], {"edge_weight": "SOLOMON"}),
        (
            ["--edge-weight", "EUC_2D", "--scale", "1000"],
            {"edge_weight": "EUC_2D", "scale": 1000.0},
        ),
    ):
        out = tmp_path / f"run{len(flags)}"
        argv = [str(folder), *flags, "--solvers", "pyvrp", "--time-limits", "0.2"]
        assert bench_cmd.main([*argv, "--out", str(out), "--no-plot"]) == 0
        (row,) = read_results(out / "results.csv")
        inst = E.load(folder / "t1.vrp", **load)
        sol_routes = E.read_solution(out / row["solution_file"], inst)
        assert float(row["cost"]) == pytest.approx(inst.route_cost(sol_routes), rel=1e-9)
        ref = inst.route_cost([[1, 2, 3], [4, 5, 6]])
        assert float(row["reference"]) == pytest.approx(ref, rel=1e-9)
    plain = E.load(folder / "t1.vrp")
    assert float(row["cost"]) > 100 * plain.route_cost(sol_routes)  # x1000 units
    capsys.readouterr()
    bad = [
        ["--problem", "cvrp", "--edge-weight", "SOLOMON", "--out", str(tmp_path / "x")],
        [str(folder), "--variants", "core", "--out", str(tmp_path / "x")],
        ["--problem", "cvrp", "--variants", "core", "--out", str(tmp_path / "x")],
        [str(folder), "--edge-weight", "NOPE", "--out", str(tmp_path / "x")],
    ]
    for argv in bad:
        assert bench_cmd.main(argv) == 2, argv
        assert capsys.readouterr().err.startswith("nco benchmark: error:")


# ---------------------------------------------------------------------------------- time-independent
def test_a_time_independent_solver_runs_once_and_stands_for_every_budget_it_fits(
    tmp_path: Path,
) -> None:
    from nco.benchmark import FREE_NOTE, time_independent
    from nco.solvers import HybridSolver, NeuralSolver

    assert time_independent(NeuralSolver("cvrp50"))
    assert not time_independent(NeuralSolver("cvrp50", refine=True))
    assert not time_independent(HybridSolver("cvrp50"))
    files = generate_instances("cvrp", 6, 2, 8, tmp_path / "instances")
    # a fleet limit: a plan over it is repaired within the time the solve is given
    inst = E.load(files[0])
    assert time_independent(NeuralSolver("cvrp50"), inst)
    fleet = dataclasses.replace(inst, num_vehicles=1)
    assert not time_independent(NeuralSolver("cvrp50"), fleet)
    log: list[str] = []
    # 1 ms binds (fewer transforms or the nearest-neighbour plan); 5 s does not
    rows = run_benchmark(
        files, ["neural@cvrp50"], [0.001, 5], tmp_path, reference="none", progress=log.append
    )
    assert sum("without a limit" in line for line in log) == 2
    assert sum(" 0.001s: " in line for line in log) == 2
    assert not any(" 5s: " in line for line in log)
    by = {(r["instance"], r["time_limit"]): r for r in rows}
    assert len(by) == 4
    for f in files:
        name = E.load(f).name
        free, bound = by[(name, "5")], by[(name, "0.001")]
        assert free["note"] == FREE_NOTE and float(free["runtime"]) <= 5
        assert bound["note"] != FREE_NOTE and ".free." not in bound["solution_file"]
        assert (tmp_path / free["solution_file"]).is_file() and ".free." in free["solution_file"]
    # both budget tables report the network
    assert {s["label"] for s in summarize(rows)} == {"0.001", "5"}
    # a budget added later reuses the run without a limit: nothing is solved again
    log.clear()
    more = run_benchmark(
        files, ["neural@cvrp50"], [0.001, 5, 10], tmp_path, reference="none", progress=log.append
    )
    assert not any(line.startswith("[") for line in log)
    by10 = {r["instance"]: r for r in more if r["time_limit"] == "10"}
    assert {n: r["cost"] for n, r in by10.items()} == {
        n: r["cost"] for (n, t), r in by.items() if t == "5"
    }


def test_resume_reruns_rows_of_a_checkpoint_retrained_under_the_same_path(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """Rows keep the checkpoint's digest: a file replaced under the same name is re-run on
    resume, rows of other solvers and of unchanged checkpoints are kept."""
    import shutil

    import torch

    pytest.importorskip("pyvrp")
    model = tmp_path / "net.pt"
    shutil.copy(tiny_models[1], model)
    files = generate_instances("mtvrp", 6, 2, 5, tmp_path / "i", variants=("CVRP",))
    run = tmp_path / "run"

    def bench() -> list[str]:
        log: list[str] = []
        run_benchmark(
            files, ["pyvrp", f"neural@{model}"], [0.3], run, reference="none", progress=log.append
        )
        return log

    bench()
    rows = read_results(run / "results.csv")
    neural = [r for r in rows if r["model"]]
    assert len(neural) == 2 and {r["model"] for r in neural} == {str(model.resolve())}
    first_digest = neural[0]["model_digest"]
    assert len(first_digest) == 16 and {r["model_digest"] for r in neural} == {first_digest}
    assert not any(r["model_digest"] for r in rows if not r["model"])

    log = bench()  # unchanged: nothing re-run
    assert any("resuming: 4 of 4" in line for line in log)
    assert not any(line.startswith("re-running") for line in log)

    payload = torch.load(model, weights_only=False)  # "retrain": other weights, same path
    name, weight = next(iter(payload["state_dict"].items()))
    payload["state_dict"][name] = weight + 0.5
    torch.save(payload, model)
    log = bench()
    assert any(line.startswith("re-running 2 row(s)") and str(model.resolve()) in line for line in log)
    assert any("resuming: 2 of 4" in line for line in log)
    rows = read_results(run / "results.csv")
    assert len(rows) == 4
    new = {r["model_digest"] for r in rows if r["model"]}
    assert len(new) == 1 and new != {first_digest}
