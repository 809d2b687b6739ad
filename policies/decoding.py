"""Decoding strategies as pure functions over (policy parts, instances, environment).

Strategies: ``greedy``, ``sampling`` (temperature / top-k / top-p), ``multistart_greedy`` and
``multistart_sampling`` (POMO), ``beam_search``; any of them with 8-fold dihedral augmentation.
:func:`evaluate` scores given action sequences (teacher forcing) for imitation or training.

Layout: B0 instances, A augmentations and S decode rows per (instance, augmentation). The encoder
runs on the B = B0*A augmented instances, the decoder cache holds [B, ...] tensors and the decode
state is [B, S]; the environment steps one flat TensorDict of B*S rows ordered (b0, a, s). Results
are returned as [B0, M] with M = A*S.

Augmentation changes only the encoder's node features: the environment keeps the ORIGINAL
instance tensors (coordinates, explicit distances), so masks, transitions and the reward
(``-problem.cost`` on the original data) cannot be affected by rounding in the transformed
coordinates.

Fast path: the loop calls ``env._step(td)`` directly. It is the same transition as
``env.step`` (which wraps it in TorchRL's bookkeeping: spec checks, ``next`` nesting and
``step_mdp``); calling it directly avoids that per-step overhead. The choice of each action is made
by :func:`nco.kernels.sampling.masked_sample` (fused numba kernel on CPU, no gradient); when
gradients are enabled the log-probabilities are recomputed with ``masked_log_softmax`` + gather
so REINFORCE gets gradients.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.envs import EnvBase

from nco.envs import Problem
from nco.kernels.sampling import masked_log_softmax, masked_sample
from nco.policies.decoder import DecoderCache, PointerDecoder
from nco.policies.encoder import Encoder
from nco.policies.moe import MoEStats

STRATEGIES = ("greedy", "sampling", "multistart_greedy", "multistart_sampling", "beam_search")


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode.

    Parameters
    ----------
    strategy : one of :data:`STRATEGIES`.
    num_starts : POMO starts for the multistart strategies; None = ``problem.num_starts(td)``.
    num_samples : ``sampling``: samples per instance; ``multistart_sampling``: samples per start.
    augment : 1 (none) or 8 (dihedral group of the unit square).
    temperature, top_k, top_p : sampling filters (top_k=0 and top_p=1 disable them). With
        gradients enabled, the differentiable log-likelihood uses the temperature-scaled softmax
        WITHOUT the top-k/top-p filters (the filters are a sampling device, not the policy).
    beam_width : width W of ``beam_search``.
    select_best : also return the best solution per instance (over augmentations and rows).
    return_actions : keep the [B, M, T] action tensor (False saves memory for large runs).
    seed : random stream of the sampling kernel; None draws one from torch's global generator
        (so ``torch.manual_seed`` makes rollouts reproducible).
    check_done_every : steps between the host syncs that test ``td["done"].all()``; extra steps
        after completion are cheap padding steps of the environment.
    compact : drop instances whose rows are all done from the decode batch (same results, less
        work in the tail of the rollout).
    """

    strategy: str = "greedy"
    num_starts: int | None = None
    num_samples: int = 1
    augment: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_width: int = 1
    select_best: bool = True
    return_actions: bool = True
    seed: int | None = None
    check_done_every: int = 1
    compact: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown decoding strategy {self.strategy!r}; expected one of {STRATEGIES}"
            )
        if self.augment not in (1, 8):
            raise ValueError(f"augment must be 1 or 8, got {self.augment}")
        if self.num_samples < 1 or self.beam_width < 1 or self.check_done_every < 1:
            raise ValueError("num_samples, beam_width and check_done_every must be >= 1")
        if self.num_starts is not None and self.num_starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {self.num_starts}")

    @property
    def greedy(self) -> bool:
        """The action choice is the argmax (greedy strategies)."""
        return self.strategy in ("greedy", "multistart_greedy")


