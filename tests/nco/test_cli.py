"""The `nco` command line: evaluate, generate, solve's defaults and workers, and bad input
handling."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nco.envs as E
from nco.cli import main

NCO = [sys.executable, "-m", "nco.cli"]


def test_evaluate_reproduces_best_known_values(instances_dir, capsys):
    for inst, sol, expected in [
        ("X-n101-k25.vrp", "X-n101-k25.sol", "27591"),
        ("C101.txt", "C101.sol", "827.3"),
        ("R101.txt", "R101.sol", "1637.7"),
        ("kroA100.tsp", "kroA100.opt.tour", "21282"),
        ("eil51.tsp", "eil51.opt.tour", "426"),
        ("E-n13-k4.vrp", "E-n13-k4.sol", "247"),
    ]:
        assert main(["evaluate", str(instances_dir / inst), str(instances_dir / sol)]) == 0
        out = capsys.readouterr().out
        assert f"cost      {expected}\n" in out and "feasible" in out and "+0.000%" in out


def test_evaluate_lists_violations_and_exits_1(instances_dir, tmp_path, capsys):
    inst = E.load(instances_dir / "X-n101-k25.vrp")
    routes = E.read_solution(instances_dir / "X-n101-k25.sol", inst)
    merged = [routes[0] + routes[1], *routes[3:]]  # over capacity, and route 3's customers missing
    bad = tmp_path / "bad.sol"
    bad.write_text(
        "".join(f"Route #{k}: {' '.join(map(str, r))}\n" for k, r in enumerate(merged, 1))
        + "Cost 0\n"
    )
    assert main(["evaluate", str(instances_dir / "X-n101-k25.vrp"), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "exceeds capacity" in out and "never visited" in out


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.vrp"
    bad.write_text(
        "NAME : x\nTYPE : CVRP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\nCAPACITY : 10\nNODE_COORD_SECTION\n1 0 0\n2 1 1\nDEMAND_SECTION\n1 0\n2 1\n3 1\nEOF\n"
    )
    proc = subprocess.run([*NCO, "evaluate", str(bad), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert (
        str(bad) in lines[0] and "NODE_COORD_SECTION" in lines[0] and "expected 3 rows" in lines[0]
    )
    proc = subprocess.run(
        [*NCO, "evaluate", str(tmp_path / "nope.vrp"), "x.sol"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "no such instance file" in proc.stderr


@pytest.mark.parametrize("problem", ["tsp", "cvrp", "cvrptw"])
def test_generate_writes_readable_files_and_dataset(tmp_path, problem, capsys):
    out = tmp_path / "set"
    assert (
        main(
            [
                "generate",
                "--problem",
                problem,
                "--size",
                "12",
                "--num",
                "3",
                "--seed",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    files = sorted(p for p in out.iterdir() if p.suffix in (".vrp", ".tsp"))
    assert len(files) == 3
    name, td = E.load_dataset(next(out.glob("*.pt")))
    assert name == problem and td.batch_size == (3,)
    p = E.get_problem(problem)
    again = p.generator(num_loc=12)(3, seed=4)
    for i, f in enumerate(files):
        inst = E.load(f)
        assert inst.problem == problem and inst.edge_weight == "EXACT"
        # A solution of the file instance costs the same as in tensor units (exact distances).
        seq = list(range(1, 13)) if p.has_depot else list(range(12))
        if p.has_depot:
            seq = [v for c in seq for v in (c, 0)]  # one customer per route is always feasible
        sol = E.Solution.from_routes(inst, p.tours_to_routes(seq))
        import torch

        assert sol.feasible
        assert sol.cost == pytest.approx(
            p.cost(again[i : i + 1], torch.tensor([seq])).item(), rel=1e-5
        )


def test_generate_failure_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    import nco.envs as envs

    calls = {"n": 0}
    real = envs.write_instance

    def flaky(inst, path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(inst, path)

    monkeypatch.setattr(envs, "write_instance", flaky)
    out = tmp_path / "set"
    assert (
        main(["generate", "--problem", "cvrp", "--size", "5", "--num", "4", "--out", str(out)]) == 2
    )
    assert "disk full" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_generate_bad_arguments_exit_2(tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                "--problem",
                "cvrp",
                "--size",
                "0",
                "--num",
                "2",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_console_script_is_installed():
    exe = shutil.which("nco", path=str(Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "nco" in proc.stdout


def test_evaluate_notes_a_wrong_stated_cost_and_gives_no_gap_for_infeasible_plans(
    instances_dir, tmp_path, capsys
):
    sol_text = (instances_dir / "C101.sol").read_text()
    wrong = tmp_path / "wrong.sol"
    wrong.write_text(sol_text.replace("Cost 827.3", "Cost 800"))
    assert main(["evaluate", str(instances_dir / "C101.txt"), str(wrong)]) == 0
    out = capsys.readouterr().out
    assert "stated cost 800 differs from recomputed 827.3" in out and "+0.000%" in out
    # A cost stated to the digits it is written with is not a difference.
    assert main(["evaluate", str(instances_dir / "C101.txt"), str(instances_dir / "C101.sol")]) == 0
    assert "stated cost" not in capsys.readouterr().out
    short = tmp_path / "short.sol"
    short.write_text("".join(sol_text.splitlines(keepends=True)[:3]) + "Cost 827.3\n")
    assert main(["evaluate", str(instances_dir / "C101.txt"), str(short)]) == 1
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "gap" not in out
    assert "stated cost 827.3 differs from recomputed" in out


def test_help_lists_every_command_without_building_their_parsers():
    from nco.cli import _COMMAND_MODULES, build_parser

    # The help lines nco --help shows come from a table; they must be the modules' own.
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert {name: helps[name] for name in _COMMAND_MODULES} == {
        name: help_text for name, (_, help_text) in _COMMAND_MODULES.items()
    }
    # nco --help and nco solve --help load neither torch nor lightning (start-up time:
    # benchmarks/cli_startup.py).
    code = (
        "import sys\nfrom nco.cli import main\n"
        "for argv in (['--help'], ['solve', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'torchrl') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]"), proc.stdout[-300:]
    assert "plot-experts" in proc.stdout and "--workers" in proc.stdout


def test_the_command_run_gets_its_full_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--problem", "nosuch"])
    assert info.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_solve_model_errors_say_the_cause_once(instances_dir, capsys):
    x = str(instances_dir / "X-n101-k25.vrp")
    assert main(["solve", x, "--solver", "neural", "--model", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].count("shipped checkpoints:") == 1, err
    assert main(["solve", x, "--solver", "neural", "--model", "tsp50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--model tsp50 is not a cvrp checkpoint" in err and "does not support" not in err


def test_solve_defaults_to_the_hybrid_at_one_second_per_100_nodes(instances_dir, tmp_path, capsys):
    e13 = instances_dir / "E-n13-k4.vrp"
    assert main(["solve", str(e13), "--out", str(tmp_path), "--plot", str(tmp_path / "e.png")]) == 0
    out = capsys.readouterr().out
    # the optimum 247 (bks.csv beside the file): a zero gap prints +0.00%, never -0.00%
    assert "[1/1] E-n13-k4: cost 247 gap +0.00% (best known 247), feasible, " in out
    assert " s of 1 s -> " in out and "    hybrid: " in out
    assert (tmp_path / "E-n13-k4.hybrid.sol").is_file() and (tmp_path / "e.png").is_file()


def test_solve_with_workers_gives_the_plans_of_one_worker(tmp_path, capsys):
    from nco.benchmark import generate_instances

    files = generate_instances("cvrp", 7, 3, 2, tmp_path / "instances")
    costs = {}
    for workers in (1, 2):
        out_dir = tmp_path / f"w{workers}"
        argv = ["solve", *map(str, files), "--solver", "pyvrp", "--time-limit", "0.3"]
        assert main([*argv, "--workers", str(workers), "--out", str(out_dir)]) == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
        assert len(lines) == 3 and all(" s of 0.3 s -> " in ln for ln in lines)
        costs[workers] = {}
        for f in files:
            inst = E.load(f)
            sol = E.load_solution(out_dir / f"{inst.name}.pyvrp.sol", inst)
            assert sol.feasible
            costs[workers][inst.name] = sol.cost
    assert costs[1] == pytest.approx(costs[2])  # PyVRP proves these 7-customer optima
