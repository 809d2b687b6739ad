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

import ctypes
import dataclasses
import sys
import time
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
START_CHOICES = ("first", "random")


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode.

    Parameters
    ----------
    strategy : one of :data:`STRATEGIES`.
    num_starts : POMO starts for the multistart strategies; None = ``problem.num_starts(td)``.
    num_samples : ``sampling``: samples per instance; ``multistart_sampling``: samples per start.
    augment : number of dihedral transforms of the unit square, 1 (none) to 8 (the whole group).
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
    start_choice : which POMO starts when ``num_starts`` is below the problem's number of
        candidates: ``"first"`` (the first ones, ``problem.start_nodes``) or ``"random"`` (a
        distinct random subset per instance, drawn from the ``seed`` stream; large instances
        decoded or trained with a few starts see the whole instance, not one corner of the file
        order).
    first_transform : index (0..7) of the first dihedral transform; ``augment`` transforms from
        there are used (a time-budgeted solve decodes one transform per round).
    max_rows : most decode rows (instances x augmentations x rows) stepped at once; larger runs
        are decoded in chunks (augmentation groups, then groups of starts/samples), so memory
        follows this number, not the requested rows. None: everything at once. Chunked sampling
        draws each chunk from its own stream (seed + chunk index): same distribution, other
        samples than one unchunked pass.
    keep_top : keep only the ``keep_top`` best solutions per instance (by reward) in the
        returned ``actions``/``reward``/``log_likelihood`` ([B, keep_top]; ``row_index`` says
        which of the M rows they were); 0 keeps all. Bounds the result's memory for large runs.
    candidates : k-nearest candidate restriction: each step only the ``candidates`` nodes
        nearest to the current node (plus the depot) are offered, falling back to the full mask
        when none of them is a feasible customer; 0 disables it.
    deadline : ``time.perf_counter()`` value after which the construction stops with
        :class:`DecodeTimeout` (checked every few steps); None: no deadline.
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
    start_choice: str = "first"
    first_transform: int = 0
    max_rows: int | None = None
    keep_top: int = 0
    candidates: int = 0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown decoding strategy {self.strategy!r}; expected one of {STRATEGIES}"
            )
        if not 1 <= self.augment <= 8 or not 0 <= self.first_transform <= 8 - self.augment:
            raise ValueError(
                f"augment must be in 1..8 and first_transform + augment <= 8, got augment="
                f"{self.augment}, first_transform={self.first_transform}"
            )
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")
        if self.keep_top < 0 or self.candidates < 0:
            raise ValueError(
                f"keep_top and candidates must be >= 0, got {self.keep_top}, {self.candidates}"
            )
        if self.num_samples < 1 or self.beam_width < 1 or self.check_done_every < 1:
            raise ValueError("num_samples, beam_width and check_done_every must be >= 1")
        if self.num_starts is not None and self.num_starts < 1:
            raise ValueError(f"num_starts must be >= 1, got {self.num_starts}")
        if self.start_choice not in START_CHOICES:
            raise ValueError(
                f"start_choice must be one of {START_CHOICES}, got {self.start_choice!r}"
            )

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
    row_index : [B, K] the index in M of each kept row when decoded with ``keep_top`` = K,
        else None (all M rows are returned in order).
    """

    actions: Tensor | None
    log_likelihood: Tensor
    reward: Tensor
    moe_stats: MoESummary | None = None
    best_actions: Tensor | None = None
    best_reward: Tensor | None = None
    best_index: Tensor | None = None
    row_index: Tensor | None = None


class DecodeTimeout(RuntimeError):
    """The construction passed its :attr:`DecodeConfig.deadline` before every row was done.

    ``steps`` is the number of decoding steps completed before it stopped (timing a decode
    stopped early measures the cost of a step without running it to the end).
    """

    def __init__(self, message: str, steps: int = 0) -> None:
        super().__init__(message)
        self.steps = int(steps)


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


def augment_instances(td: TensorDict, num: int, first: int = 0) -> TensorDict:
    """Instances repeated ``num`` times with transformed ``locs`` -> batch [B * num], order (b, a).

    The transforms are ``first .. first + num - 1`` of :func:`dihedral_locs`.
    """
    b = td.batch_size[0]
    rep = td[torch.arange(b, device=td["locs"].device).repeat_interleave(num)]
    locs = dihedral_locs(td["locs"], first + num)[:, first:]
    rep.set("locs", locs.reshape(b * num, *td["locs"].shape[1:]))
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
    coords = None
    if parts.encoder.dist_bias or parts.decoder.dist_bias:
        # Coordinates of the distance bias (policies with attn_dist_bias). Distances are
        # invariant under the dihedral transforms: augmenting here, the untransformed locs serve
        # every copy (bias bit-identical across copies); for instances augmented by the caller,
        # their transformed locs give the same distances up to float rounding (~1e-7).
        coords = td["locs"].repeat_interleave(augment, 0) if augment > 1 else td["locs"]
    emb, stats = parts.encoder(parts.problem.node_features(src), coords)
    return parts.decoder.precompute(emb, coords), stats


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
    actions: Tensor, ll: Tensor, reward: Tensor, cfg: DecodeConfig, moe: MoESummary | None
) -> Rollout:
    """Best selection and ``keep_top`` trimming of [B0, M] results."""
    b0 = reward.shape[0]
    ar = torch.arange(b0, device=reward.device)
    out = Rollout(actions=actions, log_likelihood=ll, reward=reward, moe_stats=moe)
    if cfg.select_best:
        idx = reward.argmax(1)
        out.best_index = idx
        out.best_reward = reward[ar, idx]
        out.best_actions = actions[ar, idx]
    if 0 < cfg.keep_top < reward.shape[1]:
        top = reward.topk(cfg.keep_top, dim=1).indices
        out.row_index = top
        out.reward = reward.gather(1, top)
        out.log_likelihood = ll.gather(1, top)
        out.actions = actions[ar[:, None], top]
    if not cfg.return_actions:
        out.actions = None
    return out


def _state(parts: PolicyParts, td_env: TensorDict, b: int, s: int) -> Tensor | None:
    if parts.decoder.state_dim == 0:
        return None
    return parts.problem.state_features(td_env).view(b, s, -1)


def _start_nodes(problem: Problem, td: TensorDict, n: int, cfg: DecodeConfig) -> Tensor:
    """POMO first actions [B, n]: the problem's first ``n`` candidates, or a random subset."""
    if cfg.start_choice == "first":
        return problem.start_nodes(td, n)
    full = problem.num_starts(td)
    if n >= full:  # every candidate: no subset to draw
        return problem.start_nodes(td, full)
    cand = problem.start_nodes(td, full)
    dev = cand.device
    # its own stream (seed + 1): the sampling kernel's counter-based stream stays untouched
    g = torch.Generator(device=dev).manual_seed(_seed(cfg) + 1)
    order = torch.rand(cand.shape, generator=g, device=dev).argsort(1)[:, :n]
    return cand.gather(1, order)


