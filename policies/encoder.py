"""Graph attention encoders: Kool et al.'s post-norm AM/POMO encoder and RouteFinder's pre-norm
RMSNorm + SwiGLU transformer, with the FFN of any layer replaceable by a mixture of experts.

The encoder sees ``problem.node_features(td)`` [B, N, F]; whether a node is a depot is read
from the data (the depot flag is the last feature for problems with a depot), never from a name.
With ``PolicyConfig.attn_dist_bias`` (ICAM, Zhou et al. 2024) it also takes the normalised
coordinates [B, N, 2]: every self-attention score gets the additive bias
``-alpha_h * log2(N) * d_ij`` (alpha learnt per layer and head). The [B, H, N, N] bias is never
built whole for large N: query rows are processed in chunks of at most
:data:`ATTN_BIAS_CHUNK_BYTES`, and distances are recomputed per chunk from the coordinates
(2-D, a few flops per pair, against 4 * d_model flops for the scores), so no [B, N, N] matrix
is kept either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nco.policies.moe import MoE, MoEStats
from nco.policies.presets import PolicyConfig


class InitEmbedding(nn.Module):
    """Linear embedding of node features, with a separate projection for depot nodes.

    Parameters
    ----------
    node_dim : number of node features F.
    d_model : embedding width.
    depot_flag : the last feature is a 0/1 depot flag; depot rows use their own linear map
        (Kool et al.) and the flag itself is not fed to the projections.
    """

    def __init__(self, node_dim: int, d_model: int, *, depot_flag: bool) -> None:
        super().__init__()
        self.depot_flag = depot_flag
        in_dim = node_dim - 1 if depot_flag else node_dim
        self.node = nn.Linear(in_dim, d_model)
        self.depot = nn.Linear(in_dim, d_model) if depot_flag else None

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, N, F] -> embeddings [B, N, d]."""
        if self.depot is None:
            return self.node(feats)
        x, flag = feats[..., :-1], feats[..., -1:]
        h = self.node(x)
        # Blend by the flag (computes both maps on all nodes; N*F*d is negligible) so depots can
        # be anywhere and the code has no data-dependent branch.
        return h + flag * (self.depot(x) - h)


#: Upper bound (bytes) of one chunk of a [B, H, rows, N] float attention bias; larger biases are
#: processed in chunks of query rows (module-level so that tests and memory-tight runs can set it).
ATTN_BIAS_CHUNK_BYTES = 256 * 2**20


