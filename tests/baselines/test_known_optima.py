"""Known optima from the shared benchmark pack (../shared/data), reached in a few seconds.

The pack is read only through the ``shared_data`` fixture, which skips when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import nco.envs as E
from nco.baselines import get_solver

# `shared_data` comes from tests/conftest.py: ../shared/data beside the checkout (or
# $NCO_SHARED_DATA), skipping with a reason when the pack is absent.

CASES = [
    # solver, file, optimum, time limit (s), relative tolerance
    ("hgs", "tsplib/eil51.tsp", 426, 2.0, 0.01),
    ("pyvrp", "tsplib/berlin52.tsp", 7542, 2.0, 0.01),
    ("ortools", "cvrplib-small/E-n22-k4.vrp", 375, 1.0, 0.01),
    ("hgs", "cvrplib-small/P-n16-k8.vrp", 450, 1.0, 0.01),
    ("pyvrp", "cvrplib-small/E-n22-k4.vrp", 375, 1.0, 0.01),
    ("hgs", "cvrplib-small/E-n13-k4.vrp", 247, 1.0, 0.01),  # EXPLICIT matrix
    ("ortools", "solomon/C101.txt", 827.3, 2.0, 0.03),
    ("pyvrp", "solomon/C101.txt", 827.3, 2.0, 0.03),
    ("hgs", "cvrplib-x/X-n101-k25.vrp", 27591, 3.0, 0.02),
]


@pytest.mark.parametrize(
    ("solver", "file", "optimum", "time_limit", "rtol"),
    CASES,
    ids=[f"{c[0]}-{Path(c[1]).stem}" for c in CASES],
)
def test_reaches_known_optimum(
    shared_data: Path, solver: str, file: str, optimum: float, time_limit: float, rtol: float
) -> None:
    inst = E.load(shared_data / file)
    sol = get_solver(solver).solve(inst, time_limit=time_limit, seed=1)
    assert sol.feasible, sol.violations
    assert optimum - 1e-6 <= sol.cost <= optimum * (1 + rtol)


def test_hgs_objective_is_our_cost(shared_data: Path) -> None:
    # HGS-CVRP works in doubles on the matrix we pass: its reported cost is our cost exactly.
    inst = E.load(shared_data / "cvrplib-small/A-n32-k5.vrp")
    sol = get_solver("hgs").solve(inst, time_limit=0.5)
    assert sol.metadata["hgs_cost"] == pytest.approx(sol.cost, abs=1e-9)


def test_ortools_integer_objective_is_exact_on_euc2d(shared_data: Path) -> None:
    inst = E.load(shared_data / "cvrplib-small/P-n16-k8.vrp")
    sol = get_solver("ortools").solve(inst, time_limit=0.5)
    assert sol.metadata["exact_integers"] and sol.metadata["scale"] == 1.0
    assert sol.metadata["objective_int"] == pytest.approx(sol.cost, abs=1e-9)
