"""``nco benchmark``: classical and neural solvers on a folder of instances or a generated set.

Examples::

    nco benchmark data/cvrplib-x --solvers ortools,hgs,pyvrp --time-limits 1,10 --out runs/x
    nco benchmark data/cvrplib-x --solvers neural,hybrid,pyvrp --model cvrp100 --out runs/xn
    nco benchmark --problem cvrp --size 100 --num 100 --seed 1234 --solvers hgs,pyvrp \\
        --time-limits 1 --reference pyvrp:5 --workers 2 --out runs/cvrp100

Multi-variant VRP (tensor-only test sets; one table of every variant, models as columns of
gaps to the best of PyVRP / OR-Tools; see ``nco.mtvrp_benchmark``)::

    nco benchmark --problem mtvrp --size 50 --num 1000 --variants core \\
        --solvers pyvrp,ortools,neural --model runs/mtvrp-pomo,runs/mtvrp-moe --out runs/mtvrp50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco benchmark"

#: Solvers that take ``--model``.
_MODEL_SOLVERS = ("neural", "hybrid")


def configure(p: argparse.ArgumentParser) -> None:
    """Add the benchmark arguments to a parser."""
    p.add_argument(
        "dir", nargs="?", type=Path, help="folder of instance files (.vrp, .tsp, Solomon .txt)"
    )
    g = p.add_argument_group("generated set (instead of DIR)")
    g.add_argument("--problem", help="tsp, cvrp, cvrptw or mtvrp")
    g.add_argument(
        "--variants",
        default="core",
        help="mtvrp only: core (16), all (48, with M and MD), train (MVMoE's 6) or a "
        "comma-separated list; default core",
    )
    g.add_argument(
        "--size", type=int, default=100, help="customers (cities for the TSP); default 100"
    )
    g.add_argument("--num", type=int, default=100, help="number of instances; default 100")
    g.add_argument(
        "--distribution",
        default="uniform",
        help="generator distribution: uniform, clustered, mixed; cvrp also uchoa (X-like); "
        "default uniform",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=1234,
        help="seed of the generated set and of the solvers; default 1234",
    )
    p.add_argument(
        "--solvers",
        default="ortools,hgs,pyvrp",
        help="comma-separated solver names (ortools, hgs, pyvrp, neural, hybrid; NAME+ls adds "
        "the local search, e.g. neural+ls); default ortools,hgs,pyvrp",
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint for the neural and hybrid solvers: a file, a run directory or a shipped "
        "name (e.g. cvrp100); default: the shipped checkpoint nearest in size per instance. "
        "mtvrp: a comma-separated list, one table column each",
    )
    p.add_argument("--time-limits", default="1", help="comma-separated seconds per run; default 1")
    p.add_argument(
        "--time-per-100",
        default=None,
        metavar="BUDGETS",
        help="comma-separated budgets in seconds per 100 customers (each instance gets "
        "budget x n / 100 s), instead of --time-limits; e.g. 0.1,0.3,1,3",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel worker processes (one core each); default 1",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="gap reference: a CSV with instance,bks columns | pyvrp[:SECONDS] (PyVRP run at that limit, "
        "default the largest time limit) | sol (the .sol next to each instance; the default) | none",
    )
    p.add_argument("--first", type=int, default=None, help="only the first K instances")
    p.add_argument(
        "--max-customers",
        type=int,
        default=None,
        help="only instances with at most this many customers",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (results.csv, solutions/, instances/, gap_vs_time.png)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write gap_vs_time.png")


def add_parser(subparsers: Any) -> None:
    """Register ``benchmark`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "benchmark",
        help="benchmark classical and neural solvers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"{what}: expected positive numbers, got {text!r}")
    return vals


def _run_mtvrp(args: argparse.Namespace, solvers: list[str], time_limits: list[float]) -> int:
    from nco.mtvrp_benchmark import parse_variants, run_mtvrp_benchmark

    if args.dir is not None:
        raise ValueError("mtvrp instances are generated (tensor-only): give --problem, not DIR")
    if len(time_limits) != 1:
        raise ValueError(f"--time-limits: mtvrp takes one limit, got {args.time_limits!r}")
    unknown = [s for s in solvers if s not in ("pyvrp", "ortools", "neural")]
    if unknown:
        raise ValueError(
            f"solver(s) {', '.join(unknown)} not available for mtvrp; expected pyvrp, ortools, neural"
        )
    models = [m.strip() for m in (args.model or "").split(",") if m.strip()]
    if ("neural" in solvers) != bool(models):
        raise ValueError("mtvrp: --solvers neural needs --model CKPT[,CKPT...] and vice versa")
    run_mtvrp_benchmark(
        variants=parse_variants(args.variants),
        size=args.size,
        num=args.num if args.first is None else min(args.num, args.first),
        seed=args.seed,
        solvers=[s for s in solvers if s != "neural"],
        time_limit=time_limits[0],
        workers=args.workers,
        models=models,
        out=args.out,
    )
    print(
        f"results: {args.out / 'results.csv'}, {args.out / 'models.csv'}, {args.out / 'table.txt'}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from nco.benchmark import (
        collect_instances,
        format_budget_tables,
        format_summary,
        generate_instances,
        run_benchmark,
        summarize,
    )

    from nco.benchmark import solver_spec

    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    time_limits = _floats(args.time_limits, "--time-limits")
    per_100 = _floats(args.time_per_100, "--time-per-100") if args.time_per_100 else None
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.out is None:
        raise ValueError("--out RUN_DIR is required")
    if args.problem == "mtvrp":
        if per_100:
            raise ValueError("--time-per-100: mtvrp takes one limit in seconds (--time-limits)")
        return _run_mtvrp(args, solvers, time_limits)
    if (args.dir is None) == (args.problem is None):
        raise ValueError(
            "give either an instance folder DIR or --problem (with --size/--num) for a generated set"
        )
    from nco.baselines import available_solvers

    bad = [s for s in solvers if solver_spec(s)[0] not in available_solvers()]
    if bad or not solvers:
        raise ValueError(
            f"unknown solver(s) {', '.join(bad) or '(none)'}; expected some of {', '.join(available_solvers())}"
        )
    if args.model is not None and not any(solver_spec(s)[0] in _MODEL_SOLVERS for s in solvers):
        raise ValueError(
            "--model applies to the neural and hybrid solvers, and neither is in --solvers"
        )
    if args.dir is not None:
        if not args.dir.exists():
            raise FileNotFoundError(f"{args.dir}: no such directory")
        files = collect_instances(args.dir, max_customers=args.max_customers, first=args.first)
    else:
        files = generate_instances(
            args.problem,
            args.size,
            args.num,
            args.seed,
            args.out / "instances",
            distribution=args.distribution,
        )
        if args.first is not None:
            files = files[: args.first]
    reference = args.reference
    if reference is None and args.dir is None:
        reference = "none"  # generated instances have no .sol files
    rows = run_benchmark(
        files,
        solvers,
        time_limits,
        args.out,
        seed=args.seed,
        workers=args.workers,
        reference=reference,
        solver_options={
            s: {"model": args.model}
            for s in solvers
            if args.model and solver_spec(s)[0] in _MODEL_SOLVERS
        },
        per_100=per_100,
    )
    summary = summarize(rows)
    print(format_summary(summary))
    from nco.envs.io import atomic_write

    with atomic_write(args.out / "summary.md") as fh:
        fh.write(format_budget_tables(summary))
    print(f"results: {args.out / 'results.csv'}, tables: {args.out / 'summary.md'}")
    if not args.no_plot:
        from nco.plotting.gap_vs_time import plot_gap_vs_time

        png = plot_gap_vs_time(args.out / "results.csv", args.out / "gap_vs_time.png")
        print(f"plot: {png}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark command; returns the exit code (2 for bad input)."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.benchmark``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