@dataclass(frozen=True)
class MoESummary:
    """MoE statistics of one rollout, aggregated over layers (and decoding steps).

    Attributes
    ----------
    load : [E] mean expert load over layers (each layer's load sums to 1).
    entropy, dropped_fraction, dense_fraction : [] means over layers.
    aux_loss, z_loss : [] sums over layers (differentiable); the decoder's MoE counts as one
        layer whose losses are averaged over the decoding steps.
    layers : per-layer stats (encoder layers in order, then the decoder's step average).
    """

    load: Tensor
    entropy: Tensor
    dropped_fraction: Tensor
    dense_fraction: Tensor
    aux_loss: Tensor
    z_loss: Tensor
    layers: tuple[MoEStats, ...]


@dataclass
class Rollout:
    """Result of decoding B instances with M = augmentations x rows solutions each.

    Attributes
    ----------
    actions : [B, M, T] int64 or None, action sequences (padded with the env's padding action).
    log_likelihood : [B, M] sum of per-step log-probabilities of the decoded actions (forced POMO
        first actions excluded); differentiable when decoded with gradients enabled.
    reward : [B, M] minus ``problem.cost`` on the original instances.
    moe_stats : aggregated MoE statistics, None for a policy without MoE.
    best_actions : [B, T] best solution per instance (``select_best``), else None.
    best_reward : [B] its reward, else None.
    best_index : [B] its index in M, else None.
    """

    actions: Tensor | None
    log_likelihood: Tensor
    reward: Tensor
    moe_stats: MoESummary | None = None
    best_actions: Tensor | None = None
    best_reward: Tensor | None = None
    best_index: Tensor | None = None


class PolicyParts(NamedTuple):
    """What the decoding functions need from a policy."""

    encoder: Encoder
    decoder: PointerDecoder
    problem: Problem


# ----------------------------------------------------------------------------- augmentation
def dihedral_locs(locs: Tensor, num: int = 8) -> Tensor:
    """The first ``num`` (1..8) symmetries of the unit square applied to coordinates.

    Parameters
    ----------
    locs : Tensor [B, N, 2] in [0, 1]^2.
    num : number of transforms; index 0 is the identity.

    Returns
    -------
    Tensor [B, num, N, 2]
        (x, y), (1-x, y), (x, 1-y), (1-x, 1-y), then the same with x and y swapped (POMO order).
    """
    if not 1 <= num <= 8:
        raise ValueError(f"num must be in 1..8, got {num}")
    x, y = locs[..., 0], locs[..., 1]
    xs = (x, 1 - x, x, 1 - x)
    ys = (y, y, 1 - y, 1 - y)
    out = [torch.stack((a, b), -1) for a, b in zip(xs, ys)] + [
        torch.stack((b, a), -1) for a, b in zip(xs, ys)
    ]
    return torch.stack(out[:num], 1)


def augment_instances(td: TensorDict, num: int) -> TensorDict:
    """Instances repeated ``num`` times with transformed ``locs`` -> batch [B * num], order (b, a)."""
    b = td.batch_size[0]
    rep = td[torch.arange(b, device=td["locs"].device).repeat_interleave(num)]
    rep.set("locs", dihedral_locs(td["locs"], num).reshape(b * num, *td["locs"].shape[1:]))
    return rep


# ----------------------------------------------------------------------------- helpers
def _repeat_rows(td: TensorDict, reps: int) -> TensorDict:
    """Each instance repeated ``reps`` times consecutively -> batch [B * reps]."""
    if reps == 1:
        return td
    b = td.batch_size[0]
    return td[torch.arange(b, device=td["locs"].device).repeat_interleave(reps)]


def _encode(
    parts: PolicyParts, td: TensorDict, augment: int
) -> tuple[DecoderCache, list[MoEStats]]:
    """Encoder + decoder cache for B0 * augment instances."""
    src = augment_instances(td, augment) if augment > 1 else td
    emb, stats = parts.encoder(parts.problem.node_features(src))
    return parts.decoder.precompute(emb), stats


def _seed(cfg: DecodeConfig) -> int:
    if cfg.seed is not None:
        return int(cfg.seed)
    return int(torch.randint(0, 2**62, (1,)).item())


