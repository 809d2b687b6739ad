"""``nco benchmark --problem mtvrp``: test sets, classical references (resumable), model
columns and the per-variant table with trained / zero-shot / extended averages."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from nco.cli import main as cli_main
from nco.envs import mtvrp
from nco.mtvrp_benchmark import make_test_set, parse_variants
from tests.conftest import train_tiny_mtvrp

pytest.importorskip("pyvrp")
pytest.importorskip("ortools")



@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return train_tiny_mtvrp(tmp_path_factory.mktemp("m") / "tiny-pomo", "pomo", size=6)


def test_test_sets_are_the_same_instances_in_every_variant():
    sets = make_test_set(("CVRP", "VRPTW", "OVRPB", "MDVRP"), 7, 5, seed=3)
    assert {v: mtvrp.variant_names(td)[0] for v, td in sets.items()} == {v: v for v in sets}
    k = sets["CVRP"]["num_depots"][0]
    torch.testing.assert_close(sets["CVRP"]["locs"][:, k:], sets["VRPTW"]["locs"][:, k:])
    assert torch.equal(
        make_test_set(("CVRP",), 7, 5, 3)["CVRP"]["locs"][:, 0], sets["CVRP"]["locs"][:, 0]
    )
    assert len(parse_variants("core")) == 16 and len(parse_variants("all")) == 48
    with pytest.raises(ValueError, match="VRPX"):
        parse_variants("CVRP,VRPX")


def _table_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_benchmark_command_table_and_resume(tiny_model, tmp_path, capsys):
    out = tmp_path / "mt"
    argv = [
        "benchmark", "--problem", "mtvrp", "--size", "6", "--num", "2",
        "--variants", "CVRP,VRPTW,OVRP,VRPMB,MDVRP", "--solvers", "pyvrp,ortools,neural",
        "--model", str(tiny_model), "--time-limits", "0.5", "--out", str(out),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    rows = _table_rows(out / "results.csv")
    assert len(rows) == 5 * 2 * 2 and all(r["feasible"] == "1" for r in rows)
    models = _table_rows(out / "models.csv")
    assert len(models) == 5 * 2 and {r["model"] for r in models} == {"tiny-pomo"}
    table = (out / "table.txt").read_text()
    assert table.strip() in text
    assert "CVRP*" in table and "VRPTW*" in table and "OVRP " in table
    result = [ln for ln in table.splitlines() if ln.startswith("RESULT")]
    assert len(result) == 1 and "trained_gap=" in result[0] and "extended_gap=" in result[0]
    # gaps agree with the CSVs: model cost / best classical cost per instance
    best = {}
    for r in rows:
        key = (r["variant"], r["index"])
        best[key] = min(best.get(key, float("inf")), float(r["cost"]))
    gap_cvrp = (
        sum(
            100 * (float(m["cost"]) / best[(m["variant"], m["index"])] - 1)
            for m in models
            if m["variant"] == "CVRP"
        )
        / 2
    )
    line = next(ln for ln in table.splitlines() if ln.startswith("CVRP*"))
    assert float(line.split()[4]) == pytest.approx(gap_cvrp, abs=0.006)
    # a rerun solves nothing again
    assert cli_main(argv) == 0
    assert "0 runs to do" in capsys.readouterr().out
    assert len(_table_rows(out / "results.csv")) == 20


def test_benchmark_command_mtvrp_errors(tiny_model, tmp_path, capsys):
    base = [
        "benchmark",
        "--problem",
        "mtvrp",
        "--size",
        "6",
        "--num",
        "1",
        "--out",
        str(tmp_path / "e"),
    ]
    assert cli_main([*base, "--solvers", "hgs"]) == 2
    assert "hgs" in capsys.readouterr().err
    assert cli_main([*base, "--solvers", "pyvrp,neural"]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main([*base, "--solvers", "pyvrp", "--time-limits", "1,2"]) == 2
    assert "one limit" in capsys.readouterr().err
    assert cli_main([*base, "--solvers", "pyvrp", "--variants", "VRPQ"]) == 2
    assert "VRPQ" in capsys.readouterr().err
