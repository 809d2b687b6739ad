"""Training curves of an ``nco train`` run from its ``metrics.csv``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_training", "read_metrics"]


def finite_float(x: str | None) -> float | None:
    """A CSV cell as a finite float; None for an empty, non-numeric or infinite cell."""
    if x is None:
        return None
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_metrics(metrics_csv: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Series ``name -> [(step, value), ...]`` from a Lightning CSVLogger file (empty cells skipped).

    ``val/cost`` and the other epoch-level columns are also keyed by epoch under ``NAME@epoch``.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metrics file")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "step" not in rows[0]:
        raise ValueError(f"{path}: not a Lightning metrics.csv (no 'step' column)")
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        step, epoch = finite_float(row.get("step")), finite_float(row.get("epoch"))
        if step is None:
            continue
        for key, raw in row.items():
            if key in ("step", "epoch"):
                continue
            v = finite_float(raw)
            if v is None:
                continue
            series.setdefault(key, []).append((step, v))
            if key.startswith(("val/", "baseline/", "train/epoch")) and epoch is not None:
                series.setdefault(f"{key}@epoch", []).append((epoch, v))
    for points in series.values():
        points.sort()
    return series


def plot_training(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Plot loss, reward, validation cost and (MoE runs) expert loads; save a PNG.

    Parameters
    ----------
    metrics_csv : ``RUN_DIR/metrics.csv`` written by ``nco train``.
    out_png : output file.

    Returns
    -------
    The path written.
    """
    # Figure (not pyplot) draws with the Agg canvas and never touches the global backend.
    from matplotlib.figure import Figure

    s = read_metrics(metrics_csv)
    loads = sorted(
        (k for k in s if k.startswith("moe/load_e")), key=lambda k: int(k.rsplit("e", 1)[-1])
    )
    panels = ["loss", "reward", "val"] + (["moe"] if loads else [])
    fig = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            _line(ax, s.get("train/loss"), "train/loss")
            ax.set_title("loss")
            ax.set_xlabel("step")
        elif panel == "reward":
            _line(ax, s.get("train/reward"), "train/reward (per step)", alpha=0.5)
            ep = s.get("train/epoch_reward")
            if ep:
                _line(ax, ep, "epoch mean", marker="o")
            ax.set_title("reward (= -cost)")
            ax.set_xlabel("step")
        elif panel == "val":
            _line(ax, s.get("val/cost@epoch"), "val/cost", marker="o")
            bl = s.get("baseline/baseline_cost@epoch")
            if bl:
                _line(ax, bl, "rollout baseline (held set)", marker=".", alpha=0.6)
            ax.set_title("validation cost (greedy)")
            ax.set_xlabel("epoch")
        else:
            for k in loads:
                _line(ax, s[k], k.split("/")[1])
            ax.set_title("MoE expert load")
            ax.set_xlabel("step")
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _line(ax: Axes, pts: list[tuple[float, float]] | None, label: str, **kw: Any) -> None:
    if not pts:
        ax.text(0.5, 0.5, f"no {label}", ha="center", va="center", transform=ax.transAxes)
        return
    xs, ys = zip(*pts)
    ax.plot(xs, ys, label=label, **kw)
