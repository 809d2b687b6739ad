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
    # a rerun solves nothing again and reuses every model row
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "0 runs to do" in text and "0 variants decoded" in text and "5 reused" in text
    assert len(_table_rows(out / "results.csv")) == 20
    assert len(_table_rows(out / "models.csv")) == 10
    assert (out / "table.txt").read_text() == table


def test_benchmark_model_rows_follow_the_checkpoint_bytes(tiny_model, tmp_path, capsys):
    """Model rows are keyed by the checkpoint file's digest: the same bytes under another name
    are reused, changed bytes are decoded afresh; a shipped-style ``.pt`` is named by its stem."""
    from nco.checkpoints import export_model, resolve_checkpoint

    ckpt_dir = tmp_path / "data" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    first = export_model(resolve_checkpoint(tiny_model), ckpt_dir / "first.pt")
    same = ckpt_dir / "same.pt"
    same.write_bytes(first.read_bytes())
    out = tmp_path / "mt"
    argv = [
        "benchmark", "--problem", "mtvrp", "--size", "6", "--num", "2",
        "--variants", "CVRP,OVRP", "--solvers", "pyvrp,neural",
        "--time-limits", "0.2", "--out", str(out),
    ]  # fmt: skip
    assert cli_main([*argv, "--model", str(first)]) == 0
    assert "model " + str(first) + ": 2 variants decoded" in capsys.readouterr().out
    assert cli_main([*argv, "--model", f"{first},{same}"]) == 0
    text = capsys.readouterr().out
    assert "RESULT model=first " in text and "RESULT model=same " in text
    assert text.count("0 variants decoded") == 2 and text.count("2 reused") == 2
    blob = torch.load(same, weights_only=True)
    blob["info"] = {**blob["info"], "note": "re-exported"}
    torch.save(blob, same)
    assert cli_main([*argv, "--model", str(same)]) == 0
    assert "2 variants decoded" in capsys.readouterr().out
    rows = _table_rows(out / "models.csv")
    assert len(rows) == 2 * 2 * 2 and len({r["checkpoint_sha256"] for r in rows}) == 2
    # a models.csv in an older layout is started afresh instead of being appended to
    (out / "models.csv").write_text("variant,size,num,seed,index,model,cost,feasible\n")
    assert cli_main([*argv, "--model", str(first)]) == 0
    assert "starting it afresh" in capsys.readouterr().out
    assert len(_table_rows(out / "models.csv")) == 2 * 2
    # a line cut short by a killed run is run again, and the rows appended after it stay whole
    for name in ("results.csv", "models.csv"):
        text = (out / name).read_text()
        (out / name).write_text(text[: text.rstrip("\n").rindex("\n") + 12])
    assert cli_main([*argv, "--model", str(first)]) == 0
    text = capsys.readouterr().out
    assert "1 runs to do" in text and "1 variants decoded" in text and "1 reused" in text
    assert len(_table_rows(out / "results.csv")) == 2 * 2 + 1
    assert all(r["feasible"] in ("0", "1") for r in _table_rows(out / "models.csv")[-2:])


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
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "results.csv").write_text("a,b\n1,2\n")
    assert cli_main([*base, "--solvers", "pyvrp", "--variants", "CVRP"]) == 2
    assert "results.csv: columns are not variant," in capsys.readouterr().err
    assert (tmp_path / "e" / "results.csv").read_text() == "a,b\n1,2\n"
