"""The one reader of best-known costs (CSV table, bks.csv beside the file, .sol next to it) and
the printed gap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import nco.envs as E
from nco.references import (
    ReferenceFileError,
    best_known,
    format_gap,
    read_reference_csv,
    reference_beside,
    reference_from_sol,
)


def test_csv_by_instance_name_with_bks_or_cost_column(tmp_path: Path) -> None:
    bks = tmp_path / "bks.csv"
    bks.write_text("instance,bks\nA, 10.5\nB,n/a\n C ,7\n")
    assert read_reference_csv(bks) == {"A": 10.5, "C": 7.0}  # a value that is no number is left out
    cost = tmp_path / "cost.csv"
    cost.write_text("instance,cost,other\nA,3\n")
    assert read_reference_csv(cost) == {"A": 3.0}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,value\nA,1\n")
    with pytest.raises(
        ReferenceFileError, match=r"bad.csv: expected CSV columns 'instance'.*\['name', 'value'\]"
    ):
        read_reference_csv(bad)
    with pytest.raises(ReferenceFileError, match="nope.csv: no such reference file"):
        read_reference_csv(tmp_path / "nope.csv")


def test_shipped_instances_find_their_best_known_costs(instances_dir: Path) -> None:
    # the bks.csv beside the shipped files, by NAME or file stem
    assert reference_beside(instances_dir / "X-n101-k25.vrp", "X-n101-k25") == 27591
    assert reference_beside(instances_dir / "C101.txt") == pytest.approx(827.3)
    # the .sol / .opt.tour next to the file, costed by the checker
    inst = E.load(instances_dir / "eil51.tsp")
    assert reference_from_sol(instances_dir / "eil51.tsp", inst) == 426
    assert reference_from_sol(instances_dir / "E-n13-k4.vrp") == 247


def test_best_known_tries_the_table_then_the_bks_csv_then_the_sol(
    instances_dir: Path, tmp_path: Path
) -> None:
    x = instances_dir / "X-n101-k25.vrp"
    inst = E.load(x)
    assert best_known(x, inst, table={"X-n101-k25": 1.0}) == 1.0
    assert best_known(x, inst, table={"other": 1.0}) is None  # a table given is the only source
    assert best_known(x, inst) == 27591
    # without a bks.csv: the .sol next to the file
    shutil.copy(x, tmp_path / x.name)
    assert best_known(tmp_path / x.name, inst) is None
    shutil.copy(instances_dir / "X-n101-k25.sol", tmp_path / "X-n101-k25.sol")
    assert best_known(tmp_path / x.name, inst) == 27591
    # a bks.csv without the expected columns lying there is no reference, not an error
    (tmp_path / "bks.csv").write_text("a,b\n1,2\n")
    assert reference_beside(tmp_path / x.name, inst.name) is None
    assert best_known(tmp_path / x.name, inst) == 27591


def test_a_gap_that_rounds_to_zero_has_no_minus_sign() -> None:
    assert format_gap(27659, 27591) == "+0.25%"
    assert format_gap(999.99999, 1000) == "+0.00%"
    assert format_gap(990, 1000) == "-1.00%"
    assert format_gap(1000, 1000, 3) == "+0.000%"