def bias_chunk_rows(batch: int, heads: int, rows: int, cols: int, itemsize: int = 4) -> int:
    """Query rows per chunk so that a [batch, heads, chunk, cols] bias stays under
    :data:`ATTN_BIAS_CHUNK_BYTES` (at least 1, at most ``rows``)."""
    per_row = max(1, batch * heads * cols * itemsize)
    return max(1, min(rows, ATTN_BIAS_CHUNK_BYTES // per_row))


def pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances between point sets: a [B, R, 2], b [B, N, 2] -> [B, R, N].

    Computed from coordinate differences (exact zeros on coincident points, unlike the
    ``|a|^2 + |b|^2 - 2ab`` matrix-product form).
    """
    dx = a[..., :, None, 0] - b[..., None, :, 0]
    dy = a[..., :, None, 1] - b[..., None, :, 1]
    if dx.requires_grad:
        return torch.hypot(dx, dy)
    return torch.hypot(dx, dy, out=dx)  # two [B, R, N] buffers instead of three


def size_scale(num_nodes: int) -> float:
    """ICAM's scale factor ``log2(N)`` of the adaptation bias for an instance of N nodes."""
    return math.log2(max(int(num_nodes), 2))


class MultiHeadAttention(nn.Module):
    """Self-attention with fused QKV projection and ``scaled_dot_product_attention``.

    Parameters
    ----------
    d_model, num_heads : widths.
    bias : biases in the projections.
    dist_bias : add ICAM's adaptation bias ``-alpha_h * log2(N) * d_ij`` to the scores of head
        h (``dist_alpha`` [H], initialised to 1 as in the paper); forward then needs coordinates.
    """

    def __init__(
        self, d_model: int, num_heads: int, *, bias: bool = False, dist_bias: bool = False
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dist_alpha = nn.Parameter(torch.ones(num_heads)) if dist_bias else None

    def forward(self, x: Tensor, coords: Tensor | None = None) -> Tensor:
        """x [B, N, d] (and coords [B, N, 2] with ``dist_bias``) -> [B, N, d]."""
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        if self.dist_alpha is None:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            if coords is None:
                raise ValueError("attention with a distance bias needs the coordinates [B, N, 2]")
            y = self._biased(q, k, v, coords)
        return self.out(y.transpose(1, 2).reshape(b, n, d))

    def _biased(self, q: Tensor, k: Tensor, v: Tensor, coords: Tensor) -> Tensor:
        """SDPA with the float bias ``-alpha_h log2(N) d_ij``, chunked over query rows."""
        assert self.dist_alpha is not None
        b, h, n, _ = q.shape
        coef = (self.dist_alpha * -size_scale(n)).to(q.dtype).view(1, h, 1, 1)
        coords = coords.to(q.dtype)
        rows = bias_chunk_rows(b, h, n, n, q.element_size())
        out = []
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            # [B, 1, R, N] * [1, H, 1, 1] -> [B, H, R, N]: the only bias tensor of the chunk
            mask = pairwise_distance(coords[:, r0:r1], coords).unsqueeze(1) * coef
            out.append(F.scaled_dot_product_attention(q[:, :, r0:r1], k, v, attn_mask=mask))
            del mask  # free it before the next chunk's bias is built (one chunk alive at a time)
        return out[0] if len(out) == 1 else torch.cat(out, 2)


class FeedForward(nn.Module):
    """Position-wise FFN: ``relu`` (Linear-ReLU-Linear) or ``swiglu`` (W2 (silu(x W) * x V))."""

    def __init__(self, d_model: int, d_ff: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        width = 2 * d_ff if kind == "swiglu" else d_ff
        self.w1 = nn.Linear(d_model, width, bias=kind != "swiglu")
        self.w2 = nn.Linear(d_ff, d_model, bias=kind != "swiglu")

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d] -> [..., d]."""
        h = self.w1(x)
        if self.kind == "swiglu":
            a, g = h.chunk(2, dim=-1)
            h = F.silu(a) * g
        else:
            h = F.relu(h)
        return self.w2(h)


class Normalization(nn.Module):
    """Batch, instance, layer or RMS normalisation over [B, N, d] node embeddings."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(d_model, affine=True)
        elif kind == "instance":
            # POMO: statistics over the nodes of each instance, learnt affine, no running stats.
            self.norm = nn.InstanceNorm1d(d_model, affine=True, track_running_stats=False)
        elif kind == "layer":
            self.norm = nn.LayerNorm(d_model)
        else:
            self.norm = nn.RMSNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, N, d] -> [B, N, d]."""
        if self.kind == "batch":
            return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)
        if self.kind == "instance":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class EncoderLayer(nn.Module):
    """One transformer layer: attention + FFN (or MoE), post-norm or pre-norm.

    Parameters
    ----------
    d_model, num_heads, d_ff : widths.
    norm : ``batch | instance | layer | rms``.
    ffn : ``relu | swiglu``.
    pre_norm : RouteFinder ordering ``x + f(norm(x))``; else Kool's ``norm(x + f(x))``.
    moe : when given, an :class:`MoE` with hidden size ``d_ff`` replaces the FFN.
    dist_bias : ICAM adaptation bias in the attention (see :class:`MultiHeadAttention`).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        *,
        norm: str,
        ffn: str,
        pre_norm: bool,
        moe: MoE | None = None,
        dist_bias: bool = False,
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = MultiHeadAttention(d_model, num_heads, dist_bias=dist_bias)
        self.norm1 = Normalization(d_model, norm)
        self.norm2 = Normalization(d_model, norm)
        self.moe = moe
        self.ffn = FeedForward(d_model, d_ff, ffn) if moe is None else None

    def _ff(self, x: Tensor) -> tuple[Tensor, MoEStats | None]:
        if self.moe is not None:
            return self.moe(x)
        assert self.ffn is not None
        return self.ffn(x), None

    def forward(self, x: Tensor, coords: Tensor | None = None) -> tuple[Tensor, MoEStats | None]:
        """x [B, N, d] (coords [B, N, 2] for a distance bias) -> ([B, N, d], MoE stats or None)."""
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), coords)
            y, stats = self._ff(self.norm2(x))
            return x + y, stats
        x = self.norm1(x + self.attn(x, coords))
        y, stats = self._ff(x)
        return self.norm2(x + y), stats


