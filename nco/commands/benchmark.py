"""``nco benchmark``: classical and neural solvers on a folder of instances or a generated set.

Examples (``cvrplib-x/`` stands for a folder of CVRPLib X files; ``data/instances`` ships a
few instances of each kind)::

    nco benchmark data/instances --solvers pyvrp,ortools --time-limits 1 --out runs/shipped
    nco benchmark cvrplib-x --solvers ortools,hgs,pyvrp --time-limits 1,10 --out runs/x
    nco benchmark cvrplib-x --solvers neural,hybrid,pyvrp --model cvrp100 --out runs/xn
    nco benchmark --problem cvrp --size 100 --num 100 --seed 1234 --solvers hgs,pyvrp \\
        --time-limits 1 --reference pyvrp:5 --workers 2 --out runs/cvrp100
    RAY_ADDRESS=auto nco benchmark cvrplib-x --executor ray --workers 64 --out runs/x

Variant files with their sets' distance conventions (Gehring-Homberger: one-decimal
truncation; MDVRPTW: PyVRP's ``round_func="exact"``, i.e. EUC_2D on coordinates x 1000)::

    nco benchmark vrptw-gh1000 --edge-weight SOLOMON --solvers pyvrp,ortools --time-per-100 1 --out runs/gh
    nco benchmark mdvrptw --edge-weight EUC_2D --scale 1000 --solvers pyvrp --out runs/md

Multi-variant VRP: the same ``--num`` instances in every variant of ``--variants``, written as
files (``instances/mtvrp50-VRPTW-uniform-s1234-0007.vrp``), solved by the same runner, plus the
per-variant table (``table.txt``: every variant's mean cost per reference solver and each model's
mean gap to the best reference plan, averaged over trained, zero-shot and M/MD variants).
A time-independent solver (``neural`` without ``+ls``) runs once per instance without a time
limit and is reported at every budget that run fits in (rows with that ``note``); budgets it
does not fit in are run with their limit. Several checkpoints: ``--model A,B`` turns ``neural`` into the labels ``neural@A`` and
``neural@B`` (rows keyed by label, each resumed on its own; ``neural@NAME`` in ``--solvers``
works too)::

    nco benchmark --problem mtvrp --size 50 --num 1000 --variants core \\
        --solvers pyvrp,ortools,neural --model mtvrp50,mtvrp50moe --time-limits 0.25 --out runs/mtvrp50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main
from nco.executor import EXECUTORS

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco benchmark"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the benchmark arguments to a parser."""
    p.add_argument(
        "dir", nargs="?", type=Path, help="folder of instance files (.vrp, .tsp, Solomon .txt)"
    )
    g = p.add_argument_group("generated set (instead of DIR)")
    g.add_argument(
        "--problem",
        help="tsp, cvrp, cvrptw or mtvrp (the VRP variants: backhauls, open routes, route "
        "limits, time windows, several depots; see --variants)",
    )
    g.add_argument(
        "--variants",
        default=None,
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
        help="comma-separated solver labels (ortools, hgs, pyvrp, neural, hybrid; NAME+ls adds "
        "the local search, e.g. neural+ls; NAME@MODEL names a checkpoint, e.g. neural@mtvrp50); "
        "default ortools,hgs,pyvrp",
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint for the neural and hybrid solvers: a file, a run directory or a shipped "
        "name (e.g. cvrp100); default: the shipped checkpoint nearest in size per instance. "
        "A comma-separated list benchmarks each: neural becomes neural@NAME per checkpoint "
        "(NAME: the run directory's name or the file's stem)",
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
        help="runs at a time (worker processes of one core each, or Ray tasks in flight); "
        "default 1",
    )
    p.add_argument(
        "--executor",
        default="process",
        choices=EXECUTORS,
        help="process (local worker processes; the default) or ray (Ray tasks on the cluster "
        'of RAY_ADDRESS, else a local Ray instance; pip install "nco[cluster]"); the rows are '
        "the same",
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
        "--edge-weight",
        default=None,
        metavar="CONVENTION",
        help="DIR only: distance convention replacing the files' EDGE_WEIGHT_TYPE, e.g. SOLOMON "
        "(one-decimal truncation) for the Gehring-Homberger files (see nco.envs.load)",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="DIR only: factor on coordinates, times and route limits before the convention, "
        "e.g. 1000 with --edge-weight EUC_2D for the MDVRPTW files; default 1",
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


def _labels(solvers: list[str], models: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Solver labels and their options: one ``--model`` goes to every plain neural/hybrid label;
    several turn each into ``NAME@LABEL`` per checkpoint."""
    from nco.benchmark import MODEL_SEP, MODEL_SOLVERS, model_label, solver_spec

    plain = [s for s in solvers if solver_spec(s)[0] in MODEL_SOLVERS and MODEL_SEP not in s]
    if models and not plain:
        raise ValueError(
            "--model applies to the neural and hybrid solvers, and neither is in --solvers "
            "without a model of its own"
        )
    if len(models) <= 1:
        return solvers, {s: {"model": models[0]} for s in plain} if models else {}
    names = [model_label(m) for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"--model: checkpoints need distinct names, got {', '.join(names)}")
    labels: list[str] = []
    options: dict[str, dict[str, Any]] = {}
    for s in solvers:
        if s not in plain:
            labels.append(s)
            continue
        for m, name in zip(models, names):
            label = f"{s}{MODEL_SEP}{name}"
            labels.append(label)
            options[label] = {"model": m}
    return labels, options


def _trained(
    labels: list[str], options: dict[str, dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, tuple[str, ...]]:
    """{label: the training variants of its checkpoint} for the labels with a known model: the
    one named for the label, else the one its rows were all solved with (``model`` column,
    the checkpoint picked by size)."""
    from nco.benchmark import solver_spec, trained_variants

    out = {}
    for s in labels:
        spec = {**solver_spec(s)[1], **options.get(s, {})}.get("model")
        if spec is None:
            used = {r.get("model") or "" for r in rows if r["solver"] == s}
            if len(used) == 1 and (only := used.pop()) and Path(only).is_file():
                spec = only
        if spec is not None:
            got = trained_variants(spec)
            if got is not None:
                out[s] = got
    return out


def _run(args: argparse.Namespace) -> int:
    from nco.benchmark import (
        collect_instances,
        format_budget_tables,
        format_summary,
        generate_instances,
        load_options,
        parse_variants,
        run_benchmark,
        solver_spec,
        summarize,
        variant_tables,
    )

    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    time_limits = _floats(args.time_limits, "--time-limits")
    per_100 = _floats(args.time_per_100, "--time-per-100") if args.time_per_100 else None
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.out is None:
        raise ValueError("--out RUN_DIR is required")
    if (args.dir is None) == (args.problem is None):
        raise ValueError(
            "give either an instance folder DIR or --problem (with --size/--num) for a generated set"
        )
    if args.dir is None and (args.edge_weight is not None or args.scale != 1.0):
        raise ValueError(
            "--edge-weight and --scale apply to the files of DIR, not to a generated set"
        )
    if args.dir is not None and args.variants is not None:
        raise ValueError("--variants applies to a generated mtvrp set (--problem mtvrp)")
    from nco.baselines import available_solvers

    bad = [s for s in solvers if solver_spec(s)[0] not in available_solvers()]
    if bad or not solvers:
        raise ValueError(
            f"unknown solver(s) {', '.join(bad) or '(none)'}; expected some of {', '.join(available_solvers())}"
        )
    models = [m.strip() for m in (args.model or "").split(",") if m.strip()]
    labels, options = _labels(solvers, models)
    load = load_options(args.edge_weight, args.scale)
    if args.dir is not None:
        if not args.dir.exists():
            raise FileNotFoundError(f"{args.dir}: no such directory")
        files = collect_instances(
            args.dir, max_customers=args.max_customers, first=args.first, **load
        )
    else:
        files = generate_instances(
            args.problem,
            args.size,
            args.num,
            args.seed,
            args.out / "instances",
            distribution=args.distribution,
            variants=parse_variants(args.variants) if args.variants is not None else None,
        )
        if args.first is not None:
            files = files[: args.first]
    reference = args.reference
    if reference is None and args.dir is None:
        reference = "none"  # generated instances have no .sol files
    rows = run_benchmark(
        files,
        labels,
        time_limits,
        args.out,
        seed=args.seed,
        workers=args.workers,
        reference=reference,
        solver_options=options,
        per_100=per_100,
        load_options=load,
        executor=args.executor,
    )
    summary = summarize(rows)
    print(format_summary(summary))
    from nco.envs.io import atomic_write

    with atomic_write(args.out / "summary.md") as fh:
        fh.write(format_budget_tables(summary))
    written = [args.out / "results.csv", args.out / "summary.md"]
    from nco.envs import get_problem

    if any(get_problem(r["problem"]).has_variants for r in rows):
        tables = variant_tables(rows, trained=_trained(labels, options, rows))
        text = "\n\n".join(t.text for t in tables)
        print(text)
        with atomic_write(args.out / "table.txt") as fh:
            fh.write(text + "\n")
        written.append(args.out / "table.txt")
    print(f"results: {', '.join(map(str, written))}")
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