def _summarise(enc: list[MoEStats], dec: list[MoEStats]) -> MoESummary | None:
    layers = list(enc)
    if dec:
        # One entry for the decoder: its per-step statistics averaged over the steps.
        layers.append(MoEStats(*(torch.stack(list(v)).mean(0) for v in zip(*dec))))
    if not layers:
        return None
    cols = [torch.stack(list(v)) for v in zip(*layers)]
    load, dropped, entropy, aux, z, dense = cols
    return MoESummary(
        load=load.mean(0),
        entropy=entropy.mean(),
        dropped_fraction=dropped.mean(),
        dense_fraction=dense.mean(),
        aux_loss=aux.sum(),
        z_loss=z.sum(),
        layers=tuple(layers),
    )


def _finish(
    parts: PolicyParts,
    rows: TensorDict,
    actions: Tensor,
    ll: Tensor,
    b0: int,
    cfg: DecodeConfig,
    moe: MoESummary | None,
) -> Rollout:
    """Rewards on the original instance tensors, reshaping to [B0, M] and best selection."""
    t = actions.shape[-1]
    flat = actions.reshape(-1, t)
    # rows are the ORIGINAL instances repeated per solution (augmentation only touched features)
    reward = -parts.problem.cost(rows, flat).reshape(b0, -1)
    actions = actions.reshape(b0, -1, t)
    out = Rollout(
        actions=actions if cfg.return_actions else None,
        log_likelihood=ll.reshape(b0, -1),
        reward=reward,
        moe_stats=moe,
    )
    if cfg.select_best:
        idx = reward.argmax(1)
        ar = torch.arange(b0, device=reward.device)
        out.best_index = idx
        out.best_reward = reward[ar, idx]
        out.best_actions = actions[ar, idx]
    return out


def _state(parts: PolicyParts, td_env: TensorDict, b: int, s: int) -> Tensor | None:
    if parts.decoder.state_dim == 0:
        return None
    return parts.problem.state_features(td_env).view(b, s, -1)


def _max_steps(n: int) -> int:
    # Worst case: every customer on its own route, reached after a depot switch (multi-depot
    # mtvrp: switch, customer, return = 3 steps each); VRP without switches: 2; TSP: 1.
    return 3 * n + 2


# ----------------------------------------------------------------------------- main loop
def _select_cache(cache: DecoderCache, idx: Tensor) -> DecoderCache:
    """The cache of instances ``idx`` [B'] (int64)."""
    b, n = cache.batch_size, cache.num_nodes

    def rows(flat: Tensor) -> Tensor:
        return flat.view(b, n, -1).index_select(0, idx).reshape(-1, flat.shape[-1])

    return DecoderCache(
        node_emb=cache.node_emb.index_select(0, idx),
        graph_ctx=cache.graph_ctx.index_select(0, idx),
        current_ctx=rows(cache.current_ctx),
        first_ctx=None if cache.first_ctx is None else rows(cache.first_ctx),
        glimpse_k=cache.glimpse_k.index_select(0, idx),
        glimpse_v=cache.glimpse_v.index_select(0, idx),
        logit_k=cache.logit_k.index_select(0, idx),
    )


