"""Graph attention encoders: Kool et al.'s post-norm AM/POMO encoder and RouteFinder's pre-norm
RMSNorm + SwiGLU transformer, with the FFN of any layer replaceable by a mixture of experts.

The encoder sees only ``problem.node_features(td)`` [B, N, F]; whether a node is a depot is read
from the data (the depot flag is the last feature for problems with a depot), never from a name.
"""

from __future__ import annotations

import math

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


class MultiHeadAttention(nn.Module):
    """Self-attention with fused QKV projection and ``scaled_dot_product_attention``."""

    def __init__(self, d_model: int, num_heads: int, *, bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, N, d] -> [B, N, d]."""
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


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
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.norm1 = Normalization(d_model, norm)
        self.norm2 = Normalization(d_model, norm)
        self.moe = moe
        self.ffn = FeedForward(d_model, d_ff, ffn) if moe is None else None

    def _ff(self, x: Tensor) -> tuple[Tensor, MoEStats | None]:
        if self.moe is not None:
            return self.moe(x)
        assert self.ffn is not None
        return self.ffn(x), None

    def forward(self, x: Tensor) -> tuple[Tensor, MoEStats | None]:
        """x [B, N, d] -> ([B, N, d], MoE stats or None)."""
        if self.pre_norm:
            x = x + self.attn(self.norm1(x))
            y, stats = self._ff(self.norm2(x))
            return x + y, stats
        x = self.norm1(x + self.attn(x))
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
            )
            for i in range(c.num_layers)
        )
        # Pre-norm stacks leave the residual stream unnormalised; close it with a final norm.
        self.final_norm = Normalization(c.d_model, c.norm) if c.layer == "pre_norm" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) on dense weights (Kool et al.'s init)."""
        for name, p in self.named_parameters():
            if ".moe." in name or "norm" in name:
                continue
            stdv = 1.0 / math.sqrt(p.shape[-1])
            p.data.uniform_(-stdv, stdv)

    def forward(self, feats: Tensor) -> tuple[Tensor, list[MoEStats]]:
        """Encode node features.

        Parameters
        ----------
        feats : Tensor [B, N, F]
            ``problem.node_features(td)``.

        Returns
        -------
        h : Tensor [B, N, d]
            Node embeddings.
        stats : list of MoEStats
            One per MoE layer (empty without MoE).
        """
        h = self.init_embedding(feats)
        stats: list[MoEStats] = []
        for layer in self.layers:
            h, s = layer(h)
            if s is not None:
                stats.append(s)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h, stats


__all__ = [
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "InitEmbedding",
    "MultiHeadAttention",
    "Normalization",
]
