"""The attention policy: encoder + pointer decoder + a decoding strategy, in one call.

``policy(td, env, "multistart_greedy", augment=8) -> Rollout``. AM, POMO, MVMoE, RouteFinder and
POMO-dist (ICAM distance bias + ReLD decoder) are :class:`~nco.policies.presets.PolicyConfig`
presets of this one module.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor, nn
from torchrl.envs import EnvBase

from nco.envs import Problem, get_problem
from nco.policies.decoder import PointerDecoder
from nco.policies.decoding import (
    DecodeConfig,
    PolicyParts,
    Rollout,
    decode,
    evaluate,
    resolve_config,
)
from nco.policies.encoder import Encoder
from nco.policies.presets import PolicyConfig, get_preset


def problem_dims(problem: Problem) -> tuple[int, int]:
    """(node feature count F, state feature count Fs) of ``problem``, read from a tiny instance."""
    td = problem.generator(num_loc=4)(1, seed=0)
    state = problem.make_env(num_loc=4).reset(td)
    return int(problem.node_features(td).shape[-1]), int(problem.state_features(state).shape[-1])


class AttentionPolicy(nn.Module):
    """Encoder-decoder construction policy for one problem.

    Parameters
    ----------
    config : architecture.
    problem : the :class:`~nco.envs.Problem` it solves (features, starts, cost).
    node_dim, state_dim : feature sizes; None reads them from a tiny generated instance.

    Attributes
    ----------
    encoder : :class:`~nco.policies.encoder.Encoder`.
    decoder : :class:`~nco.policies.decoder.PointerDecoder`.
    """

    def __init__(
        self,
        config: PolicyConfig,
        problem: Problem,
        *,
        node_dim: int | None = None,
        state_dim: int | None = None,
    ) -> None:
        super().__init__()
        if node_dim is None or state_dim is None:
            node_dim, state_dim = problem_dims(problem)
        self.config = config
        self.problem = problem
        self.encoder = Encoder(config, node_dim, depot_flag=problem.has_depot)
        self.decoder = PointerDecoder(config, state_dim, has_depot=problem.has_depot)

    @property
    def parts(self) -> PolicyParts:
        """(encoder, decoder, problem) for the functions of :mod:`nco.policies.decoding`."""
        return PolicyParts(self.encoder, self.decoder, self.problem)

    def forward(
        self,
        td: TensorDict,
        env: EnvBase,
        decoding: DecodeConfig | str | None = None,
        **overrides: Any,
    ) -> Rollout:
        """Construct solutions for instances ``td`` [B].

        Parameters
        ----------
        td : instance data, batch [B].
        env : the problem's environment.
        decoding : strategy name or :class:`DecodeConfig`; None = ``config.decoding``.
        **overrides : :class:`DecodeConfig` fields (e.g. ``augment=8, num_samples=16``).

        Returns
        -------
        Rollout
            ``reward``/``log_likelihood`` [B, M]; ``best_*`` when ``select_best``.
        """
        cfg = resolve_config(self.config.decoding if decoding is None else decoding, **overrides)
        return decode(self.parts, td, env, cfg)

    def evaluate(
        self,
        td: TensorDict,
        env: EnvBase,
        actions: Tensor,
        *,
        forced_first: bool = False,
        temperature: float = 1.0,
    ) -> Rollout:
        """Log-likelihood of ``actions`` [B, T] or [B, M, T]; see :func:`~nco.policies.decoding.evaluate`."""
        return evaluate(
            self.parts, td, env, actions, forced_first=forced_first, temperature=temperature
        )

    def extra_repr(self) -> str:
        return f"preset={self.config.name!r}, problem={self.problem.name!r}"


def build_policy(
    preset: str | PolicyConfig, problem: str | Problem, **overrides: Any
) -> AttentionPolicy:
    """Build a policy from a preset name (or config) for a problem (name or record).

    Parameters
    ----------
    preset : ``am | pomo | pomo-moe | rf-transformer | pomo-dist`` or a :class:`PolicyConfig`.
    problem : problem name (see ``nco.envs.available()``) or :class:`~nco.envs.Problem`.
    **overrides : :class:`PolicyConfig` fields, e.g. ``d_model=32, num_layers=2``.

    Returns
    -------
    AttentionPolicy
    """
    cfg = get_preset(preset) if isinstance(preset, str) else preset
    if overrides:
        cfg = cfg.replace(**overrides)
    prob = get_problem(problem) if isinstance(problem, str) else problem
    return AttentionPolicy(cfg, prob)


def policy_device(policy: nn.Module) -> torch.device:
    """Device of the policy's parameters."""
    return next(policy.parameters()).device


__all__ = ["AttentionPolicy", "build_policy", "policy_device", "problem_dims"]