def _construct(
    parts: PolicyParts,
    cache: DecoderCache,
    td_env: TensorDict,
    env: EnvBase,
    s: int,
    cfg: DecodeConfig,
    first_actions: Tensor | None,
) -> tuple[Tensor, Tensor, list[MoEStats]]:
    """Decode until every row is done.

    Parameters
    ----------
    cache : decoder cache of B instances.
    td_env : reset env state with B * S rows, ordered (b, s).
    s : rows per instance S.
    first_actions : [B, S] forced first actions (POMO) or None.

    Returns
    -------
    actions [B, S, T]; log_likelihood [B, S]; decoder MoE stats per step.

    Instances whose S rows are all done are dropped from the decode batch (``cfg.compact``) once
    at least 1/8 of the remaining ones are: POMO rollouts have a long tail where a few instances
    still run, and the glimpse attention dominates each step. A dropped row's remaining actions
    are the single action its mask allows once done (the env's padding action).
    """
    b_all, n = cache.batch_size, cache.num_nodes
    dev = cache.node_emb.device
    need_grad = torch.is_grad_enabled()
    decoder = parts.decoder
    track_first = not decoder.has_depot
    seed = _seed(cfg)
    gen = torch.Generator(device=dev).manual_seed(seed) if dev.type != "cpu" else None
    temperature = cfg.temperature / decoder.logit_scale
    b = b_all
    ids: Tensor | None = None  # instances still decoded (None = all)
    # closed segments of constant active set: (ids, first step, actions [b, S, t], ll [b, S])
    segments: list[tuple[Tensor | None, int, list[Tensor], list[Tensor]]] = []
    seg_start, seg_actions, seg_logps = 0, [], []
    pad = torch.zeros(b_all, s, dtype=torch.int64, device=dev)
    stats: list[MoEStats] = []
    first: Tensor | None = None
    if first_actions is not None:
        td_env.set("action", first_actions.reshape(-1))
        td_env = env._step(td_env)
        seg_actions.append(first_actions)
        first = first_actions if track_first else None
    limit = _max_steps(n) + cfg.check_done_every
    step = len(seg_actions)
    while True:
        if step % cfg.check_done_every == 0:
            inst_done = td_env["done"].view(b, s).all(1)
            k = int(inst_done.sum())
            if k == b:
                break
            if cfg.compact and 8 * k >= b:
                segments.append((ids, seg_start, seg_actions, seg_logps))
                seg_start, seg_actions, seg_logps = step, [], []
                keep = (~inst_done).nonzero().squeeze(1)
                gone = inst_done.nonzero().squeeze(1)
                gone_ids = gone if ids is None else ids[gone]
                # the one action a finished row's mask allows: what the env would be fed
                pad[gone_ids] = td_env["action_mask"].view(b, s, n)[gone].to(torch.uint8).argmax(-1)
                ids = keep if ids is None else ids[keep]
                cache = _select_cache(cache, keep)
                td_env = td_env[(keep[:, None] * s + torch.arange(s, device=dev)).reshape(-1)]
                if first is not None:
                    first = first[keep]
                b = b - k
        if step >= limit:
            raise RuntimeError(
                f"decoding did not finish within {limit} steps; is the env's done flag reachable?"
            )
        mask = td_env["action_mask"].view(b, s, n)
        current = td_env["current_node"].view(b, s)
        # unscaled scores: the logit scale rides on the kernel's temperature multiply
        logits, st = decoder(cache, current, first, _state(parts, td_env, b, s), mask, scaled=False)
        if st is not None:
            stats.append(st)
        action, logp = masked_sample(
            logits,
            mask,
            temperature=temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            greedy=cfg.greedy,
            seed=seed,
            counter=step,
            generator=gen,
        )
        if need_grad:
            logp = (
                masked_log_softmax(logits, mask, temperature)
                .gather(-1, action[..., None])
                .squeeze(-1)
            )
        seg_actions.append(action)
        seg_logps.append(logp)
        if track_first and first is None:
            first = action
        td_env.set("action", action.reshape(-1))
        td_env = env._step(td_env)
        step += 1
    segments.append((ids, seg_start, seg_actions, seg_logps))
    # Reassemble [B, S, T]: padding everywhere, then each segment's steps for its instances.
    actions = pad[:, :, None].expand(b_all, s, step).clone()
    ll = torch.zeros(b_all, s, device=dev)
    for seg_ids, t0, acts, lps in segments:
        if not acts:
            continue
        block = torch.stack(acts, -1)
        if seg_ids is None:
            actions[:, :, t0 : t0 + block.shape[-1]] = block
        else:
            actions[seg_ids, :, t0 : t0 + block.shape[-1]] = block
        if lps:
            seg_ll = torch.stack(lps, -1).sum(-1)
            # (ids are unique; index_put is much cheaper than index_add on CPU)
            ll = (
                ll + seg_ll
                if seg_ids is None
                else ll.index_put((seg_ids,), seg_ll, accumulate=True)
            )
    return actions, ll, stats


