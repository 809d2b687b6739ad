"""Pointer decoder (Kool et al. 2019) with a per-instance key cache shared by all decode rows.

Decode states are laid out as ``[B, S]``: B encoded instances (augmentations folded into B) and S
rows per instance (POMO starts x samples, or beams). Everything that depends only on the node
embeddings (glimpse keys/values, logit keys, the graph and node parts of the context) is computed
ONCE per instance in :meth:`PointerDecoder.precompute` and used by every row through batched
matmuls over the S dimension, so neither the encoder nor the projections are ever repeated per
start.

The context projection of Kool et al. ``W [graph; first; current; state]`` is split into one
linear map per part (the same function class); the node parts are applied to the node embeddings
in the cache and gathered per step, so a step costs one small [B*S, Fs] x [Fs, d] product for
the state instead of a [B*S, 3d] x [3d, d] one.

Two options of :class:`~nco.policies.presets.PolicyConfig` extend the decoder (preset
``pomo-dist``):

- ``attn_dist_bias`` (ICAM, Zhou et al. 2024): with ``r_sj`` the distance from row s's current
  node to node j (normalised coordinates) and N the number of nodes, the glimpse scores of head
  h get ``-a_h * log2(N) * r_sj`` and the pointer compatibility ``u_sj = h_s . k_j / sqrt(d)``
  becomes ``u_sj - b * log2(N) * r_sj`` before the clipping ``C tanh(u)`` (learnt a_h, b; init
  1). The cache keeps the coordinates [B, N, 2]; each step computes the [B, S, N] distance rows
  of the current nodes only (no [B, N, N] matrix).
- ``decoder_residual_ffn`` (ReLD, Huang et al. 2025): ``h = q + W_o MHA(q, K, V)``, then
  ``h = h + FF(h)``, then the pointer. The fold of W_o into the logit keys (valid only when
  the glimpse output goes straight into the pointer) is not used then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nco.policies.encoder import FeedForward, bias_chunk_rows, pairwise_distance, size_scale
from nco.policies.moe import MoE, MoEStats
from nco.policies.presets import PolicyConfig


@dataclass(frozen=True)
class DecoderCache:
    """Per-instance decoder tensors, computed once per rollout.

    Attributes
    ----------
    node_emb : [B, N, d] encoder output.
    graph_ctx : [B, 1, d] projected graph embedding (mean of the nodes).
    current_ctx : [B * N, d] projected node embeddings for the "current node" context part plus
        ``graph_ctx`` (flattened so one ``index_select`` gathers all rows).
    first_ctx : [B * N, d] same for the "first node" part (problems without a depot), else None.
    glimpse_k, glimpse_v : [B, H, N, d/H] multi-head glimpse keys and values.
    logit_k : [B, d, N] single-head logit keys, transposed, pre-scaled by 1/sqrt(d) and with the
        decoder's linear output projection folded in (when it has no MoE and no ReLD residual).
    coords : [B, N, 2] normalised coordinates for the distance bias (``attn_dist_bias``), else
        None.
    log_nodes : ``log2(N)``, the size factor of the distance bias (0 without it).
    """

    node_emb: Tensor
    graph_ctx: Tensor
    current_ctx: Tensor
    first_ctx: Tensor | None
    glimpse_k: Tensor
    glimpse_v: Tensor
    logit_k: Tensor
    coords: Tensor | None = None
    log_nodes: float = 0.0

    @property
    def batch_size(self) -> int:
        """Number of encoded instances B."""
        return self.node_emb.shape[0]

    @property
    def num_nodes(self) -> int:
        """Number of nodes N."""
        return self.node_emb.shape[1]


class PointerDecoder(nn.Module):
    """Multi-head glimpse + single-head pointer with tanh clipping.

    Parameters
    ----------
    config : architecture (``d_model``, ``num_heads``, ``tanh_clip``, ``decoder_moe``,
        ``attn_dist_bias``, ``decoder_residual_ffn``).
    state_dim : number of ``problem.state_features`` Fs (0 for none).
    has_depot : problems with a depot use [graph; current; state] as context; problems without
        one add the first node (Kool et al.'s TSP context) and a learnt context for step 0.
    """

    def __init__(self, config: PolicyConfig, state_dim: int, *, has_depot: bool) -> None:
        super().__init__()
        d = config.d_model
        self.d_model = d
        self.num_heads = config.num_heads
        self.tanh_clip = float(config.tanh_clip)
        #: factor between the unscaled scores (``forward(..., scaled=False)``) and the logits
        self.logit_scale = 2.0 * self.tanh_clip if self.tanh_clip > 0 else 1.0
        self.has_depot = has_depot
        self.state_dim = state_dim
        self.project_keys = nn.Linear(d, 3 * d, bias=False)
        self.proj_graph = nn.Linear(d, d, bias=False)
        self.proj_current = nn.Linear(d, d, bias=False)
        self.proj_first = None if has_depot else nn.Linear(d, d, bias=False)
        # Kool et al.'s learnt placeholder for (first, current) before the first city is chosen,
        # folded through the (linear) context projection into one vector.
        self.start_context = None if has_depot else nn.Parameter(torch.empty(d).uniform_(-1, 1))
        self.proj_state = nn.Linear(state_dim, d, bias=False) if state_dim > 0 else None
        self.moe = (
            MoE(d, config.decoder_moe_hidden or d, config.decoder_moe)
            if config.decoder_moe is not None
            else None
        )
        self.out = nn.Linear(d, d, bias=False) if self.moe is None else None
        #: ReLD: identity mapping + feed-forward after the glimpse (no W_o fold into the keys)
        self.residual_ffn = config.decoder_residual_ffn
        self.ffn = FeedForward(d, config.d_ff, config.ffn) if config.decoder_residual_ffn else None
        #: ICAM adaptation bias: per-head glimpse scale and the pointer's scale (init 1)
        self.dist_bias = config.attn_dist_bias
        self.glimpse_alpha = (
            nn.Parameter(torch.ones(self.num_heads)) if config.attn_dist_bias else None
        )
        self.pointer_alpha = nn.Parameter(torch.ones(())) if config.attn_dist_bias else None
        for name, p in self.named_parameters():
            if name.startswith("moe.") or name == "start_context" or name.endswith("_alpha"):
                continue
            stdv = 1.0 / math.sqrt(p.shape[-1])
            p.data.uniform_(-stdv, stdv)

    def precompute(self, node_emb: Tensor, coords: Tensor | None = None) -> DecoderCache:
        """Compute the per-instance cache.

        Parameters
        ----------
        node_emb : Tensor [B, N, d]
        coords : Tensor [B, N, 2] or None
            Normalised coordinates; required with ``attn_dist_bias``, ignored without it.

        Returns
        -------
        DecoderCache
        """
        b, n, d = node_emb.shape
        h = self.num_heads
        if self.dist_bias and coords is None:
            raise ValueError("this decoder has a distance bias (attn_dist_bias): pass coords")
        gk, gv, lk = self.project_keys(node_emb).chunk(3, dim=-1)
        # 1/sqrt(d) of the compatibility, and the 2 of C*tanh(u) = 2C*sigmoid(2u) - C (see forward)
        lk = lk * ((2.0 if self.tanh_clip > 0 else 1.0) / math.sqrt(d))
        if self.out is not None and not self.residual_ffn:
            # The linear head combination W_o is followed only by the dot product with the logit
            # keys, so fold it into them: (g W_o^T) k^T = g (W_o^T k^T). Saves a [B*S, d] x
            # [d, d] product per step for a [d, d] x [d, N] one per instance.
            logit_k = torch.matmul(self.out.weight.t(), lk.transpose(1, 2))
        else:
            logit_k = lk.transpose(1, 2).contiguous()
        graph_ctx = self.proj_graph(node_emb.mean(1, keepdim=True))
        return DecoderCache(
            node_emb=node_emb,
            graph_ctx=graph_ctx,
            # every row adds exactly one current-node row and the graph context: pre-add them
            current_ctx=(self.proj_current(node_emb) + graph_ctx).reshape(b * n, d),
            first_ctx=None
            if self.proj_first is None
            else self.proj_first(node_emb).reshape(b * n, d),
            glimpse_k=gk.reshape(b, n, h, d // h).transpose(1, 2).contiguous(),
            glimpse_v=gv.reshape(b, n, h, d // h).transpose(1, 2).contiguous(),
            logit_k=logit_k,
            coords=None
            if not self.dist_bias or coords is None
            else coords.to(node_emb.dtype).contiguous(),
            log_nodes=size_scale(n) if self.dist_bias else 0.0,
        )

    def _gather(self, table: Tensor, nodes: Tensor, n: int) -> Tensor:
        """Rows of a flattened [B*N, d] table at ``nodes`` [B, S] -> [B, S, d]."""
        b, s = nodes.shape
        if torch.is_grad_enabled() and table.requires_grad:
            # index_select's backward (index_add_ into [B*N, d]) is ~8x slower on CPU than
            # gather's scatter_add over the [B, N, d] view; in inference index_select is ~8x
            # faster. Training spends a large share of its backward here.
            return torch.gather(
                table.view(b, n, -1), 1, nodes.unsqueeze(-1).expand(b, s, table.shape[-1])
            )
        offset = torch.arange(b, device=nodes.device)[:, None] * n
        return table.index_select(0, (nodes + offset).reshape(-1)).view(b, s, -1)

    def forward(
        self,
        cache: DecoderCache,
        current: Tensor,
        first: Tensor | None,
        state: Tensor | None,
        mask: Tensor,
        *,
        scaled: bool = True,
    ) -> tuple[Tensor, MoEStats | None]:
        """Logits of the next action for every decode row.

        Parameters
        ----------
        cache : DecoderCache for B instances.
        current : Tensor [B, S] int64, current node of each row.
        first : Tensor [B, S] int64 or None, first node of each row (problems without a depot);
            None before the first action (the learnt start context is used).
        state : Tensor [B, S, Fs] or None, ``problem.state_features``.
        mask : Tensor [B, S, N] bool, True = feasible.
        scaled : False skips the final multiplication by :attr:`logit_scale` (the decode loop
            folds it into the sampling temperature to save a pass over [B, S, N]).

        Returns
        -------
        logits : Tensor [B, S, N]
            ``C * tanh(u) + C`` with ``u = h . k / sqrt(d)`` (``- b log2(N) r`` with the
            distance bias; the constant shift leaves every softmax and argmax unchanged); values at infeasible nodes are NOT masked (the sampling kernel
            and ``masked_log_softmax`` apply the mask).
        stats : MoEStats or None
            Decoder MoE statistics.
        """
        b, s = current.shape
        n = cache.num_nodes
        d, h = self.d_model, self.num_heads
        # distances [B, S, N] from each row's current node (None before a node is chosen)
        dist: Tensor | None = None
        if self.start_context is not None and first is None:
            q = (cache.graph_ctx + self.start_context).expand(b, s, d).contiguous()
        else:
            if self.dist_bias:
                dist = self._current_distances(cache, current)
            # in-place adds on the freshly gathered rows: no extra [B, S, d] temporaries
            q = self._gather(cache.current_ctx, current, n)
            if cache.first_ctx is not None and first is not None:
                q = q.add_(self._gather(cache.first_ctx, first, n))
        if self.proj_state is not None and state is not None:
            # a handful of state features: broadcast multiply-adds beat a K=Fs matrix product
            w = self.proj_state.weight
            for f in range(self.state_dim):
                q = q.addcmul_(state[..., f : f + 1], w[:, f])
        # Glimpse: [B, H, S, dh] queries against the instance's [B, H, N, dh] keys; the S rows
        # of an instance share its keys without any copy.
        qh = q.view(b, s, h, d // h).transpose(1, 2)
        if dist is None:
            glimpse = F.scaled_dot_product_attention(
                qh, cache.glimpse_k, cache.glimpse_v, attn_mask=mask.unsqueeze(1)
            )
        else:
            glimpse = self._biased_glimpse(qh, cache, mask, dist, cache.log_nodes)
        glimpse = glimpse.transpose(1, 2).reshape(b, s, d)
        stats = None
        if self.moe is not None:
            glimpse, stats = self.moe(glimpse)
        if self.ffn is not None:  # decoder_residual_ffn
            # ReLD: identity mapping of the context, then a feed-forward refinement
            if self.out is not None:
                glimpse = self.out(glimpse)
            glimpse = glimpse + q
            glimpse = glimpse + self.ffn(glimpse)
        # (without MoE and ReLD the output projection W_o is folded into cache.logit_k)
        logits = torch.bmm(glimpse, cache.logit_k)
        if dist is not None:
            # -b log2(N) r_sj on the compatibility u (the keys carry the 2 of sigmoid(2u))
            assert self.pointer_alpha is not None
            coef = self.pointer_alpha * ((2.0 if self.tanh_clip > 0 else 1.0) * cache.log_nodes)
            if torch.is_grad_enabled():
                logits = logits - coef * dist
            else:
                logits.sub_(dist.mul_(coef))
        if self.tanh_clip > 0:
            # C * tanh(u) = 2C * sigmoid(2u) - C: the constant -C cancels in the softmax and the
            # argmax, and sigmoid is ~3x cheaper than tanh on CPU (the 2 is folded into the keys).
            logits = torch.sigmoid(logits) if torch.is_grad_enabled() else torch.sigmoid_(logits)
            if scaled:
                logits = logits * self.logit_scale
        return logits, stats

    def _current_distances(self, cache: DecoderCache, current: Tensor) -> Tensor:
        """Distances [B, S, N] from the current node of each row to every node."""
        if cache.coords is None:
            raise ValueError("decoder cache lacks coords: precompute(node_emb, coords)")
        b, s = current.shape
        here = torch.gather(cache.coords, 1, current.unsqueeze(-1).expand(b, s, 2))
        return pairwise_distance(here, cache.coords)

    def _biased_glimpse(
        self, qh: Tensor, cache: DecoderCache, mask: Tensor, dist: Tensor, log_nodes: float
    ) -> Tensor:
        """Glimpse [B, H, S, dh] with the bias ``-a_h log2(N) r_sj`` on feasible nodes.

        The per-head float mask is [B, H, S, N]; rows are processed in chunks so that one chunk
        stays under :data:`~nco.policies.encoder.ATTN_BIAS_CHUNK_BYTES`.
        """
        assert self.glimpse_alpha is not None
        b, h, s, _ = qh.shape
        n = dist.shape[-1]
        coef = (self.glimpse_alpha * -log_nodes).to(qh.dtype).view(1, h, 1, 1)
        rows = bias_chunk_rows(b, h, s, n, qh.element_size())
        out = []
        # additive mask [B, S, N]: 0 on feasible nodes, -inf elsewhere (one pass over [B, S, N];
        # the per-head bias is then a single fused multiply-add into [B, H, rows, N])
        neg = torch.full(dist.shape, float("-inf"), dtype=qh.dtype, device=dist.device)
        neg = neg.masked_fill_(mask, 0.0)
        for r0 in range(0, s, rows):
            r1 = min(s, r0 + rows)
            bias = torch.addcmul(neg[:, None, r0:r1], dist[:, None, r0:r1].to(qh.dtype), coef)
            out.append(
                F.scaled_dot_product_attention(
                    qh[:, :, r0:r1], cache.glimpse_k, cache.glimpse_v, attn_mask=bias
                )
            )
            del bias  # one chunk's bias alive at a time
        return out[0] if len(out) == 1 else torch.cat(out, 2)


__all__ = ["DecoderCache", "PointerDecoder"]
