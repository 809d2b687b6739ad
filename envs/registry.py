"""The problem registry: adding a problem means its file plus one line here."""

from __future__ import annotations

from typing import Any

from torchrl.envs import EnvBase

from nco.envs import cvrp, cvrptw, mtvrp, tsp
from nco.envs.common import Problem

_PROBLEMS: dict[str, Problem] = {
    p.name: p for p in (tsp.PROBLEM, cvrp.PROBLEM, cvrptw.PROBLEM, mtvrp.PROBLEM)
}


def available() -> list[str]:
    """Names of the registered problems."""
    return sorted(_PROBLEMS)


def get_problem(name: str) -> Problem:
    """The :class:`Problem` record registered under ``name``."""
    try:
        return _PROBLEMS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; available: {', '.join(available())}") from None


def make(name: str, **params: Any) -> EnvBase:
    """A new environment for problem ``name``; ``params`` configure its generator
    (e.g. ``num_loc=50, distribution="clustered"``) plus ``device``, ``batch_size``, ``seed``."""
    return get_problem(name).make_env(**params)
