"""``nco plot``: draw the routes of solution files on their instance.

One solution gives a routes plot; several (of the same instance) are drawn side by side. The
image format follows the suffix of ``--out`` (PNG by default).

Examples::

    nco plot data/instances/X-n101-k25.vrp data/instances/X-n101-k25.sol --out x101.png
    nco plot X-n101-k25.vrp neural.sol hgs.sol --out compare.png --title "POMO" --title "HGS"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco plot"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the plot arguments to a parser."""
    p.add_argument(
        "instance",
        type=Path,
        metavar="INSTANCE",
        help="instance file (.vrp, .tsp, Solomon .txt)",
    )
    p.add_argument(
        "solutions",
        nargs="+",
        type=Path,
        metavar="SOLUTION",
        help="solution files (VRPLIB .sol or TSPLIB .tour); several are drawn side by side",
    )
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="output image")
    p.add_argument(
        "--title",
        action="append",
        default=None,
        help="title of a plot (repeat once per solution); default: instance, solver, cost",
    )


def add_parser(subparsers: Any) -> None:
    """Register ``plot`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "plot",
        help="plot the routes of solution files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _run(args: argparse.Namespace) -> int:
    import nco.envs as E
    from nco.plotting.routes import plot_solutions_side_by_side

    titles: list[str] | None = args.title
    if titles is not None and len(titles) != len(args.solutions):
        raise ValueError(
            f"--title given {len(titles)} times for {len(args.solutions)} solutions; "
            "give one per solution or none"
        )
    inst = E.load(args.instance)
    sols = []
    for path in args.solutions:
        # Read and check every file before drawing, so a bad one leaves no image behind.
        routes = E.read_solution(path, inst)
        n = inst.num_nodes
        bad = next((v for r in routes for v in r if not 0 <= v < n), None)
        if bad is not None:
            raise ValueError(
                f"{path}: node {bad} is out of range for {inst.name} (node ids 0..{n - 1}); "
                f"is it a solution of {args.instance}?"
            )
        sols.append(E.Solution.from_routes(inst, routes, solver=path.name))
    # One solution is a one-panel figure: the same picture as save_route_plot, plus --title.
    plot_solutions_side_by_side(sols, titles=titles, out=args.out)
    for path, sol in zip(args.solutions, sols):
        status = "feasible" if sol.feasible else f"INFEASIBLE ({len(sol.violations)} violations)"
        n = len(sol.routes)
        print(f"{path}: cost {sol.cost:.10g}, {n} route{'s' if n != 1 else ''}, {status}")
    print(f"wrote {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the plot command; 0 on success, 2 for bad input."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.plot``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