def _beam(
    parts: PolicyParts,
    cache: DecoderCache,
    td_env: TensorDict,
    env: EnvBase,
    w: int,
) -> tuple[Tensor, Tensor, list[MoEStats]]:
    """Beam search over [B, W] rows; returns (actions [B, W, T], scores [B, W], stats)."""
    b, n = cache.batch_size, cache.num_nodes
    decoder = parts.decoder
    track_first = not decoder.has_depot
    dev = cache.node_emb.device
    ar = torch.arange(b, device=dev)[:, None]
    # Only beam 0 is alive at the start, so the first expansion does not pick duplicates.
    score = torch.full((b, w), float("-inf"), device=dev)
    score[:, 0] = 0.0
    seqs = torch.zeros(b, w, 0, dtype=torch.int64, device=dev)
    first: Tensor | None = None
    stats: list[MoEStats] = []
    for _ in range(_max_steps(n) + 1):
        if bool(td_env["done"].all()):
            break
        mask = td_env["action_mask"].view(b, w, n)
        logits, st = decoder(
            cache, td_env["current_node"].view(b, w), first, _state(parts, td_env, b, w), mask
        )
        if st is not None:
            stats.append(st)
        cand = (score[..., None] + masked_log_softmax(logits, mask)).view(b, w * n)
        top, idx = cand.topk(w, dim=1)
        parent, action = idx // n, idx % n
        # Fewer than W feasible candidates (e.g. W > N at the start): fill with copies of the best
        # one at score -inf so the env only ever sees feasible actions; they rank last.
        bad = torch.isinf(top)
        parent = torch.where(bad, parent[:, :1], parent)
        action = torch.where(bad, action[:, :1], action)
        td_env = td_env[(ar * w + parent).reshape(-1)]
        seqs = torch.cat([seqs[ar, parent], action[..., None]], -1)
        if track_first:
            first = action if first is None else first[ar, parent]
        score = top
        td_env.set("action", action.reshape(-1))
        td_env = env._step(td_env)
    else:
        raise RuntimeError("beam search did not finish; is the env's done flag reachable?")
    return seqs, score, stats


# ----------------------------------------------------------------------------- entry points
def decode(parts: PolicyParts, td: TensorDict, env: EnvBase, cfg: DecodeConfig) -> Rollout:
    """Decode instances ``td`` (batch [B]) with the strategy of ``cfg``.

    Parameters
    ----------
    parts : encoder, decoder and problem of the policy.
    td : instance data, batch [B] (a reset state works too: only instance keys are used).
    env : the problem's environment (its ``reset``/``_step`` drive the construction).
    cfg : decoding configuration.

    Returns
    -------
    Rollout with [B, M] rewards and log-likelihoods, M = augment x rows.
    """
    if td.batch_dims != 1:
        raise ValueError(f"td must have one batch dimension [B], got {tuple(td.batch_size)}")
    b0 = td.batch_size[0]
    a = cfg.augment
    cache, enc_stats = _encode(parts, td, a)
    first_actions = None
    if cfg.strategy == "beam_search":
        s = cfg.beam_width
    elif cfg.strategy.startswith("multistart"):
        n_starts = cfg.num_starts if cfg.num_starts is not None else parts.problem.num_starts(td)
        m = cfg.num_samples if cfg.strategy == "multistart_sampling" else 1
        starts = parts.problem.start_nodes(td, n_starts)  # [B0, n]
        # rows ordered (b0, a, start, sample)
        first_actions = starts.repeat_interleave(a, 0).repeat_interleave(m, 1)
        s = n_starts * m
    elif cfg.strategy == "sampling":
        s = cfg.num_samples
    else:
        s = 1
    rows = _repeat_rows(td, a * s)
    td_env = env.reset(rows)
    if cfg.strategy == "beam_search":
        actions, ll, dec_stats = _beam(parts, cache, td_env, env, s)
    else:
        actions, ll, dec_stats = _construct(parts, cache, td_env, env, s, cfg, first_actions)
    return _finish(parts, rows, actions, ll, b0, cfg, _summarise(enc_stats, dec_stats))


