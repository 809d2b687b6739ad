"""Routes of a solution drawn on its instance, alone or side by side (e.g. neural vs HGS).

Every artist carries a ``gid`` (``"route"``, ``"depot"``, ``"customers"``, ``"arrows"``,
``"label"``) so tests and callers can find what was drawn.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nco.envs.instance import Instance, Solution

__all__ = ["plot_solution", "plot_solutions_side_by_side", "save_route_plot"]

#: Instances with at most this many nodes get node labels unless ``annotate=False``.
LABEL_MAX_NODES = 30


def plot_solution(
    solution: Solution,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    annotate: bool | None = None,
    arrows: bool = True,
) -> Axes:
    """Draw the routes of a solution on its instance and return the Axes.

    The depot is a red square, each route has its own colour (a qualitative colormap, cycled
    when there are many routes), customers are sized by demand and coloured by the route that
    visits them (grey crosses: never visited). Instances without coordinates are drawn on a
    classical-MDS embedding of their distance matrix, which the title says.

    Parameters
    ----------
    solution : the solution; its ``instance`` gives the coordinates, demands and time windows.
    ax : Axes to draw on; default a new figure (a pyplot figure if the caller already uses
        pyplot, so it shows in notebooks, otherwise a standalone Agg-backed Figure).
    title : Axes title; default instance name, solver, cost, feasibility and number of routes.
    annotate : label nodes with their id (and ``[earliest,latest]`` for time windows);
        default: only instances with at most 30 nodes.
    arrows : draw an arrowhead on every leg to show the direction of travel.

    Raises
    ------
    ValueError : a route visits a node id the instance does not have.
    """
    inst = solution.instance
    n = inst.num_nodes
    _check_node_ids(solution)
    xy, embedded = plotting_coords(inst)
    if ax is None:
        ax = _new_figure((7.0, 7.0)).add_subplot(1, 1, 1)
    colors = _route_colors(len(solution.routes))

    for k, route in enumerate(solution.routes):
        seq = [0, *route, 0] if inst.has_depot else [*route, route[0]]
        pts = xy[seq]
        ax.plot(pts[:, 0], pts[:, 1], color=colors[k], lw=1.2, alpha=0.9, zorder=2, gid="route")
        if arrows:
            _draw_arrows(ax, pts, colors[k])

    # Customers take the colour of the route that visits them, so an unvisited one stands out.
    owner = np.full(n, -1)
    for k, route in enumerate(solution.routes):
        owner[list(route)] = k
    first = 1 if inst.has_depot else 0
    nodes = np.arange(first, n)
    sizes = _marker_sizes(inst)[first:]
    visited = owner[first:] >= 0
    if visited.any():
        ax.scatter(
            xy[nodes[visited], 0],
            xy[nodes[visited], 1],
            s=sizes[visited],
            c=[colors[k] for k in owner[first:][visited]],
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
            gid="customers",
        )
    if (~visited).any():
        ax.scatter(
            xy[nodes[~visited], 0],
            xy[nodes[~visited], 1],
            s=sizes[~visited],
            c="grey",
            marker="x",
            zorder=3,
            gid="unvisited",
        )
    if inst.has_depot:
        ax.plot(
            xy[0, 0],
            xy[0, 1],
            marker="s",
            markersize=10,
            color="red",
            markeredgecolor="black",
            linestyle="none",
            zorder=4,
            gid="depot",
        )

    if annotate if annotate is not None else n <= LABEL_MAX_NODES:
        tw = inst.time_windows
        for i in range(n):
            text = str(i) if tw is None else f"{i}\n[{tw[i, 0]:g},{tw[i, 1]:g}]"
            ax.annotate(
                text,
                xy[i],
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                zorder=5,
                gid="label",
            )

    ax.set_title(title if title is not None else default_title(solution, embedded), fontsize=9)
    ax.set_aspect("equal")
    if embedded:
        # MDS axes have no meaning; ticks would suggest coordinates the instance does not have.
        ax.set_xticks([])
        ax.set_yticks([])
    return ax


def plot_solutions_side_by_side(
    solutions: Sequence[Solution],
    *,
    titles: Sequence[str] | None = None,
    out: str | Path | None = None,
) -> Figure:
    """Draw several solutions of one instance next to each other, with shared axes.

    Parameters
    ----------
    solutions : solutions of the same instance (e.g. a neural policy's and HGS's).
    titles : one title per solution; default :func:`default_title` of each.
    out : also save the figure there (atomically; format from the suffix, default PNG).

    Raises
    ------
    ValueError : no solutions, solutions of different instances, or a wrong number of titles.
    """
    if not solutions:
        raise ValueError("no solutions to plot")
    if titles is not None and len(titles) != len(solutions):
        raise ValueError(f"got {len(titles)} titles for {len(solutions)} solutions")
    first = solutions[0]
    for other in solutions[1:]:
        if not _same_instance(first.instance, other.instance):
            a, b = first.instance.name, other.instance.name
            what = f"{a!r} and {b!r}" if a != b else f"two different instances named {a!r}"
            raise ValueError(
                f"solutions must share one instance: {first.solver} solves {a!r}, "
                f"{other.solver} solves {b!r} ({what})"
            )
    k = len(solutions)
    fig = _new_figure((6.0 * k, 6.5), pyplot=False)
    axes = fig.subplots(1, k, squeeze=False, sharex=True, sharey=True)[0]
    for i, (ax, sol) in enumerate(zip(axes, solutions)):
        plot_solution(sol, ax, title=None if titles is None else titles[i])
    if out is not None:
        _save(fig, out)
    return fig


def save_route_plot(solution_or_solutions: Solution | Sequence[Solution], path: str | Path) -> Path:
    """Plot one solution (or several side by side) and write the image atomically.

    The format follows the suffix of ``path`` (``.png`` by default); no partial file is left
    behind when drawing or writing fails. Returns the path written.
    """
    if isinstance(solution_or_solutions, Sequence):
        fig = plot_solutions_side_by_side(solution_or_solutions)
    else:
        fig = _new_figure((7.0, 7.0), pyplot=False)
        plot_solution(solution_or_solutions, fig.add_subplot(1, 1, 1))
    return _save(fig, path)


def default_title(solution: Solution, embedded: bool = False) -> str:
    """Instance name, solver, cost, feasibility and number of routes (plus the layout note)."""
    inst = solution.instance
    if solution.feasible:
        status = "feasible"
    else:
        status = f"INFEASIBLE ({len(solution.violations)} violations)"
    count = f"{len(solution.routes)} routes" if inst.has_depot else f"{inst.num_customers} cities"
    title = f"{inst.name} | {solution.solver}\ncost {solution.cost:.6g}, {status}, {count}"
    if embedded:
        title += "\n(no coordinates: MDS layout of the distance matrix)"
    return title


def plotting_coords(instance: Instance) -> tuple[np.ndarray, bool]:
    """[N, 2] coordinates to draw an instance, and whether they are an MDS embedding.

    Matrix-only instances get a classical-MDS layout of their (symmetrised) distances, so the
    picture is faithful up to rotation and the distortion MDS introduces.
    """
    if instance.coords is not None:
        return np.asarray(instance.coords, dtype=np.float64), False
    from nco.envs.instance import _classical_mds

    return _classical_mds(np.asarray(instance.distance, dtype=np.float64)), True


# ---------------------------------------------------------------------------------- helpers
def _new_figure(figsize: tuple[float, float], *, pyplot: bool = True) -> Figure:
    # A standalone Figure draws with the Agg canvas and never touches the global backend;
    # pyplot is used only when the caller has imported it already (it then owns the backend).
    if pyplot and "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=110, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    from nco.envs.io import atomic_path

    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"{path}: unknown image format {fmt!r}; expected one of {', '.join(sorted(supported))}"
        )
    # The temporary file's suffix is .tmp, so the format must be given explicitly.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, bbox_inches="tight")
    return path


def _check_node_ids(solution: Solution) -> None:
    n = solution.instance.num_nodes
    for k, route in enumerate(solution.routes, 1):
        for v in route:
            if not 0 <= v < n:
                raise ValueError(
                    f"route {k}: node {v} is out of range for {solution.instance.name} "
                    f"(node ids 0..{n - 1}); is this solution for another instance?"
                )


def _same_instance(a: Instance, b: Instance) -> bool:
    if a is b:
        return True
    return (
        a.name == b.name
        and a.problem == b.problem
        and a.distance.shape == b.distance.shape
        and np.array_equal(a.distance, b.distance)
    )


def _route_colors(k: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if k <= 10 else "tab20"].colors  # type: ignore[attr-defined]
    return [tuple(palette[i % len(palette)]) for i in range(k)]


def _marker_sizes(inst: Instance) -> np.ndarray:
    """Marker areas (points^2): smaller for big instances, proportional to demand in a range."""
    n = inst.num_nodes
    base = float(np.clip(2500.0 / n, 8.0, 60.0))
    if inst.demand is None or float(np.max(inst.demand)) <= 0:
        return np.full(n, base)
    rel = np.asarray(inst.demand, dtype=np.float64) / float(np.max(inst.demand))
    # Zero-demand customers stay visible; the largest demand gets 2.5x the base area.
    return base * (0.4 + 2.1 * rel)


def _draw_arrows(ax: Axes, pts: np.ndarray, color: tuple[float, ...]) -> None:
    start, end = pts[:-1], pts[1:]
    delta = end - start
    length = np.hypot(delta[:, 0], delta[:, 1])
    keep = length > 0
    if not keep.any():
        return
    mid = 0.5 * (start[keep] + end[keep])
    unit = delta[keep] / length[keep, None]
    # One quiver per route (not one patch per leg) keeps big instances fast; unit vectors with
    # inch-based scaling give same-size arrowheads at every leg's midpoint whatever the zoom.
    ax.quiver(
        mid[:, 0],
        mid[:, 1],
        unit[:, 0],
        unit[:, 1],
        color=color,
        angles="xy",
        scale_units="inches",
        scale=12.0,
        pivot="mid",
        width=0.004,
        headwidth=4.0,
        headlength=5.0,
        headaxislength=4.5,
        zorder=2,
        gid="arrows",
    )
