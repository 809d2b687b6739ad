"""Routing problems: instances, generators, batched TorchRL environments, costs, checkers, files."""

from nco.envs.common import Problem, standard_capacity
from nco.envs.instance import Instance, InstanceError, Solution, Violation
from nco.envs.io import (
    load,
    load_dataset,
    load_solution,
    read_solution,
    read_solution_depots,
    save_dataset,
    write_instance,
    write_solution,
)
from nco.envs.registry import available, get_problem, make

__all__ = [
    "Instance",
    "InstanceError",
    "Problem",
    "Solution",
    "Violation",
    "available",
    "get_problem",
    "load",
    "load_dataset",
    "load_solution",
    "make",
    "read_solution",
    "read_solution_depots",
    "save_dataset",
    "standard_capacity",
    "write_instance",
    "write_solution",
]
