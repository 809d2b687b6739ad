"""The ``nco`` package namespace: every public name once, and nothing else of its own."""

from __future__ import annotations

import nco

PUBLIC = {
    "DEFAULT_SOLVER",
    "SECONDS_PER_100_NODES",
    "HybridSolver",
    "Instance",
    "InstanceError",
    "ModelCard",
    "NeuralSolver",
    "Solution",
    "Violation",
    "__version__",
    "available",
    "get_problem",
    "load",
    "load_model",
    "make",
    "models",
    "read_solution",
    "solve",
    "solve_batch",
}


def test_public_names_resolve_and_dir_is_clean():
    assert set(nco.__all__) == PUBLIC
    for name in sorted(PUBLIC):
        assert getattr(nco, name) is not None, name
    names = dir(nco)  # after resolution: each name is now also a module global
    assert len(names) == len(set(names))
    assert PUBLIC <= set(names)
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)
    own = {n for n in names if not n.startswith("__")}
    subpackages = {n for n in own if getattr(getattr(nco, n), "__name__", None) == f"nco.{n}"}
    assert own - subpackages == PUBLIC - {"__version__"}
    assert nco.solve.__module__ == "nco.api" and nco.Instance.__module__ == "nco.envs.instance"


def test_one_default_solver_and_time_limit_for_every_entry_point():
    import argparse
    import inspect

    import nco.api
    from nco.commands import solve as solve_cmd

    assert nco.DEFAULT_SOLVER == "hybrid" and nco.SECONDS_PER_100_NODES == 1.0
    assert inspect.signature(nco.solve).parameters["solver"].default == nco.DEFAULT_SOLVER
    assert inspect.signature(nco.solve_batch).parameters["solver"].default == nco.DEFAULT_SOLVER
    assert nco.api.DEFAULT_SOLVER is nco.DEFAULT_SOLVER
    parser = argparse.ArgumentParser()
    solve_cmd.configure(parser)
    args = parser.parse_args(["x.vrp"])
    assert args.solver == nco.DEFAULT_SOLVER and args.time_limit is None
    helps = {a.dest: a.help for a in parser._actions}
    assert "default hybrid" in helps["solver"] and "1 s per 100 nodes" in helps["time_limit"]
