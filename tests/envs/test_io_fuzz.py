"""Fuzzing the instance readers: a mutated shipped file either loads into an instance every
solver accepts or raises InstanceError naming the file, never another exception.

The mutations (fixed seed, so a failure reproduces) change one number to a hostile value,
delete, duplicate or swap lines, or cut the file short.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

import nco.envs as E
from nco.envs import Instance, InstanceError, Solution
from nco.envs.instance import validate_instance

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    p for p in (ROOT / "data" / "instances").iterdir() if p.suffix in (".vrp", ".tsp", ".txt")
)
MUTATIONS = 400
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
HOSTILE = ("-1", "0", "-0.5", "2.5", "1e12", "1e400", "-100", "99999", "nan", "inf", "-inf", "x", "")


def _mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One random change of ``text`` and a description of it."""
    lines = text.splitlines(keepends=True)
    op = rng.randrange(7)
    if op <= 2:  # numbers are where most bad values come from: weight them up
        m = rng.choice(list(NUMBER.finditer(text)))
        new = rng.choice((*HOSTILE, f"-{m.group()}", m.group() * 2))
        return text[: m.start()] + new + text[m.end() :], f"number {m.group()!r} -> {new!r}"
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    if op == 3:
        return "".join(lines[:i] + lines[i + 1 :]), f"line {i + 1} deleted"
    if op == 4:
        return "".join(lines[: i + 1] + lines[i:]), f"line {i + 1} duplicated"
    if op == 5:
        k = rng.randrange(len(text))
        return text[:k], f"cut at character {k}"
    lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines), f"lines {i + 1} and {j + 1} swapped"


def _check_usable(inst: Instance) -> None:
    """What the solvers need of a loaded instance, beyond its own validation."""
    validate_instance(inst)
    td = inst.to_tensordict()
    for key, value in td.items():
        assert bool(value.isfinite().all()), f"tensor {key!r} is not finite"
    # One route per customer serves every demand; only a vehicle limit may be broken by it.
    n = inst.num_nodes
    routes = [[i] for i in range(1, n)] if inst.has_depot else [list(range(n))]
    sol = Solution.from_routes(inst, routes)
    assert {v.kind for v in sol.violations} <= {"vehicles"}, sol.violations[:3]
    try:
        import pyvrp
    except ImportError:
        return
    from nco.baselines.protocol import fleet_bound
    from nco.baselines.pyvrp_solver import _build

    # PyVRP validates its ProblemData on construction (e.g. "tw_early must be >= 0").
    _build(pyvrp, inst, fleet_bound(inst))


def test_mutated_instance_files_load_or_raise_instance_error(tmp_path):
    rng = random.Random(20240521)
    outcomes = {"loaded": 0, "refused": 0}
    failures = []
    for k in range(MUTATIONS):
        source = rng.choice(SHIPPED)
        text, change = _mutate(source.read_text(), rng)
        path = tmp_path / f"m{k:03d}{source.suffix}"
        path.write_text(text)
        try:
            inst = E.load(path)
        except InstanceError as err:
            if not str(err).startswith(f"{path}: {err.field}: "):
                failures.append(f"{source.name}, {change}: error does not name file and field: {err}")
            outcomes["refused"] += 1
            continue
        except Exception as err:  # anything else is the bug this test looks for
            failures.append(f"{source.name}, {change}: {type(err).__name__}: {err}")
            continue
        try:
            _check_usable(inst)
        except Exception as err:
            failures.append(f"{source.name}, {change}: loaded but unusable: {type(err).__name__}: {err}")
        outcomes["loaded"] += 1
    assert not failures, "\n".join(failures[:10])
    # Both branches must be exercised for the test to mean anything.
    assert outcomes["loaded"] >= MUTATIONS // 10 and outcomes["refused"] >= MUTATIONS // 2, outcomes


@pytest.mark.parametrize("source", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_are_usable(source):
    _check_usable(E.load(source))
