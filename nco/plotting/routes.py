"""Routes of a solution drawn on its instance, alone or side by side (e.g. neural vs HGS).

Every artist carries a ``gid`` (``"route"``, ``"depot"``, ``"customers"``, ``"backhauls"``,
``"unvisited"``, ``"arrows"``, ``"label"``) so tests and callers can find what was drawn.
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

    Variants (``problem == "mtvrp"``) add: open routes drawn without the return leg; backhaul
    (pickup) customers as hollow markers beside the filled linehauls; several depots, each a
    square in its own colour with its routes in shades of that colour, each route starting
    (and, unless open, ending) at its own depot; a legend naming depots and customer kinds.

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
    nd = inst.num_depots if inst.has_depot else 0
    depots = _route_depots(solution)
    colors, depot_colors = _colors(solution, depots)

    for k, route in enumerate(solution.routes):
        dep = depots[k]
        if not inst.has_depot:
            seq = [*route, route[0]]
        elif inst.open_routes:
            seq = [dep, *route]  # an open route ends at its last customer
        else:
            seq = [dep, *route, dep]
        pts = xy[seq]
        ax.plot(pts[:, 0], pts[:, 1], color=colors[k], lw=1.2, alpha=0.9, zorder=2, gid="route")
        if arrows:
            _draw_arrows(ax, pts, colors[k])

    # Customers take the colour of the route that visits them, so an unvisited one stands out;
    # backhauls (pickups) are hollow, linehauls filled.
    owner = np.full(n, -1)
    for k, route in enumerate(solution.routes):
        owner[list(route)] = k
    nodes = np.arange(nd, n)
    sizes = _marker_sizes(inst)[nd:]
    visited = owner[nd:] >= 0
    pickup = np.zeros(n - nd, dtype=bool)
    if inst.backhaul is not None:
        pickup = np.asarray(inst.backhaul[nd:]) > 0
    for mask, gid in ((visited & ~pickup, "customers"), (visited & pickup, "backhauls")):
        if not mask.any():
            continue
        tint = [colors[k] for k in owner[nd:][mask]]
        ax.scatter(
            xy[nodes[mask], 0],
            xy[nodes[mask], 1],
            s=sizes[mask],
            c="none" if gid == "backhauls" else tint,
            edgecolors=tint if gid == "backhauls" else "black",
            linewidths=1.2 if gid == "backhauls" else 0.4,
            zorder=3,
            gid=gid,
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
    for d in range(nd):
        ax.plot(
            xy[d, 0],
            xy[d, 1],
            marker="s",
            markersize=10,
            color=depot_colors[d],
            markeredgecolor="black",
            linestyle="none",
            zorder=4,
            gid="depot",
            label=f"depot {d + 1}" if nd > 1 else "depot",
        )
    if _is_variant(inst):
        _variant_legend(ax, inst, nd)

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
    k = len(solution.routes)
    count = f"{k} route{'s' if k != 1 else ''}" if inst.has_depot else f"{inst.num_customers} cities"
    name = f"{inst.name} ({inst.variant})" if _is_variant(inst) else inst.name
    title = f"{name} | {solution.solver}\ncost {solution.cost:.6g}, {status}, {count}"
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


def _is_variant(inst: Instance) -> bool:
    """Whether ``inst`` is of the variant family, whose title and legend name its variant."""
    from nco.envs.registry import get_problem

    return get_problem(inst.problem).has_variants


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

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    # an integer picks a listed colormap's i-th colour exactly (no interpolation)
    return [cmap(i % cmap.N) for i in range(k)]


#: Sequential colormaps of the depots of a multi-depot plot (cycled past six depots).
_DEPOT_MAPS = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")


def _route_depots(solution: Solution) -> list[int]:
    """Each route's depot node (0 without stated depots)."""
    if solution.route_depots is None:
        return [0] * len(solution.routes)
    return [int(d) for d in solution.route_depots]


def _colors(
    solution: Solution, depots: list[int]
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...] | str]]:
    """Route colours and depot colours: one qualitative palette and a red depot for one depot;
    with several, depot d is a strong shade of its own sequential colormap and its routes
    lighter and darker shades of it."""
    inst = solution.instance
    if inst.num_depots <= 1:
        return _route_colors(len(solution.routes)), ["red"]
    from matplotlib import colormaps

    maps = [colormaps[_DEPOT_MAPS[d % len(_DEPOT_MAPS)]] for d in range(inst.num_depots)]
    per = np.bincount(depots, minlength=inst.num_depots) if depots else np.zeros(inst.num_depots)
    seen = [0] * inst.num_depots
    colors = []
    for d in depots:
        # shades 0.45..0.95 of the depot's map, spread over its routes
        frac = 0.45 + 0.5 * (seen[d] / max(int(per[d]) - 1, 1)) if per[d] > 1 else 0.7
        colors.append(tuple(maps[d](frac)))
        seen[d] += 1
    return colors, [tuple(m(0.85)) for m in maps]


def _variant_legend(ax: Axes, inst: Instance, nd: int) -> None:
    """Legend of a variant plot: the depots, linehaul and backhaul customers, open routes."""
    from matplotlib.lines import Line2D

    handles = [h for h in ax.lines if h.get_gid() == "depot"]
    if inst.backhaul is not None:
        handles += [
            Line2D(
                [],
                [],
                marker="o",
                linestyle="none",
                color="grey",
                markeredgecolor="black",
                label="linehaul (delivery)",
            ),
            Line2D(
                [],
                [],
                marker="o",
                linestyle="none",
                markerfacecolor="none",
                markeredgecolor="grey",
                label="backhaul (pickup)",
            ),
        ]
    if inst.open_routes:
        handles.append(Line2D([], [], color="grey", label="open route (no return leg)"))
    ax.legend(handles=handles, loc="best", fontsize=7, framealpha=0.8)


def _marker_sizes(inst: Instance) -> np.ndarray:
    """Marker areas (points^2): smaller for big instances, proportional to demand in a range
    (a backhaul customer's pickup amount counts as its demand)."""
    n = inst.num_nodes
    base = float(np.clip(2500.0 / n, 8.0, 60.0))
    amount = inst.demand
    if amount is not None and inst.backhaul is not None:
        amount = np.maximum(amount, inst.backhaul)
    if amount is None or float(np.max(amount)) <= 0:
        return np.full(n, base)
    rel = np.asarray(amount, dtype=np.float64) / float(np.max(amount))
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