def evaluate(
    parts: PolicyParts,
    td: TensorDict,
    env: EnvBase,
    actions: Tensor,
    *,
    forced_first: bool = False,
    temperature: float = 1.0,
) -> Rollout:
    """Log-likelihood of given action sequences under the policy (teacher forcing).

    Parameters
    ----------
    td : instance data, batch [B].
    actions : [B, T] or [B, M, T] int64 action sequences (e.g. a Rollout's ``actions``).
    forced_first : the first action was forced (POMO multistart) and is not scored.
    temperature : softmax temperature of the scored distribution.

    Returns
    -------
    Rollout with ``log_likelihood`` [B, M] (M = 1 for [B, T] input; differentiable when
    gradients are enabled), ``reward`` [B, M] and MoE statistics; infeasible actions score -inf.
    """
    if actions.dim() == 2:
        actions = actions[:, None]
    b, m, t = actions.shape
    cache, enc_stats = _encode(parts, td, 1)
    rows = _repeat_rows(td, m)
    td_env = env.reset(rows)
    n = cache.num_nodes
    track_first = not parts.decoder.has_depot
    first: Tensor | None = None
    logps: list[Tensor] = []
    stats: list[MoEStats] = []
    for step in range(t):
        action = actions[..., step]
        if step > 0 or not forced_first:
            mask = td_env["action_mask"].view(b, m, n)
            logits, st = parts.decoder(
                cache, td_env["current_node"].view(b, m), first, _state(parts, td_env, b, m), mask
            )
            if st is not None:
                stats.append(st)
            logps.append(
                masked_log_softmax(logits, mask, temperature)
                .gather(-1, action[..., None])
                .squeeze(-1)
            )
        if track_first and first is None:
            first = action
        td_env.set("action", action.reshape(-1))
        td_env = env._step(td_env)
    ll = torch.stack(logps, -1).sum(-1) if logps else actions.new_zeros((b, m), dtype=torch.float32)
    cfg = DecodeConfig(select_best=False)
    return _finish(parts, rows, actions, ll, b, cfg, _summarise(enc_stats, stats))


def resolve_config(decoding: DecodeConfig | str, **overrides: Any) -> DecodeConfig:
    """A :class:`DecodeConfig` from a strategy name or a config, with field overrides."""
    cfg = DecodeConfig(strategy=decoding) if isinstance(decoding, str) else decoding
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def greedy(parts: PolicyParts, td: TensorDict, env: EnvBase, **kw: Any) -> Rollout:
    """Single-start greedy decoding (argmax every step)."""
    return decode(parts, td, env, DecodeConfig(strategy="greedy", **kw))


def sampling(parts: PolicyParts, td: TensorDict, env: EnvBase, **kw: Any) -> Rollout:
    """``num_samples`` sampled solutions per instance (temperature, top-k, top-p)."""
    return decode(parts, td, env, DecodeConfig(strategy="sampling", **kw))


def multistart_greedy(parts: PolicyParts, td: TensorDict, env: EnvBase, **kw: Any) -> Rollout:
    """POMO: greedy rollouts from ``num_starts`` forced first nodes."""
    return decode(parts, td, env, DecodeConfig(strategy="multistart_greedy", **kw))


def multistart_sampling(parts: PolicyParts, td: TensorDict, env: EnvBase, **kw: Any) -> Rollout:
    """POMO: ``num_samples`` sampled rollouts from each of ``num_starts`` forced first nodes."""
    return decode(parts, td, env, DecodeConfig(strategy="multistart_sampling", **kw))


def beam_search(parts: PolicyParts, td: TensorDict, env: EnvBase, **kw: Any) -> Rollout:
    """Beam search of width ``beam_width`` on summed log-probabilities (width 1 = greedy)."""
    return decode(parts, td, env, DecodeConfig(strategy="beam_search", **kw))


__all__ = [
    "STRATEGIES",
    "DecodeConfig",
    "MoESummary",
    "PolicyParts",
    "Rollout",
    "augment_instances",
    "beam_search",
    "decode",
    "dihedral_locs",
    "evaluate",
    "greedy",
    "multistart_greedy",
    "multistart_sampling",
    "resolve_config",
    "sampling",
]