class Encoder(nn.Module):
    """Init embedding + ``num_layers`` transformer layers.

    Parameters
    ----------
    config : architecture (:class:`~nco.policies.presets.PolicyConfig`).
    node_dim : number of node features F of the problem.
    depot_flag : the last node feature flags depots (problems with a depot).
    """

    def __init__(self, config: PolicyConfig, node_dim: int, *, depot_flag: bool) -> None:
        super().__init__()
        c = config
        self.dist_bias = c.attn_dist_bias
        self.init_embedding = InitEmbedding(node_dim, c.d_model, depot_flag=depot_flag)
        moe_at = set(c.encoder_moe_layers)
        self.layers = nn.ModuleList(
            EncoderLayer(
                c.d_model,
                c.num_heads,
                c.d_ff,
                norm=c.norm,
                ffn=c.ffn,
                pre_norm=c.layer == "pre_norm",
                moe=MoE(c.d_model, c.d_ff, c.moe) if (i in moe_at and c.moe is not None) else None,
                dist_bias=c.attn_dist_bias,
            )
            for i in range(c.num_layers)
        )
        # Pre-norm stacks leave the residual stream unnormalised; close it with a final norm.
        self.final_norm = Normalization(c.d_model, c.norm) if c.layer == "pre_norm" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) on dense weights (Kool et al.'s init); the
        distance-bias scales start at 1 (ICAM)."""
        for name, p in self.named_parameters():
            if name.endswith("dist_alpha"):
                p.data.fill_(1.0)
                continue
            if ".moe." in name or "norm" in name:
                continue
            stdv = 1.0 / math.sqrt(p.shape[-1])
            p.data.uniform_(-stdv, stdv)

    def forward(self, feats: Tensor, coords: Tensor | None = None) -> tuple[Tensor, list[MoEStats]]:
        """Encode node features.

        Parameters
        ----------
        feats : Tensor [B, N, F]
            ``problem.node_features(td)``.
        coords : Tensor [B, N, 2] or None
            Normalised coordinates (``td["locs"]``); required with ``attn_dist_bias``, ignored
            without it. Distances are invariant under the dihedral augmentations, so the
            original coordinates serve every augmented copy.

        Returns
        -------
        h : Tensor [B, N, d]
            Node embeddings.
        stats : list of MoEStats
            One per MoE layer (empty without MoE).
        """
        if self.dist_bias and coords is None:
            raise ValueError("this encoder has a distance bias (attn_dist_bias): pass coords")
        h = self.init_embedding(feats)
        stats: list[MoEStats] = []
        for layer in self.layers:
            h, s = layer(h, coords if self.dist_bias else None)
            if s is not None:
                stats.append(s)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h, stats


__all__ = [
    "ATTN_BIAS_CHUNK_BYTES",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "InitEmbedding",
    "MultiHeadAttention",
    "Normalization",
    "bias_chunk_rows",
    "pairwise_distance",
    "size_scale",
]
