"""Tiny policies and instances shared by the policy tests."""

from __future__ import annotations

import torch

from nco.envs import get_problem
from nco.policies import AttentionPolicy, build_policy

TINY = {"d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64}


def tiny(preset: str, problem: str, **kw) -> AttentionPolicy:
    """A small seeded policy of ``preset`` for ``problem``."""
    torch.manual_seed(0)
    return build_policy(preset, problem, **{**TINY, **kw})


def instances(problem: str, n: int = 10, b: int = 3, seed: int = 1):
    """(problem, env, b generated instances of n customers/cities)."""
    p = get_problem(problem)
    return p, p.make_env(num_loc=n), p.generator(num_loc=n)(b, seed=seed)


def expand_rows(td, m: int):
    """Each instance of ``td`` repeated m times consecutively."""
    return td[torch.arange(td.batch_size[0]).repeat_interleave(m)]
