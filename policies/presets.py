"""Policy configurations: one frozen dataclass and the named presets of the literature.

AM, POMO, MVMoE, RouteFinder and the size-generalising POMO variant (ICAM's distance bias +
ReLD's decoder) are configurations of the same encoder/decoder pieces, not subclasses: :func:`get_preset` returns a :class:`PolicyConfig`, :func:`nco.policies.build_policy`
turns it into a module. ``PolicyConfig.to_dict``/``from_dict`` round-trip through plain Python
types so that checkpoints can store it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nco.policies.moe import MoEConfig

LAYER_STYLES = ("post_norm", "pre_norm")
NORMS = ("batch", "instance", "layer", "rms")
FFNS = ("relu", "swiglu")


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture of an :class:`~nco.policies.policy.AttentionPolicy`.

    Parameters
    ----------
    name : preset name (informational).
    d_model, num_heads, num_layers, d_ff : encoder width, attention heads, depth, FFN hidden size.
    layer : ``post_norm`` (Kool et al. / POMO: ``x = norm(x + f(x))``) or ``pre_norm``
        (RouteFinder: ``x = x + f(norm(x))`` with a final norm).
    norm : ``batch``, ``instance``, ``layer`` or ``rms``.
    ffn : ``relu`` (Linear-ReLU-Linear) or ``swiglu`` (gated SiLU, RouteFinder).
    moe : MoE configuration replacing the FFN of the encoder layers listed in ``moe_layers``.
    moe_layers : encoder layers (0-based) whose FFN is the MoE; None = all layers (when ``moe``).
    decoder_moe : MoE on the decoder's multi-head combination (output projection), MVMoE style.
    decoder_moe_hidden : hidden size of the decoder MoE experts; None = ``d_model``.
    tanh_clip : logit clipping ``C * tanh(u)`` of the pointer (Bello et al.); 0 disables it.
    attn_dist_bias : ICAM's instance-conditioned adaptation bias (Zhou et al. 2024): every
        encoder self-attention score, the decoder's glimpse scores and the pointer's
        compatibility (before tanh clipping) get ``-alpha * log2(N) * d_ij``, with ``d_ij`` the
        Euclidean distance between nodes i and j in the normalised coordinates (in the decoder:
        from each row's current node), N the number of nodes and ``alpha`` learnt (one per head
        and layer in the encoder, one per head for the glimpse, one for the pointer; init 1).
        The model then needs the coordinates (``td["locs"]``), not only the node features.
    decoder_residual_ffn : ReLD decoder (Huang et al. 2025): identity mapping around the
        glimpse and a feed-forward layer after it, ``h = q + W_o MHA(q, K, V)``,
        ``h = h + FF(h)`` (FF of kind ``ffn`` with hidden size ``d_ff``), then the pointer.
    decoding : default decoding strategy at evaluation.
    train_decoding : decoding strategy training uses (informational for the trainer).
    """

    name: str = "custom"
    d_model: int = 128
    num_heads: int = 8
    num_layers: int = 3
    d_ff: int = 512
    layer: str = "post_norm"
    norm: str = "batch"
    ffn: str = "relu"
    moe: MoEConfig | None = None
    moe_layers: tuple[int, ...] | None = None
    decoder_moe: MoEConfig | None = None
    decoder_moe_hidden: int | None = None
    tanh_clip: float = 10.0
    attn_dist_bias: bool = False
    decoder_residual_ffn: bool = False
    decoding: str = "greedy"
    train_decoding: str = "sampling"

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_layers < 0 or self.d_ff < 1:
            raise ValueError(
                f"need num_layers >= 0 and d_ff >= 1, got {self.num_layers}, {self.d_ff}"
            )
        if self.layer not in LAYER_STYLES:
            raise ValueError(f"layer must be one of {LAYER_STYLES}, got {self.layer!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.ffn not in FFNS:
            raise ValueError(f"ffn must be one of {FFNS}, got {self.ffn!r}")
        for flag in ("attn_dist_bias", "decoder_residual_ffn"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.moe_layers is not None:
            object.__setattr__(self, "moe_layers", tuple(int(i) for i in self.moe_layers))
            bad = [i for i in self.moe_layers if not 0 <= i < self.num_layers]
            if bad:
                raise ValueError(f"moe_layers {bad} outside 0..{self.num_layers - 1}")

    @property
    def encoder_moe_layers(self) -> tuple[int, ...]:
        """Indices of the encoder layers whose FFN is an MoE."""
        if self.moe is None:
            return ()
        return tuple(range(self.num_layers)) if self.moe_layers is None else self.moe_layers

    def replace(self, **overrides: Any) -> PolicyConfig:
        """A copy with ``overrides`` (unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (MoE configs as dicts, tuples as lists) for checkpoints."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                v = dataclasses.asdict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError. Keys added after a checkpoint
        was written (e.g. ``attn_dist_bias``) take their defaults, which reproduce the old model."""
        kw = dict(data)
        for key in ("moe", "decoder_moe"):
            if isinstance(kw.get(key), dict):
                kw[key] = MoEConfig(**kw[key])
        if kw.get("moe_layers") is not None:
            kw["moe_layers"] = tuple(kw["moe_layers"])
        return cls(**kw)


def _mvmoe_encoder() -> MoEConfig:
    return MoEConfig(num_experts=4, k=2, router="topk", level="node")


def _mvmoe_decoder() -> MoEConfig:
    return MoEConfig(num_experts=4, k=2, router="hierarchical", level="node")


_PRESETS: dict[str, Any] = {
    # Kool et al. 2019: 3 post-norm layers with batch norm; single-start greedy/sampling.
    "am": lambda: PolicyConfig(
        name="am", num_layers=3, norm="batch", decoding="greedy", train_decoding="sampling"
    ),
    # Kwon et al. 2020: 6 layers, instance norm, multistart from every node.
    "pomo": lambda: PolicyConfig(
        name="pomo",
        num_layers=6,
        norm="instance",
        decoding="multistart_greedy",
        train_decoding="multistart_sampling",
    ),
    # Zhou et al. 2024 (MVMoE): POMO with MoE FFNs in every encoder layer and a hierarchically
    # gated MoE in the decoder.
    "pomo-moe": lambda: PolicyConfig(
        name="pomo-moe",
        num_layers=6,
        norm="instance",
        moe=_mvmoe_encoder(),
        decoder_moe=_mvmoe_decoder(),
        decoding="multistart_greedy",
        train_decoding="multistart_sampling",
    ),
    # Berto et al. 2024 (RouteFinder): pre-norm RMSNorm + SwiGLU transformer, POMO decoding.
    "rf-transformer": lambda: PolicyConfig(
        name="rf-transformer",
        num_layers=6,
        layer="pre_norm",
        norm="rms",
        ffn="swiglu",
        decoding="multistart_greedy",
        train_decoding="multistart_sampling",
    ),
    # POMO with distance-aware, size-adaptive attention for generalisation to large instances:
    # ICAM's adaptation bias -alpha log2(N) d_ij in the encoder, the glimpse and the pointer
    # (Zhou et al. 2024) and ReLD's decoder, identity mapping + feed-forward after the glimpse
    # (Huang et al. 2025).
    "pomo-dist": lambda: PolicyConfig(
        name="pomo-dist",
        num_layers=6,
        norm="instance",
        attn_dist_bias=True,
        decoder_residual_ffn=True,
        decoding="multistart_greedy",
        train_decoding="multistart_sampling",
    ),
}

PRESETS: tuple[str, ...] = tuple(_PRESETS)


def get_preset(name: str, **overrides: Any) -> PolicyConfig:
    """The :class:`PolicyConfig` of preset ``name`` (one of :data:`PRESETS`) with overrides."""
    try:
        cfg = _PRESETS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg


__all__ = ["FFNS", "LAYER_STYLES", "NORMS", "PRESETS", "PolicyConfig", "get_preset"]