#: Decoding steps per preallocated action block of :func:`_construct`.
_BLOCK = 128


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
        coords=None if cache.coords is None else cache.coords.index_select(0, idx),
        log_nodes=cache.log_nodes,
    )


def _construct(
    parts: PolicyParts,
    cache: DecoderCache,
    td_env: TensorDict,
    env: EnvBase,
    s: int,
    cfg: DecodeConfig,
    first_actions: Tensor | None,
    knn: Tensor | None = None,
) -> tuple[Tensor, Tensor, list[MoEStats]]:
    """Decode until every row is done.

    Parameters
    ----------
    cache : decoder cache of B instances.
    td_env : reset env state with B * S rows, ordered (b, s).
    s : rows per instance S.
    first_actions : [B, S] forced first actions (POMO) or None.
    knn : [B, N, k] nearest nodes of every node (``cfg.candidates``) or None.

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
    # Actions go into preallocated [B, S, BLOCK] blocks: one small tensor kept per step would
    # pin the heap between the step's large temporaries and make it grow with every step.
    blocks: list[Tensor] = []
    # with gradients: closed segments of constant active set (ids, per-step log-probs)
    segments: list[tuple[Tensor | None, list[Tensor]]] = []
    seg_logps: list[Tensor] = []
    ll_acc = torch.zeros(b_all, s, device=dev)  # without gradients: summed as we go
    pad = torch.zeros(b_all, s, dtype=torch.int64, device=dev)
    dropped_at = torch.full((b_all,), -1, dtype=torch.int64, device=dev)
    stats: list[MoEStats] = []
    first: Tensor | None = None

    def store(action: Tensor, t: int) -> None:
        if t % _BLOCK == 0:
            blocks.append(torch.zeros(b_all, s, _BLOCK, dtype=torch.int64, device=dev))
        if ids is None:
            blocks[-1][:, :, t % _BLOCK] = action
        else:
            blocks[-1][ids, :, t % _BLOCK] = action

    step = 0
    if first_actions is not None:
        td_env.set("action", first_actions.reshape(-1))
        td_env = env._step(td_env)
        store(first_actions, 0)
        step = 1
        first = first_actions if track_first else None
    limit = _max_steps(n) + cfg.check_done_every
    while True:
        if step % cfg.check_done_every == 0:
            inst_done = td_env["done"].view(b, s).all(1)
            k = int(inst_done.sum())
            if k == b:
                break
            if cfg.compact and 8 * k >= b:
                if seg_logps:
                    segments.append((ids, seg_logps))
                seg_logps = []
                keep = (~inst_done).nonzero().squeeze(1)
                gone = inst_done.nonzero().squeeze(1)
                gone_ids = gone if ids is None else ids[gone]
                # the one action a finished row's mask allows: what the env would be fed
                pad[gone_ids] = td_env["action_mask"].view(b, s, n)[gone].to(torch.uint8).argmax(-1)
                dropped_at[gone_ids] = step
                ids = keep if ids is None else ids[keep]
                cache = _select_cache(cache, keep)
                if knn is not None:
                    knn = knn.index_select(0, keep)
                td_env = td_env[(keep[:, None] * s + torch.arange(s, device=dev)).reshape(-1)]
                if first is not None:
                    first = first[keep]
                b = b - k
        if step >= limit:
            raise RuntimeError(
                f"decoding did not finish within {limit} steps; is the env's done flag reachable?"
            )
        if cfg.deadline is not None and step % 8 == 0 and time.perf_counter() > cfg.deadline:
            raise DecodeTimeout(f"construction stopped at step {step}: deadline passed", step)
        mask = td_env["action_mask"].view(b, s, n)
        current = td_env["current_node"].view(b, s)
        if knn is not None:
            mask = restrict_to_candidates(mask, knn, current, depot=decoder.has_depot)
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
        store(action, step)
        if need_grad:
            seg_logps.append(logp)
        elif ids is None:
            ll_acc += logp
        else:
            # (ids are unique; index_put is much cheaper than index_add on CPU)
            ll_acc.index_put_((ids,), logp, accumulate=True)
        if track_first and first is None:
            first = action
        td_env.set("action", action.reshape(-1))
        td_env = env._step(td_env)
        step += 1
    if seg_logps:
        segments.append((ids, seg_logps))
    actions = torch.cat(blocks, -1)[:, :, :step] if blocks else pad[:, :, :0]
    if bool((dropped_at >= 0).any()):
        # a dropped instance's later steps: its rows' padding action
        later = torch.arange(step, device=dev)[None, :] >= dropped_at[:, None]
        later &= (dropped_at >= 0)[:, None]
        actions = torch.where(later[:, None, :], pad[:, :, None], actions)
    if not need_grad:
        return actions, ll_acc, stats
    ll = torch.zeros(b_all, s, device=dev)
    for seg_ids, lps in segments:
        seg_ll = torch.stack(lps, -1).sum(-1)
        ll = ll + seg_ll if seg_ids is None else ll.index_put((seg_ids,), seg_ll, accumulate=True)
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
    Rollout with [B, M] rewards and log-likelihoods, M = augment x rows ([B, keep_top] with
    ``keep_top``).

    Raises
    ------
    DecodeTimeout
        When ``cfg.deadline`` passes before the construction is complete.

    Memory: one chunk's decode state is alive at a time (``cfg.max_rows`` rows of O(N + T)
    each) plus the kept results; no per-step [rows, N] tensor outlives its step.
    """
    if td.batch_dims != 1:
        raise ValueError(f"td must have one batch dimension [B], got {tuple(td.batch_size)}")
    tame_allocator()
    if cfg.seed is None:  # one draw from torch's global stream, whatever the chunking
        cfg = dataclasses.replace(cfg, seed=_seed(cfg))
    seed = _seed(cfg)
    b0 = td.batch_size[0]
    a = cfg.augment
    first_actions = None
    if cfg.strategy == "beam_search":
        s = cfg.beam_width
    elif cfg.strategy.startswith("multistart"):
        n_starts = cfg.num_starts if cfg.num_starts is not None else parts.problem.num_starts(td)
        m = cfg.num_samples if cfg.strategy == "multistart_sampling" else 1
        starts = _start_nodes(parts.problem, td, n_starts, cfg)  # [B0, n]
        first_actions = starts.repeat_interleave(m, 1)  # [B0, S], columns ordered (start, sample)
        s = first_actions.shape[1]
    elif cfg.strategy == "sampling":
        s = cfg.num_samples
    else:
        s = 1
    # Chunks: groups of `ag` augmentations, each split into groups of `sc` rows per instance.
    limit = cfg.max_rows if cfg.max_rows is not None else b0 * a * s
    if cfg.strategy == "beam_search":
        ag, sc = a, s  # beams of one instance interact: never split
    else:
        ag = max(1, min(a, limit // max(1, b0 * s)))
        sc = s if ag > 1 or b0 * s <= limit else max(1, limit // max(1, b0))
    knn = _nearest_nodes(td, cfg.candidates) if cfg.candidates > 0 else None
    parts_out: list[tuple[Tensor, Tensor, Tensor]] = []  # (actions [B0, ag, c, T], ll, reward)
    enc_all: list[MoEStats] = []
    dec_all: list[MoEStats] = []
    chunk = 0
    for a0 in range(0, a, ag):
        na = min(ag, a - a0)
        t = cfg.first_transform + a0
        src = augment_instances(td, na, t) if (na > 1 or t > 0) else td
        cache, enc_stats = _encode(parts, src, 1)
        enc_all.extend(enc_stats)
        knn_a = None if knn is None else knn.repeat_interleave(na, 0)
        for s0 in range(0, s, sc):
            ns = min(sc, s - s0)
            rows = _repeat_rows(td, na * ns)  # ORIGINAL instances, rows ordered (b0, a, s)
            td_env = env.reset(rows)
            ccfg = cfg if chunk == 0 else dataclasses.replace(cfg, seed=seed + chunk)
            if cfg.strategy == "beam_search":
                actions, ll, dec_stats = _beam(parts, cache, td_env, env, ns)
            else:
                fa = None
                if first_actions is not None:
                    fa = first_actions[:, s0 : s0 + ns].repeat_interleave(na, 0)
                actions, ll, dec_stats = _construct(parts, cache, td_env, env, ns, ccfg, fa, knn_a)
            dec_all.extend(dec_stats)
            tlen = actions.shape[-1]
            reward = -parts.problem.cost(rows, actions.reshape(-1, tlen))
            parts_out.append(
                (
                    actions.reshape(b0, na, ns, tlen),
                    ll.reshape(b0, na, ns),
                    reward.reshape(b0, na, ns),
                )
            )
            chunk += 1
            del td_env, rows, actions
        del cache
    actions, ll, reward = _assemble(parts_out, b0, a, s, sc, ag)
    return _finish(actions, ll, reward, cfg, _summarise(enc_all, dec_all))


def _assemble(
    chunks: list[tuple[Tensor, Tensor, Tensor]], b0: int, a: int, s: int, sc: int, ag: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Chunks in (augmentation group, row group) order -> [B0, M, T], [B0, M], [B0, M].

    Shorter action sequences are padded by repeating their last action (every environment's
    padding action once a row is done: the depot for VRPs, the last city for the TSP).
    """
    if len(chunks) == 1:
        act, ll, rew = chunks[0]
        return act.reshape(b0, -1, act.shape[-1]), ll.reshape(b0, -1), rew.reshape(b0, -1)
    tmax = max(c[0].shape[-1] for c in chunks)

    def pad(x: Tensor) -> Tensor:
        if x.shape[-1] == tmax:
            return x
        return torch.cat([x, x[..., -1:].expand(*x.shape[:-1], tmax - x.shape[-1])], -1)

    per_group = -(-s // sc)
    acts, lls, rews = [], [], []
    for g in range(0, len(chunks), per_group):
        grp = chunks[g : g + per_group]
        acts.append(torch.cat([pad(c[0]) for c in grp], 2))  # [B0, na, s, T]
        lls.append(torch.cat([c[1] for c in grp], 2))
        rews.append(torch.cat([c[2] for c in grp], 2))
    act = torch.cat(acts, 1)
    return (
        act.reshape(b0, a * s, tmax),
        torch.cat(lls, 1).reshape(b0, a * s),
        torch.cat(rews, 1).reshape(b0, a * s),
    )


#: Default memory budget of one decode chunk's state (bytes): see :func:`plan_decode`.
DEFAULT_MEMORY_BUDGET = 1 << 30
#: Default work per instance without a time limit, in row x node x step units: a 1000-customer
#: instance decodes in under 10 s on 2 CPU cores with the shipped ``pomo-dist`` network (whose
#: steps cost ~1.6x a plain POMO step); instances up to ~330 nodes keep full POMO x8.
DEFAULT_WORK_BUDGET = 35 * 10**7
#: Bytes of decode state per row and node (env tensors repeated per row, mask, logits, glimpse
#: weights of 8 heads, the step's temporaries); measured peak/row/node at n=1000 is below it.
ROW_BYTES_PER_NODE = 160
#: Fewest POMO starts per transform before augmentations are given up for starts.
MIN_STARTS = 8


@dataclass(frozen=True)
class DecodePlan:
    """How one decode of B instances is split: see :func:`plan_decode`.

    Attributes
    ----------
    num_starts : POMO starts (or samples) per transform.
    augment : dihedral transforms.
    max_rows : rows stepped at once (``DecodeConfig.max_rows``).
    est_steps : the step count the plan assumed.
    """

    num_starts: int
    augment: int
    max_rows: int
    est_steps: int


def estimated_steps(num_nodes: int) -> int:
    """Decoding steps assumed before a rollout: every node once plus returns to the depot
    (X instances have up to one route per ~3.4 customers)."""
    return int(1.3 * num_nodes) + 2


def plan_decode(
    num_nodes: int,
    num_candidates: int,
    *,
    augment: int = 8,
    num_starts: int | None = None,
    num_samples: int = 1,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    work_budget: int | None = DEFAULT_WORK_BUDGET,
) -> DecodePlan:
    """Starts, transforms and chunk size for decoding instances of ``num_nodes`` nodes.

    Parameters
    ----------
    num_nodes : N (depot included).
    num_candidates : POMO start candidates (``problem.num_starts``).
    augment : transforms asked for (the most the plan uses).
    num_starts : starts asked for; None = as many as ``work_budget`` allows (at most every
        candidate).
    num_samples : rows per start.
    memory_budget : bytes of decode state alive at once; rows per chunk =
        ``memory_budget // (ROW_BYTES_PER_NODE * N + 12 * steps)`` (at least 1).
    work_budget : row x node x step units per instance when ``num_starts`` is None (None = no
        cap). When it allows fewer than :data:`MIN_STARTS` starts per transform, transforms are
        dropped first.

    Returns
    -------
    DecodePlan
    """
    if num_nodes < 1 or num_candidates < 1 or augment < 1 or num_samples < 1:
        raise ValueError("num_nodes, num_candidates, augment and num_samples must be >= 1")
    steps = estimated_steps(num_nodes)
    per_row = ROW_BYTES_PER_NODE * num_nodes + 12 * steps
    max_rows = max(1, int(memory_budget) // per_row)
    if num_starts is not None:
        starts = max(1, min(int(num_starts), num_candidates))
    elif work_budget is None:
        starts = num_candidates
    else:
        rows = max(1, int(work_budget) // (num_nodes * steps * num_samples))
        if rows < augment * MIN_STARTS:
            augment = max(1, min(augment, rows // MIN_STARTS))
        starts = max(1, min(num_candidates, rows // augment))
    return DecodePlan(num_starts=starts, augment=augment, max_rows=max_rows, est_steps=steps)


def restrict_to_candidates(mask: Tensor, knn: Tensor, current: Tensor, *, depot: bool) -> Tensor:
    """Feasible nodes among the k nearest of each row's current node (plus the depot).

    Parameters
    ----------
    mask : [B, S, N] bool, the environment's feasibility mask.
    knn : [B, N, k] int64, the k nearest nodes of every node.
    current : [B, S] int64, each row's current node.
    depot : node 0 is a depot and stays allowed when feasible.

    Returns
    -------
    [B, S, N] bool: the restricted mask where it keeps a feasible customer, else ``mask``
    (so no row is forced back to the depot, or left without an action, by the restriction).
    """
    b, s, _ = mask.shape
    near = knn.gather(1, current[..., None].expand(b, s, knn.shape[-1]))
    allowed = torch.zeros_like(mask).scatter_(2, near, True)
    if depot:
        allowed[..., 0] = True
    restricted = mask & allowed
    ok = restricted[..., 1 if depot else 0 :].any(-1, keepdim=True)
    return torch.where(ok, restricted, mask)


def _nearest_nodes(td: TensorDict, k: int) -> Tensor:
    """[B, N, min(k, N-1)] nearest other nodes of each node (explicit ``distance`` if present),
    computed in row blocks so no [B, N, N] tensor is built for large N."""
    locs = td["locs"]
    b, n, _ = locs.shape
    k = min(k, n - 1)
    block = max(1, 2**24 // max(1, b * n))
    out = []
    for i0 in range(0, n, block):
        if "distance" in td.keys():
            d = td["distance"][:, i0 : i0 + block].clone()
        else:
            d = torch.cdist(locs[:, i0 : i0 + block], locs)
        idx = torch.arange(i0, min(n, i0 + block), device=locs.device)
        d[:, torch.arange(len(idx), device=locs.device), idx] = float("inf")  # not itself
        out.append(d.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out, 1)


_ALLOCATOR_TAMED = False


def tame_allocator() -> None:
    """Stop glibc's heap from keeping every freed decode-step tensor (Linux, once per process).

    glibc raises its mmap threshold each time a large block is freed, after which the
    [rows, N] tensors of every step come from the main heap, and fragmentation makes the
    resident memory grow with the number of steps (measured: 2.9 GB instead of 0.7 GB for a
    1000-customer POMO decode). A fixed 1 MiB threshold returns such blocks to the system when
    freed; it is also faster here (fewer page faults on fresh heap). ``NCO_KEEP_MALLOC=1``
    leaves the allocator as it is.
    """
    global _ALLOCATOR_TAMED
    if _ALLOCATOR_TAMED:
        return
    _ALLOCATOR_TAMED = True
    import os

    if not sys.platform.startswith("linux") or os.environ.get("NCO_KEEP_MALLOC") == "1":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also disables the adjustment)
    except (OSError, AttributeError):
        pass  # not glibc (e.g. musl): nothing to tune


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
    reward = -parts.problem.cost(rows, actions.reshape(-1, t)).reshape(b, m)
    cfg = DecodeConfig(select_best=False)
    return _finish(actions, ll, reward, cfg, _summarise(enc_stats, stats))


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
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_WORK_BUDGET",
    "DecodeConfig",
    "DecodePlan",
    "DecodeTimeout",
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
    "plan_decode",
    "resolve_config",
    "restrict_to_candidates",
    "sampling",
    "tame_allocator",
]
