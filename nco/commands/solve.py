"""``nco solve``: solve instance files with a neural, hybrid or classical solver.

Defaults, the same as ``nco.solve``'s: the ``hybrid`` solver (the shipped network's plan as
PyVRP's warm start) with 1 s per 100 nodes (at least 1 s) per instance.

Problems: TSP (.tsp), CVRP, CVRPTW (VRPLIB .vrp or Solomon .txt) and the VRP variants of
PyVRP's VRPLIB dialect (backhauls strict or mixed, open routes, distance and duration limits,
time windows, several depots with their vehicles). Prints, per instance, the cost, the gap to
the best-known cost (``--bks FILE``, else the ``bks.csv`` or the ``.sol`` beside the instance),
feasibility and
time against its limit, and writes a VRPLIB ``.sol`` (TSPLIB ``.tour``; multi-depot routes keep
their depots). ``--workers N`` solves N instances at a time, one core each; ``--executor ray``
runs them as Ray tasks (on the cluster of ``RAY_ADDRESS``, else a local Ray instance).

Solvers: pyvrp and ortools solve every problem, hgs TSP and CVRP only; neural and hybrid use
the shipped checkpoint of the instance's problem (the variants: mtvrp50). The network cannot
represent a duration limit with time windows (VEHICLES_MAX_DURATION, e.g. the MDVRPTW files):
neural refuses such files, the hybrid gives the backend the whole budget.

Examples (``data/instances`` ships in the repository; ``cvrplib-x/``, ``vrpb/``,
``vrptw-gh1000/``, ``mdvrptw/`` stand for folders of the public benchmark files)::

    nco solve data/instances/X-n101-k25.vrp --time-limit 2 --plot route.png
    nco solve data/instances/X-n101-k25.vrp --solver hgs --time-limit 10 --out X-n101-k25.sol
    nco solve my.vrp --solver neural --model runs/cvrp50-pomo --out my.sol
    nco solve cvrplib-x/*.vrp --solver pyvrp --time-limit 5 --workers 2 --out sols/
    RAY_ADDRESS=auto nco solve cvrplib-x/*.vrp --executor ray --workers 64 --out sols/
    nco solve vrpb/X-n524-50-k125.vrp --solver hybrid --time-limit 10
    nco solve vrptw-gh1000/C1_10_1.vrp --edge-weight SOLOMON --time-limit 10
    nco solve mdvrptw/PR11A.vrp --edge-weight EUC_2D --scale 1000 --time-limit 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nco import DEFAULT_SOLVER, SECONDS_PER_100_NODES
from nco.commands import guarded, standalone_main
from nco.executor import EXECUTORS, Pool

if TYPE_CHECKING:
    from nco.envs import Instance, Solution

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco solve"

def configure(p: argparse.ArgumentParser) -> None:
    """Add the solve arguments to a parser."""
    p.add_argument(
        "instances",
        nargs="+",
        type=Path,
        metavar="INSTANCE",
        help="instance files (.vrp, .tsp, Solomon .txt) of every problem: TSP, CVRP, CVRPTW "
        "and the VRP variants (VRPB, VRPMB, OVRP, VRPL, MDVRPTW, ...)",
    )
    p.add_argument(
        "--solver",
        default=DEFAULT_SOLVER,
        help=f"hybrid (neural warm start + PyVRP), neural, ortools, hgs or pyvrp (default "
        f"{DEFAULT_SOLVER}); pyvrp, ortools and hybrid solve every problem, hgs TSP and CVRP only",
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint for --solver neural/hybrid: file, run directory or shipped name "
        "(e.g. cvrp100); default: the shipped checkpoint nearest in size",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help=f"seconds per instance, for every solver; default {SECONDS_PER_100_NODES:g} s per "
        "100 nodes, at least 1 s",
    )
    p.add_argument(
        "--edge-weight",
        default=None,
        metavar="CONVENTION",
        help="distance convention replacing the VRPLIB files' EDGE_WEIGHT_TYPE, e.g. SOLOMON "
        "(one-decimal truncation) for the Gehring-Homberger files, which state EUC_2D; one of "
        "EUC_2D, CEIL_2D, ATT, GEO, MAN_2D, MAX_2D, SOLOMON, EXACT",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="VRPLIB files: multiply coordinates, times and route limits by FACTOR before the "
        "convention, e.g. 1000 with --edge-weight EUC_2D for the MDVRPTW files (the units of "
        "their best-known costs); default 1",
    )
    p.add_argument("--seed", type=int, default=0, help="solver seed; default 0")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="solution file (one instance) or folder; default: NAME.SOLVER.sol in the current folder",
    )
    p.add_argument(
        "--bks",
        type=Path,
        default=None,
        help="CSV with instance,bks columns for the gap (default: a bks.csv beside the instance, "
        "else the .sol next to it)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the routes of the solution to this image (one instance only)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="instances solved at a time (worker processes of one core each, or Ray tasks in "
        "flight); default 1",
    )
    p.add_argument(
        "--executor",
        default="process",
        choices=EXECUTORS,
        help="process (local worker processes; the default) or ray (Ray tasks on the cluster "
        'of RAY_ADDRESS, else a local Ray instance; pip install "nco[cluster]")',
    )


def add_parser(subparsers: Any) -> None:
    """Register ``solve`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "solve",
        help="solve instance files with a neural, hybrid or classical solver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _out_path(out: Path | None, inst: Instance, solver: str, single: bool) -> Path:
    from nco.envs import get_problem

    ext = get_problem(inst.problem).solution_suffix
    if out is not None and single and (out.suffix in (".sol", ".tour") and not out.is_dir()):
        return out
    folder = out if out is not None else Path(".")
    return folder / f"{inst.name}.{solver}{ext}"


def _validate(args: argparse.Namespace) -> None:
    """Errors in the arguments alone, before anything is imported or loaded."""
    if args.plot is not None and len(args.instances) > 1:
        raise ValueError(
            f"--plot: give one instance (got {len(args.instances)}); "
            "use nco plot INSTANCE SOLUTION --out PNG for each"
        )
    if args.time_limit is not None and not (0 < args.time_limit < float("inf")):
        raise ValueError(
            f"--time-limit must be a positive number of seconds, got {args.time_limit}"
        )
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not (args.scale > 0 and args.scale < float("inf")):
        raise ValueError(f"--scale must be a positive number, got {args.scale}")
    if args.out is not None and len(args.instances) > 1 and args.out.suffix in (".sol", ".tour"):
        raise ValueError(f"--out {args.out}: give a folder when solving several instances")


def _run(args: argparse.Namespace) -> int:
    _validate(args)
    parallel = args.executor != "process" or (args.workers > 1 and len(args.instances) > 1)
    # the workers start (and import the solvers) while this process loads the files
    with Pool(args.workers if parallel else 1, args.executor, preload=("nco.api",)) as pool:
        return _solve_all(args, pool)


def _solve_all(args: argparse.Namespace, pool: Pool) -> int:
    import nco.envs as E
    from nco.api import SolveTask, cached_solver, default_time_limit, run_task
    from nco.baselines import SolverError, available_solvers
    from nco.benchmark import load_options
    from nco.envs.instance import CONVENTIONS
    from nco.executor import TaskFailure, run_tasks
    from nco.references import best_known, read_reference_csv

    if args.solver not in available_solvers():
        raise ValueError(
            f"unknown solver {args.solver!r}; expected one of {', '.join(available_solvers())}"
        )
    if args.edge_weight is not None:
        args.edge_weight = args.edge_weight.upper()
        if args.edge_weight not in CONVENTIONS or args.edge_weight == "EXPLICIT":
            conv = ", ".join(c for c in CONVENTIONS if c != "EXPLICIT")
            raise ValueError(f"--edge-weight must be one of {conv}, got {args.edge_weight!r}")
    load = load_options(args.edge_weight, args.scale)
    options: dict[str, Any] = {}
    if args.model is not None:
        options["model"] = str(args.model)
    # fails here, once, if its package (or, for neural/hybrid, the checkpoint) is missing, or
    # the solver takes no --model
    solver = cached_solver(args.solver, options)
    table = read_reference_csv(args.bks) if args.bks is not None else None
    # Load everything first: a bad file stops the command before any solving starts.
    insts = [E.load(p, **load) for p in args.instances]
    for inst in insts:
        if not solver.supports(inst.problem):
            if args.model:  # the cause only: the model is for another problem
                raise ValueError(
                    f"--model {args.model} is not a {inst.problem} checkpoint ({inst.name} is a "
                    f"{inst.problem} instance)"
                )
            has_variants = E.get_problem(inst.problem).has_variants
            what = f"{inst.problem!r} ({inst.variant})" if has_variants else repr(inst.problem)
            raise ValueError(f"solver {args.solver!r} does not support {what} ({inst.name})")
    single = len(insts) == 1
    tasks = [
        SolveTask(
            args.solver,
            options,
            inst,
            default_time_limit(inst) if args.time_limit is None else float(args.time_limit),
            args.seed,
        )
        for inst in insts
    ]
    total = len(tasks)
    count = 0
    failed = 0

    def report(i: int, result: Solution | TaskFailure) -> None:
        nonlocal count, failed
        count += 1
        inst, task = insts[i], tasks[i]
        if isinstance(result, TaskFailure):
            failed += 1
            print(f"[{count}/{total}] {inst.name}: FAILED: {result}", flush=True)
            return
        sol = result
        out = sol.write(_out_path(args.out, inst, args.solver, single))
        ref = best_known(args.instances[i], inst, table=table, load=load)
        print(f"[{count}/{total}] {_report_line(sol, ref, task.time_limit)} -> {out}", flush=True)
        summary = sol.metadata.get("summary")
        if summary:
            print(f"    {sol.solver}: {summary}", flush=True)
        if not sol.feasible:
            failed += 1
        if args.plot is not None:
            from nco.plotting.routes import save_route_plot

            print(f"plot -> {save_route_plot(sol, args.plot)}")

    run_tasks(run_task, tasks, pool=pool, on_result=report, catch=(SolverError,))
    return 1 if failed else 0


def _report_line(sol: Solution, reference: float | None, time_limit: float | None) -> str:
    """``NAME: cost C gap +G% (best known R), feasible, T s of L s``: no gap for an infeasible
    plan, whose cost says nothing."""
    from nco.envs.io import format_cost
    from nco.references import PRINT_DIGITS, format_gap

    gap = ""
    if reference and sol.feasible:
        best = format_cost(reference, PRINT_DIGITS)
        gap = f" gap {format_gap(sol.cost, reference)} (best known {best})"
    feas = "feasible" if sol.feasible else f"INFEASIBLE: {violation_summary(sol)}"
    limit = f" of {time_limit:g} s" if time_limit is not None else ""
    cost = format_cost(sol.cost, PRINT_DIGITS)
    return f"{sol.instance.name}: cost {cost}{gap}, {feas}, {sol.runtime:.3f} s{limit}"


def violation_summary(sol: Solution, first: int = 3) -> str:
    """The first ``first`` violations of a plan, then how many there are in all."""
    shown = "; ".join(str(v) for v in sol.violations[:first])
    more = len(sol.violations) - first
    return shown + (f"; ... ({len(sol.violations)} in all)" if more > 0 else "")


def run(args: argparse.Namespace) -> int:
    """Run the solve command; 0 when every instance got a feasible solution, 1 when some did
    not, 2 for bad input."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.solve``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
