"""Expert load of a mixture-of-experts policy, per problem variant, and its plot.

:func:`expert_load` decodes a batch with the policy while forward hooks on every MoE layer ask
the layer's router where each token goes (:meth:`~nco.policies.moe.MoE.route`, which neither
runs the experts nor updates any bias), and adds the routed (token, expert) assignments up per
instance. Encoder tokens are nodes; decoder tokens are decode rows (one per start and step).
Grouping instances by variant gives, for each MoE layer, the share of a variant's assignments
that each expert receives (rows sum to 1 over the experts and, for hierarchical routers, the
dense branch). :func:`plot_expert_load` draws one heatmap per layer.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict

if TYPE_CHECKING:
    from nco.policies.moe import MoE

__all__ = ["ExpertLoad", "expert_load", "plot_expert_load", "write_expert_load_csv"]


@dataclass(frozen=True)
class ExpertLoad:
    """Routed assignments per MoE layer, variant and expert.

    Attributes
    ----------
    layers : MoE layer names (``encoder.3``, ``decoder``).
    variants : group labels (variant names), in row order.
    counts : [L, V, E + 1] assignments; the last column counts tokens a hierarchical router
        sent to its dense branch (0 for other routers).
    instances : [V] instances per group.
    """

    layers: list[str]
    variants: list[str]
    counts: np.ndarray
    instances: np.ndarray

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[-1]) - 1

    @property
    def share(self) -> np.ndarray:
        """[L, V, E + 1] shares (each row sums to 1; NaN rows for groups without tokens)."""
        total = self.counts.sum(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.counts / total

    @property
    def has_dense(self) -> bool:
        return bool(self.counts[..., -1].sum() > 0)


def _moe_layers(policy: torch.nn.Module) -> list[tuple[str, MoE]]:
    from nco.policies.moe import MoE

    out: list[tuple[str, MoE]] = []
    for name, mod in policy.named_modules():
        if isinstance(mod, MoE):
            parts = name.split(".")
            label = (
                f"encoder.{parts[parts.index('layers') + 1]}"
                if "layers" in parts
                else parts[0]
                if parts[0] == "decoder"
                else name
            )
            out.append((label, mod))
    return out


@torch.no_grad()
def expert_load(
    policy: torch.nn.Module,
    td: TensorDict,
    env: Any,
    groups: Sequence[str],
    *,
    decoding: str = "multistart_greedy",
) -> ExpertLoad:
    """Decode ``td`` [B] with ``policy`` and count each MoE layer's routed assignments per group.

    Parameters
    ----------
    policy : an :class:`~nco.policies.AttentionPolicy` with at least one MoE layer.
    td : instance data [B]; ``env`` its environment.
    groups : one label per instance (e.g. :func:`nco.envs.mtvrp.variant_names`).
    decoding : the decoding strategy to run (its tokens are what gets counted).

    Raises ValueError when the policy has no MoE layer or ``groups`` has the wrong length.
    """
    layers = _moe_layers(policy)
    if not layers:
        raise ValueError(
            "the policy has no mixture-of-experts layer (train with --preset pomo-moe)"
        )
    b = int(td.batch_size[0])
    if len(groups) != b:
        raise ValueError(f"groups has {len(groups)} labels for a batch of {b} instances")
    e_max = max(int(m.config.num_experts) for _, m in layers)
    labels = list(dict.fromkeys(groups))
    index = np.array([labels.index(g) for g in groups])
    counts = np.zeros((len(layers), len(labels), e_max + 1))
    current = [0]

    def hook_for(i: int, layer: MoE) -> Callable[[torch.nn.Module, tuple[Any, ...], Any], None]:
        def hook(mod: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0]
            routing = layer.route(x)
            mask = routing.mask.reshape(-1, routing.mask.shape[-1])
            counts[i, current[0], : mask.shape[-1]] += mask.sum(0).cpu().numpy()
            if routing.dense is not None:
                counts[i, current[0], -1] += float(routing.dense.sum())

        return hook

    # One decode per group: the decode loop drops finished instances from its batch, so rows
    # cannot be traced back to instances inside a hook, but every row of a call is the group's.
    handles = [mod.register_forward_hook(hook_for(i, mod)) for i, (_, mod) in enumerate(layers)]
    try:
        policy.eval()
        for v in range(len(labels)):
            current[0] = v
            rows = torch.as_tensor(np.flatnonzero(index == v), device=td.device)
            policy(td[rows], env, decoding)
    finally:
        for h in handles:
            h.remove()
    return ExpertLoad(
        layers=[name for name, _ in layers],
        variants=labels,
        counts=counts,
        instances=np.bincount(index, minlength=len(labels)),
    )


def write_expert_load_csv(load: ExpertLoad, path: str | Path) -> Path:
    """One row per layer x variant: instances, assignments and the share of each expert."""
    from nco.envs.io import atomic_write

    e = load.num_experts
    share = load.share
    with atomic_write(path) as fh:
        w = csv.writer(fh)
        w.writerow(
            ["layer", "variant", "instances", "assignments"]
            + [f"expert_{j}" for j in range(e)]
            + ["dense"]
        )
        for li, layer in enumerate(load.layers):
            for vi, variant in enumerate(load.variants):
                w.writerow(
                    [layer, variant, int(load.instances[vi]), int(load.counts[li, vi].sum())]
                    + [f"{x:.6f}" for x in share[li, vi]]
                )
    return Path(path)


def plot_expert_load(
    load: ExpertLoad, out: str | Path | None = None, *, title: str | None = None
) -> Any:
    """One heatmap per MoE layer: rows = variants, columns = experts (plus ``dense`` for
    hierarchical routers), cell = share of the variant's routed assignments. Returns the
    matplotlib Figure; with ``out`` also writes the image atomically."""
    from nco.plotting.routes import _new_figure, _save

    share = np.nan_to_num(load.share)
    cols = load.num_experts + (1 if load.has_dense else 0)
    names = [f"E{j}" for j in range(load.num_experts)] + (["dense"] if load.has_dense else [])
    n_layers = len(load.layers)
    ncols = min(n_layers, 4)
    nrows = (n_layers + ncols - 1) // ncols
    height = 0.28 * len(load.variants) + 1.2
    fig = _new_figure((2.2 * ncols + 1.6, height * nrows), pyplot=False)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for li, layer in enumerate(load.layers):
        ax = axes[li // ncols][li % ncols]
        image = ax.imshow(share[li, :, :cols], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(layer, fontsize=9)
        ax.set_xticks(range(cols), names, fontsize=7)
        if li % ncols == 0:
            ax.set_yticks(range(len(load.variants)), load.variants, fontsize=7)
        else:
            ax.set_yticks([])
        for vi in range(len(load.variants)):
            for j in range(cols):
                v = share[li, vi, j]
                ax.text(j, vi, f"{v:.2f}", ha="center", va="center", fontsize=5.5,
                        color="white" if v < 0.5 else "black")  # fmt: skip
    for k in range(n_layers, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="share of the variant's assignments")
    fig.suptitle(title or "Expert load per variant", fontsize=10)
    if out is not None:
        _save(fig, out)
    return fig
