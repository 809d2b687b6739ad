"""Neural construction policies: attention encoders, pointer decoder, decoding strategies.

>>> from nco.envs import get_problem
>>> from nco.policies import build_policy
>>> policy = build_policy("pomo", "cvrp")
>>> env = get_problem("cvrp").make_env(num_loc=50)
>>> out = policy(td, env, "multistart_greedy", augment=8)   # doctest: +SKIP
>>> out.best_reward                                          # doctest: +SKIP
"""

from nco.policies.decoder import DecoderCache, PointerDecoder
from nco.policies.decoding import (
    STRATEGIES,
    DecodeConfig,
    MoESummary,
    PolicyParts,
    Rollout,
    augment_instances,
    beam_search,
    decode,
    dihedral_locs,
    evaluate,
    greedy,
    multistart_greedy,
    multistart_sampling,
    resolve_config,
    sampling,
)
from nco.policies.encoder import Encoder
from nco.policies.moe import MoE, MoEConfig, MoEStats
from nco.policies.policy import AttentionPolicy, build_policy, problem_dims
from nco.policies.presets import PRESETS, PolicyConfig, get_preset

__all__ = [
    "PRESETS",
    "STRATEGIES",
    "AttentionPolicy",
    "DecodeConfig",
    "DecoderCache",
    "Encoder",
    "MoE",
    "MoEConfig",
    "MoEStats",
    "MoESummary",
    "PointerDecoder",
    "PolicyConfig",
    "PolicyParts",
    "Rollout",
    "augment_instances",
    "beam_search",
    "build_policy",
    "decode",
    "dihedral_locs",
    "evaluate",
    "get_preset",
    "greedy",
    "multistart_greedy",
    "multistart_sampling",
    "problem_dims",
    "resolve_config",
    "sampling",
]
