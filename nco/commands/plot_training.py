"""``nco plot-training``: loss, reward, validation cost and MoE expert load of a training run.

Example::

    nco plot-training runs/tsp20-am                 # writes runs/tsp20-am/training.png
    nco plot-training runs/cvrp50-moe --out moe.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco plot-training"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the plot-training arguments to a parser."""
    p.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="run directory of nco train (or its metrics.csv)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PNG",
        help="output image (default RUN_DIR/training.png)",
    )


def add_parser(subparsers: Any) -> None:
    """Register ``plot-training`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "plot-training",
        help="plot the training curves of a run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _run(args: argparse.Namespace) -> int:
    from nco.plotting.training import plot_training

    src: Path = args.run_dir
    metrics = src if src.suffix == ".csv" else src / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no such file (is {src} an nco train run directory?)")
    out = args.out or metrics.parent / "training.png"
    print(f"wrote {plot_training(metrics, out)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the plot-training command; 0 on success, 2 for bad input."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.plot_training``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
