"""Mixture-of-experts feed-forward layer with pluggable routers.

One :class:`MoE` module covers the routers used in neural combinatorial optimisation (MVMoE,
RouteFinder) and in the MoE literature they draw on:

``"topk"``
    Token choice (Switch Transformer for ``k=1``, GShard for ``k=2``) with the Switch auxiliary
    load-balancing loss, optional router z-loss (ST-MoE) and optional capacity dropping.
``"loss_free"``
    Token choice whose top-k *choice* uses the gate scores plus a per-expert bias buffer that is
    nudged towards balance after every training forward (Wang et al. 2024, "Auxiliary-loss-free
    load balancing"). The combine weights use the unbiased scores; no auxiliary loss.
``"expert_choice"``
    Each expert picks its ``capacity`` highest-scoring routing units (Zhou et al. 2022).
``"hierarchical"``
    MVMoE's hierarchical gating: a first, 2-way gate picks the dense FFN branch or the MoE branch
    (top-1, the chosen probability scales the branch output so the gate is trained), then a
    node-level top-k gate routes the MoE-branch tokens among the experts.

Routing granularity (``MoEConfig.level``): ``"node"`` routes every token; ``"instance"`` routes
each instance by the mean of its tokens; ``"problem"`` routes all instances that share a
``groups`` id together by the mean of their tokens. A *routing unit* is a token, an instance or a
group accordingly. For ``"hierarchical"`` the level sets the granularity of the first
(dense-vs-MoE) gate, and the expert gate is always node-level.

Experts are batched: their weights are stacked tensors ``[E, d, h]`` / ``[E, h, d]`` and the
tokens are copied into padded per-expert buckets ``[E, C, d]`` (``C`` = the largest bucket, at
most the capacity) that go through two ``torch.baddbmm`` calls, then copied back. There is no
Python loop over tokens or experts (only over the ``k`` choice slots, ``E`` for expert choice).
For ``k=1`` the cost is a dense FFN's plus the bucket padding (``max load * E - 1`` extra rows)
and the routing/copy overhead.

All statistics are token-weighted (a unit counts once per token it carries), so that ``load``
describes the compute the experts actually see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FFN", "MoE", "MoEConfig", "MoEStats", "Routing"]

_ROUTERS = ("topk", "loss_free", "expert_choice", "hierarchical")
_LEVELS = ("node", "instance", "problem")
_ACTIVATIONS = ("relu", "gelu", "swiglu")


@dataclass(frozen=True)
class MoEConfig:
    """Configuration of a :class:`MoE` layer.

    Attributes
    ----------
    num_experts : int
        Number of experts ``E``.
    k : int
        Experts per routing unit for token-choice routers (``topk``, ``loss_free``, the expert
        gate of ``hierarchical``); for ``expert_choice`` it is the average number of experts per
        unit that sets the capacity. ``1 <= k <= num_experts``.
    router : str
        ``"topk" | "loss_free" | "expert_choice" | "hierarchical"``.
    level : str
        ``"node" | "instance" | "problem"``: what one routing unit is (see module docstring).
    capacity_factor : float or None
        Token choice: each expert accepts at most ``ceil(cf * U * k / E)`` routing units
        (``U`` units in the call); assignments over capacity are dropped (their contribution
        from the MoE is zero, the caller's residual keeps the token). ``None`` drops nothing.
        Expert choice: each expert picks ``ceil(cf * U * k / E)`` units (``None`` means 1.0).
    z_loss : bool
        Report the router z-loss ``mean(logsumexp(logits) ** 2)`` (ST-MoE); 0 when False.
    bias_update_rate : float
        Step of the loss-free bias update ``bias += rate * sign(mean_load - load)``.
    noisy_gating : bool
        In training mode, add ``N(0, 1) * softplus(x W_noise)`` to the router logits (noisy top-k,
        Shazeer et al. 2017, as MVMoE trains).
    activation : str
        Expert and dense-branch activation: ``"relu" | "gelu" | "swiglu"``.
    """

    num_experts: int = 4
    k: int = 2
    router: str = "topk"
    level: str = "node"
    capacity_factor: float | None = None
    z_loss: bool = False
    bias_update_rate: float = 1e-3
    noisy_gating: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.k <= self.num_experts:
            raise ValueError(f"k must be in [1, num_experts={self.num_experts}], got {self.k}")
        if self.router not in _ROUTERS:
            raise ValueError(f"router must be one of {_ROUTERS}, got {self.router!r}")
        if self.level not in _LEVELS:
            raise ValueError(f"level must be one of {_LEVELS}, got {self.level!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0 or None, got {self.capacity_factor}")
        if self.bias_update_rate < 0:
            raise ValueError(f"bias_update_rate must be >= 0, got {self.bias_update_rate}")


class MoEStats(NamedTuple):
    """Routing statistics of one forward (all token-weighted).

    Attributes
    ----------
    load : Tensor
        ``[E]`` share of the routed (token, expert) assignments per expert, before capacity
        dropping; sums to 1 (all zeros only if ``hierarchical`` sent every token to the dense
        branch). Detached.
    dropped_fraction : Tensor
        ``[]`` token choice: share of routed (token, expert) assignments dropped by capacity
        (for ``k=1`` the share of tokens dropped). Expert choice: share of tokens that no
        expert picked. Detached.
    entropy : Tensor
        ``[]`` mean entropy of the expert gate's softmax (nats). Detached.
    aux_loss : Tensor
        ``[]`` differentiable Switch balance loss ``E * sum_e f_e * P_e`` (``topk`` and the
        expert gate of ``hierarchical``); 0 for ``loss_free`` and ``expert_choice``. Scale it with
        your own coefficient.
    z_loss : Tensor
        ``[]`` differentiable router z-loss when ``config.z_loss``; else 0.
    dense_fraction : Tensor
        ``[]`` ``hierarchical``: share of tokens sent to the dense branch; else 0. Detached.
    """

    load: Tensor
    dropped_fraction: Tensor
    entropy: Tensor
    aux_loss: Tensor
    z_loss: Tensor
    dense_fraction: Tensor


class Routing(NamedTuple):
    """Token-level routing plan of one call (see :meth:`MoE.route`).

    ``...`` is the leading shape of the input: ``[B, N]`` or ``[B]``.

    Attributes
    ----------
    combine : Tensor
        ``[..., E]`` combine weight of each expert's output (0 where not processed).
    mask : Tensor
        ``[..., E]`` bool, True where the expert processes the token (after capacity).
    dense : Tensor or None
        ``[...]`` bool, True where ``hierarchical`` sent the token to the dense branch.
    scale : Tensor or None
        ``[...]`` ``hierarchical``: probability of the chosen branch, multiplies the output.
    capacity : int or None
        Units per expert allowed (token choice with ``capacity_factor``) or picked (expert
        choice); None without a capacity.
    """

    combine: Tensor
    mask: Tensor
    dense: Tensor | None
    scale: Tensor | None
    capacity: int | None


def _activate(h: Tensor, activation: str) -> Tensor:
    if activation == "relu":
        return F.relu(h)
    if activation == "gelu":
        return F.gelu(h)
    gate, value = h.chunk(2, dim=-1)
    return F.silu(gate) * value


def _init_uniform(t: Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)


class FFN(nn.Module):
    """Position-wise feed-forward network ``W2 act(W1 x + b1) + b2``.

    The reference dense layer: an :class:`MoE` expert computes exactly this function with its
    slice of the stacked weights. For ``"swiglu"`` ``W1`` maps to ``2 * d_hidden`` (gate and
    value halves) so that the hidden size stays ``d_hidden``.

    Parameters
    ----------
    d_model : int
        Input/output width ``d``.
    d_hidden : int
        Hidden width ``h``.
    activation : str
        ``"relu" | "gelu" | "swiglu"``.
    """

    def __init__(self, d_model: int, d_hidden: int, activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        width = 2 * d_hidden if activation == "swiglu" else d_hidden
        self.w1 = nn.Parameter(torch.empty(d_model, width))
        self.b1 = nn.Parameter(torch.empty(width))
        self.w2 = nn.Parameter(torch.empty(d_hidden, d_model))
        self.b2 = nn.Parameter(torch.empty(d_model))
        for p in (self.w1, self.b1):
            _init_uniform(p, d_model)
        for p in (self.w2, self.b2):
            _init_uniform(p, d_hidden)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the FFN.

        Parameters
        ----------
        x : Tensor
            ``[..., d]``.

        Returns
        -------
        Tensor
            ``[..., d]``.
        """
        h = _activate(torch.addmm(self.b1, x.reshape(-1, x.shape[-1]), self.w1), self.activation)
        return torch.addmm(self.b2, h, self.w2).reshape(x.shape)


def _positions(idx: Tensor, kept: Tensor, num_experts: int) -> Tensor:
    """Slot of every kept assignment inside its expert's bucket, choice-major order.

    Parameters
    ----------
    idx, kept : Tensor
        ``[U, K]`` expert of each choice slot and whether it counts.

    Returns
    -------
    Tensor
        ``[U, K]`` long: number of earlier kept assignments to the same expert, where all
        ``j``-th choices come before all ``(j+1)``-th choices, then by unit (undefined where
        not kept).
    """
    onehot = F.one_hot(idx.t(), num_experts) * kept.t()[..., None]  # [K, U, E]
    K, U, E = onehot.shape
    csum = onehot.reshape(K * U, E).cumsum(0).reshape(K, U, E)
    return ((csum * onehot).sum(-1) - 1).t()


class _Plan(NamedTuple):
    idx: Tensor  # [T, K] expert per choice slot
    weight: Tensor  # [T, K] combine weight (0 where not processed)
    kept: Tensor  # [T, K] bool
    dense: Tensor | None  # [T] bool
    scale: Tensor | None  # [T]
    capacity: int | None
    load: Tensor  # [E] (before dropping; drives the loss-free bias)
    stats: MoEStats


class MoE(nn.Module):
    """Mixture-of-experts FFN with a pluggable router.

    Parameters
    ----------
    d_model : int
        Token width ``d``.
    d_hidden : int
        Hidden width ``h`` of every expert (and of the dense branch of ``hierarchical``).
    config : MoEConfig
        Router, level, capacity and regularisation settings.

    Attributes
    ----------
    router : nn.Linear
        Expert gate ``d -> E`` (no bias).
    w1, b1, w2, b2 : nn.Parameter
        Stacked expert weights ``[E, d, h']``, ``[E, h']``, ``[E, h, d]``, ``[E, d]``
        (``h' = 2h`` for swiglu); expert ``e`` computes ``FFN`` with ``w1[e], b1[e], w2[e], b2[e]``.
    expert_bias : Tensor
        ``loss_free`` only: ``[E]`` buffer (no gradient, saved in the state dict).
    noise : nn.Linear
        ``noisy_gating`` only: ``d -> E`` noise-scale projection.
    dense_gate : nn.Linear
        ``hierarchical`` only: ``d -> 2`` gate, index 0 = dense branch, 1 = MoE branch.
    dense : FFN
        ``hierarchical`` only: the dense branch (same hidden size as an expert).

    Notes
    -----
    * Dropped assignments (token choice over capacity, tokens no expert picked in expert choice)
      contribute zero; wrap the layer in a residual connection so such tokens pass through.
    * Combine weights: for ``k = 1`` the raw softmax probability of the chosen expert (Switch,
      gives the router a gradient from the task loss); for ``k > 1`` the chosen probabilities
      renormalised to sum to 1 (GShard/Mixtral). ``loss_free`` uses the same weights computed
      from the unbiased scores. Expert choice uses the raw softmax scores (Zhou et al.).
    * Capacity priority (token choice): all first choices before all second choices, then unit
      order (GShard).
    * ``hierarchical``: the first gate's input is the mean of the tokens of its unit (``level``:
      ``"node"`` = per token, ``"instance"`` = per instance, ``"problem"`` = per ``groups`` id,
      the whole batch when ``groups`` is None, which is what MVMoE does). The branch is sampled
      from the gate in training mode (exploration, as MVMoE) and is the argmax in eval mode.
    * ``loss_free`` updates ``expert_bias`` inside :meth:`forward` in training mode only (also
      under ``torch.no_grad``); do not combine with activation recomputation that reruns the
      forward, or the update happens twice.
    * Host syncs: the bucket size (one or two small reads per call); ``problem`` level
      (``torch.unique``); ``hierarchical`` (dense-branch token list, MoE-token count with a
      capacity). Shapes are therefore data dependent (no CUDA graphs / fullgraph compile).
    """

    def __init__(self, d_model: int, d_hidden: int, config: MoEConfig) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_hidden = d_hidden
        self.config = config
        E = config.num_experts
        width = 2 * d_hidden if config.activation == "swiglu" else d_hidden
        self.router = nn.Linear(d_model, E, bias=False)
        self.w1 = nn.Parameter(torch.empty(E, d_model, width))
        self.b1 = nn.Parameter(torch.empty(E, width))
        self.w2 = nn.Parameter(torch.empty(E, d_hidden, d_model))
        self.b2 = nn.Parameter(torch.empty(E, d_model))
        for p in (self.w1, self.b1):
            _init_uniform(p, d_model)
        for p in (self.w2, self.b2):
            _init_uniform(p, d_hidden)
        if config.noisy_gating:
            self.noise = nn.Linear(d_model, E, bias=False)
            nn.init.zeros_(self.noise.weight)  # start with softplus(0) = 0.69 noise scale
        if config.router == "loss_free":
            self.expert_bias: Tensor
            self.register_buffer("expert_bias", torch.zeros(E))
        if config.router == "hierarchical":
            self.dense_gate = nn.Linear(d_model, 2, bias=False)
            self.dense = FFN(d_model, d_hidden, config.activation)

    # ------------------------------------------------------------------ routing units
    def _units(self, x: Tensor, groups: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Routing units of ``x [B, N, d]``: features ``[U, d]``, ``tok_unit [B*N]`` (None: node)."""
        B, N, d = x.shape
        level = self.config.level
        if level == "node":
            return x.reshape(B * N, d), None
        if level == "instance":
            unit = torch.arange(B, device=x.device)
            return x.mean(dim=1), unit.repeat_interleave(N)
        if groups is None:
            inst_group = torch.zeros(B, dtype=torch.long, device=x.device)
            num_groups = 1
        else:
            if groups.shape != (B,):
                raise ValueError(f"groups must have shape [B]={B}, got {tuple(groups.shape)}")
            _, inst_group = torch.unique(groups, return_inverse=True)
            num_groups = int(inst_group.max()) + 1
        sums = x.new_zeros(num_groups, d).index_add(0, inst_group, x.sum(dim=1))
        counts = torch.bincount(inst_group, minlength=num_groups).to(x.dtype) * N
        return sums / counts[:, None], inst_group.repeat_interleave(N)

    def _logits(self, feats: Tensor) -> Tensor:
        logits = self.router(feats).float()
        if self.config.noisy_gating and self.training:
            scale = F.softplus(self.noise(feats).float())
            logits = logits + torch.randn_like(logits) * scale
        return logits

    # ------------------------------------------------------------------ routers
    def _token_choice(
        self, probs: Tensor, active: Tensor, biased: bool
    ) -> tuple[Tensor, Tensor, Tensor, int | None]:
        """Top-k per unit.

        Returns ``idx [U, k]`` experts, ``w [U, k]`` combine weights (0 where dropped),
        ``kept [U, k]`` bool (within capacity and active) and the capacity.
        """
        cfg = self.config
        U, E = probs.shape
        choice = probs + self.expert_bias if biased else probs
        idx = choice.topk(cfg.k, dim=-1).indices  # [U, k]
        w = probs.gather(-1, idx)
        if cfg.k > 1:
            w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        kept = active[:, None].expand(U, cfg.k)
        capacity = None
        if cfg.capacity_factor is not None:
            n_units = U if bool(active.all()) else int(active.sum())
            capacity = max(1, math.ceil(cfg.capacity_factor * n_units * cfg.k / E))
            pos = _positions(idx, kept, E)  # k-major: first choices get priority
            kept = kept & (pos < capacity)
        return idx, w * kept, kept, capacity

    def _route(self, x: Tensor, groups: Tensor | None) -> _Plan:
        """Route ``x [B, N, d]``; the plan is token level (``T = B*N`` rows)."""
        cfg = self.config
        B, N, d = x.shape
        T, E = B * N, cfg.num_experts
        zero = x.new_zeros((), dtype=torch.float32)
        dense = scale = None
        dense_fraction = zero

        if cfg.router == "hierarchical":
            gfeats, g_tok = self._units(x, groups)
            gprobs = F.softmax(self.dense_gate(gfeats).float(), dim=-1)  # [U, 2]
            if self.training:
                branch = torch.multinomial(gprobs.detach(), 1).squeeze(-1)
            else:
                branch = gprobs.argmax(dim=-1)
            gscale = gprobs.gather(-1, branch[:, None]).squeeze(-1)
            dense = branch == 0
            if g_tok is not None:
                dense, gscale = dense[g_tok], gscale[g_tok]
            scale = gscale  # [T]
            dense_fraction = dense.float().mean()
            feats, tok_unit = x.reshape(T, d), None
            unit_w = (~dense).float()  # tokens carried by each (token) unit, 0 = not routed
        else:
            feats, tok_unit = self._units(x, groups)
            if tok_unit is None:
                unit_w = feats.new_ones(T, dtype=torch.float32)
            else:
                unit_w = torch.bincount(tok_unit, minlength=feats.shape[0]).float()

        logits = self._logits(feats)  # [U, E] float32
        probs = F.softmax(logits, dim=-1)
        U = probs.shape[0]
        total_w = unit_w.sum().clamp_min(1.0)
        slot_w = unit_w[:, None]

        capacity: int | None
        if cfg.router == "expert_choice":
            cf = 1.0 if cfg.capacity_factor is None else cfg.capacity_factor
            capacity = min(U, max(1, math.ceil(cf * U * cfg.k / E)))
            top = probs.t().topk(capacity, dim=-1).indices  # [E, C] units picked per expert
            kept = torch.zeros(E, U, dtype=torch.bool, device=x.device)
            kept = kept.scatter(1, top, True).t()  # [U, E]
            idx = torch.arange(E, device=x.device).expand(U, E)
            w = probs * kept
            assign = kept
            unpicked = (~kept.any(dim=-1)).float()
            dropped = (unpicked * unit_w).sum() / total_w
        else:
            active = unit_w > 0
            biased = cfg.router == "loss_free"
            idx, w, kept, capacity = self._token_choice(probs, active, biased)
            assign = active[:, None].expand_as(idx)
            n_assign = (assign * slot_w).sum().clamp_min(1.0)
            dropped = ((assign & ~kept) * slot_w).sum() / n_assign

        counts = torch.zeros(E, device=x.device).index_add(
            0, idx.reshape(-1), (assign * slot_w).reshape(-1)
        )  # [E] routed token assignments
        load = counts / counts.sum().clamp_min(1.0)
        logp = F.log_softmax(logits, dim=-1)
        entropy = (-(probs * logp).sum(-1) * unit_w).sum() / total_w
        aux = zero
        if cfg.router in ("topk", "hierarchical"):
            p_mean = (probs * slot_w).sum(0) / total_w
            aux = E * (load.detach() * p_mean).sum()
        zl = zero
        if cfg.z_loss:
            zl = (torch.logsumexp(logits, dim=-1).square() * unit_w).sum() / total_w

        stats = MoEStats(
            load=load.detach(),
            dropped_fraction=dropped.detach(),
            entropy=entropy.detach(),
            aux_loss=aux,
            z_loss=zl,
            dense_fraction=dense_fraction.detach(),
        )
        if tok_unit is not None:
            idx, w, kept = idx[tok_unit], w[tok_unit], kept[tok_unit]
        return _Plan(
            idx=idx,
            weight=w,
            kept=kept,
            dense=dense,
            scale=scale,
            capacity=capacity,
            load=load.detach(),
            stats=stats,
        )

    # ------------------------------------------------------------------ experts
    def _experts(self, tokens: Tensor, idx: Tensor, weight: Tensor, kept: Tensor) -> Tensor:
        """Weighted sum of expert outputs.

        Tokens are copied into padded per-expert buckets ``[E, C, d]`` (``C`` = largest bucket),
        run through two ``baddbmm`` and copied back. Both copies are ``index_copy`` onto
        distinct rows (plus one discarded dump row for dropped slots / padding), so their
        backward passes are plain gathers; ``index_add``/advanced indexing would backprop
        through a slow scatter-add on CPU.

        Parameters
        ----------
        tokens : Tensor
            ``[T, d]``.
        idx, weight, kept : Tensor
            ``[T, K]`` expert of each choice slot, its combine weight, whether it is processed.

        Returns
        -------
        Tensor
            ``[T, d]``.
        """
        T, d = tokens.shape
        K = idx.shape[1]
        E = self.config.num_experts
        pos = _positions(idx, kept, E)  # [T, K]
        C = int(pos.max()) + 1 if bool(kept.any()) else 0  # host sync: bucket size
        if C == 0:
            return tokens.new_zeros(T, d)
        dump = E * C
        slot = torch.where(kept, idx * C + pos, dump).t()  # [K, T]
        buckets = tokens.new_zeros(dump + 1, d)
        for j in range(K):  # loop over the k choice slots (k <= E), never over tokens
            buckets = buckets.index_copy(0, slot[j], tokens)
        buckets = buckets[:dump].view(E, C, d)
        h = _activate(torch.baddbmm(self.b1[:, None, :], buckets, self.w1), self.config.activation)
        y = torch.baddbmm(self.b2[:, None, :], h, self.w2).view(dump, d)
        # destination row (j * T + t) of every bucket slot; padding slots go to the dump row
        src = torch.arange(K * T, device=tokens.device)
        dest = torch.full((dump + 1,), K * T, dtype=torch.long, device=tokens.device)
        dest = dest.scatter(0, slot.reshape(-1), src)[:dump]
        out = tokens.new_zeros(K * T + 1, d).index_copy(0, dest, y)[: K * T].view(K, T, d)
        weight = weight.t().to(tokens.dtype)[..., None]  # [K, T, 1]
        return out[0] * weight[0] if K == 1 else (out * weight).sum(0)

    # ------------------------------------------------------------------ public API
    def route(self, x: Tensor, *, groups: Tensor | None = None) -> Routing:
        """Routing plan for ``x`` without running the experts (no bias update).

        Parameters
        ----------
        x : Tensor
            ``[B, N, d]`` or ``[B, d]``.
        groups : Tensor, optional
            ``[B]`` integer group id per instance (``level="problem"`` only; ignored otherwise).

        Returns
        -------
        Routing
            Token-level plan with leading shape ``[B, N]`` or ``[B]``.
        """
        x3 = x.unsqueeze(1) if x.dim() == 2 else x
        plan = self._route(x3, groups)
        lead = x.shape[:-1]
        E = self.config.num_experts
        T = plan.idx.shape[0]
        combine = plan.weight.new_zeros(T, E).scatter_add(1, plan.idx, plan.weight)
        mask = torch.zeros(T, E, dtype=torch.bool, device=x.device)
        mask = mask.scatter(1, plan.idx, plan.kept)
        return Routing(
            combine=combine.reshape(*lead, E),
            mask=mask.reshape(*lead, E),
            dense=None if plan.dense is None else plan.dense.reshape(lead),
            scale=None if plan.scale is None else plan.scale.reshape(lead),
            capacity=plan.capacity,
        )

    def forward(self, x: Tensor, *, groups: Tensor | None = None) -> tuple[Tensor, MoEStats]:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor
            ``[B, N, d]`` (B instances, N tokens) or ``[B, d]`` (one token per instance).
        groups : Tensor, optional
            ``[B]`` integer id per instance (e.g. the problem variant); ``level="problem"``
            routes the instances of one id together (None = the whole batch is one group).
            Ignored by the other levels.

        Returns
        -------
        y : Tensor
            Same shape as ``x``. Dropped tokens get 0 (add a residual outside).
        stats : MoEStats
            Load, dropped fraction, entropy, auxiliary and z losses, dense fraction.
        """
        if x.shape[-1] != self.d_model or x.dim() not in (2, 3):
            raise ValueError(f"x must be [B, N, {self.d_model}] or [B, {self.d_model}]")
        x3 = x.unsqueeze(1) if x.dim() == 2 else x
        B, N, d = x3.shape
        tokens = x3.reshape(B * N, d)
        plan = self._route(x3, groups)
        out = self._experts(tokens, plan.idx, plan.weight, plan.kept)
        if plan.dense is not None and plan.scale is not None:
            idx = plan.dense.nonzero(as_tuple=True)[0]
            if idx.numel() > 0:  # MoE-branch rows of `out` are zero there: add, no overlap
                dense_out = self.dense(tokens.index_select(0, idx))
                out = out + out.new_zeros(out.shape).index_copy(0, idx, dense_out)
            out = out * plan.scale.to(out.dtype)[:, None]
        if self.config.router == "loss_free" and self.training:
            with torch.no_grad():
                err = plan.load.mean() - plan.load
                self.expert_bias.add_(self.config.bias_update_rate * torch.sign(err))
        return out.reshape(x.shape), plan.stats
