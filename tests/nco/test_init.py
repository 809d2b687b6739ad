"""The ``nco`` package namespace: every public name once, and nothing else of its own."""

from __future__ import annotations

import nco

PUBLIC = {
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
    subpackages = {n for n in own if getattr(nco, n).__name__ == f"nco.{n}"}
    assert own - subpackages == PUBLIC - {"__version__"}
    assert nco.solve.__module__ == "nco.api" and nco.Instance.__module__ == "nco.envs.instance"
