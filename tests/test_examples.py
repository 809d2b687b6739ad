"""The scripts in examples/ run as a user would run them (``--quick``, one thread)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Script -> what its output must contain (and the files it must write under --out).
EXPECTED = {
    "solve_your_data.py": (["my-cvrp20", "neural on E-n22-k4.vrp", "feasible"], ["my-cvrp20.vrp", "my-cvrp20.sol"]),
    "train_tiny_model.py": (["training finished", "exported", "gap"], ["tiny-cvrp10.pt", "run/metrics.csv"]),
    "benchmark_two_solvers.py": (["ratio", "all feasible: True"], ["costs.png", "routes.png"]),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    texts, files = EXPECTED[script]
    for text in texts:
        assert text in proc.stdout, proc.stdout
    for name in files:
        assert (out / name).is_file(), name
    assert "INFEASIBLE" not in proc.stdout
