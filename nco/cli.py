"""The ``nco`` command line.

Every subcommand turns bad input (a malformed file, an unknown option value) into one line on
stderr and exit code 2, with no traceback and no partial output file.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from nco import __version__


class UsageError(Exception):
    """Bad command-line input; reported as one line and exit code 2."""


# ----------------------------------------------------------------------------- evaluate
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="recompute the cost of a solution file and check it")
    p.add_argument("instance", type=Path, help="instance file (.vrp, .tsp, Solomon .txt)")
    p.add_argument("solution", type=Path, help="solution file (VRPLIB .sol or TSPLIB .tour)")
    p.set_defaults(func=_run_evaluate)


def _stated_cost_differs(stated: str, cost: float) -> bool:
    """Whether a solution file's stated cost disagrees with the recomputed one beyond the
    digits it is written with (``Cost 827.3`` matches 827.2999...; ``Cost 27591`` does not
    match 27592)."""
    try:
        value = float(stated)
    except ValueError:
        return True
    if not math.isfinite(value) or not math.isfinite(cost):
        return value != cost
    digits = len(stated.partition(".")[2]) if "e" not in stated.lower() else 9
    return abs(value - cost) > 0.5 * 10.0**-digits + 1e-9 * abs(cost)


def _run_evaluate(args: argparse.Namespace) -> int:
    from nco.envs import Solution, load, read_solution
    from nco.envs.io import format_cost, read_stated_cost
    from nco.references import PRINT_DIGITS, format_gap, reference_beside

    def cost_text(cost: float) -> str:
        return format_cost(cost, PRINT_DIGITS)

    inst = load(args.instance)
    routes = read_solution(args.solution, inst)
    sol = Solution.from_routes(inst, routes, solver=f"file:{args.solution.name}")
    what = "customers" if inst.has_depot else "cities"
    print(
        f"instance  {inst.name} ({inst.problem}, {inst.num_customers} {what}, {inst.edge_weight} distances)"
    )
    print(f"routes    {len(sol.routes)}")
    print(f"cost      {cost_text(sol.cost)}")
    stated = read_stated_cost(args.solution)
    if stated is not None and _stated_cost_differs(stated, sol.cost):
        print(f"note      stated cost {stated} differs from recomputed {cost_text(sol.cost)}")
    # the solution being evaluated may be the .sol beside the instance: only the table counts
    bks = reference_beside(args.instance, inst.name)
    # A gap compares plans that are both allowed; an infeasible plan's cost says nothing.
    if bks and sol.feasible:
        print(f"gap       {format_gap(sol.cost, bks, 3)} to best-known {cost_text(bks)}")
    if sol.feasible:
        print("feasible")
        return 0
    n = len(sol.violations)
    print(f"INFEASIBLE: {n} violation{'' if n == 1 else 's'}")
    for v in sol.violations:
        print(f"  - {v}")
    return 1


# ----------------------------------------------------------------------------- generate
def _add_generate(sub: argparse._SubParsersAction) -> None:
    # Choices are validated when the command runs, so building the parser never imports torch.
    p = sub.add_parser("generate", help="write generated instances as files plus a tensor dataset")
    p.add_argument(
        "--problem", required=True, help="tsp, cvrp, cvrptw or mtvrp (the VRP variants)"
    )
    p.add_argument("--size", type=int, required=True, help="customers (VRPs) or cities (TSP)")
    p.add_argument("--num", type=int, required=True, help="number of instances")
    p.add_argument(
        "--seed",
        type=int,
        default=1234,
        help="seed of the generator: the same seed, size and distribution give the same "
        "instances (default 1234)",
    )
    p.add_argument(
        "--distribution",
        default="uniform",
        help="uniform, clustered or mixed; cvrp also uchoa (X-like, Uchoa et al. 2017), cvrptw "
        "also solomon (the six Solomon classes), mtvrp also vrpb (X-like VRPB, Queiroga et al. "
        "2020) and mdvrptw (multi-depot VRPTW with a duration limit, Cordeau/Vidal-like)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from nco.envs import get_problem, save_dataset, write_instance

    if args.size < 1 or args.num < 1:
        raise UsageError("--size and --num must be positive integers")
    if args.seed < 0:
        raise UsageError("--seed must be a non-negative integer")
    problem = get_problem(args.problem)
    try:
        gen = problem.generator(num_loc=args.size, distribution=args.distribution)
    except ValueError as err:
        raise UsageError(str(err)) from err
    td = gen(args.num, seed=args.seed)
    stem = f"{problem.name}{args.size}_{args.distribution}_seed{args.seed}"
    ext = problem.instance_suffix
    out: Path = args.out
    width = max(4, len(str(args.num - 1)))
    written: list[Path] = []
    try:
        for i in range(args.num):
            inst = problem.to_instance(td[i : i + 1], name=f"{stem}_{i:0{width}d}")
            written.append(write_instance(inst, out / f"{inst.name}{ext}"))
        written.append(
            save_dataset(
                out / f"{stem}.pt",
                problem.name,
                td,
                seed=args.seed,
                size=args.size,
                distribution=args.distribution,
            )
        )
    except BaseException:
        # An interrupted generation must not leave a set that looks complete.
        for f in written:
            f.unlink(missing_ok=True)
        raise
    print(
        f"wrote {args.num} {problem.name} instances ({args.distribution}, {args.size} {'customers' if problem.has_depot else 'cities'}, seed {args.seed}) to {out}/"
    )
    print(f"tensor dataset: {out / (stem + '.pt')}")
    return 0


# ----------------------------------------------------------------------------- main
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_generate, _add_evaluate]


#: Subcommands that live in their own module under ``nco.commands`` (command -> module, help
#: line); each module has ``add_parser(subparsers)`` and ``run(args) -> int``. The help line is
#: repeated here so that ``nco --help`` imports no command module: it lists every command from
#: this table and builds only the parser of the command being run (a test keeps both in step).
#: The parsers of ``solve`` and ``train`` import neither torch nor lightning either, so their
#: help screens start in well under a second too (``benchmarks/cli_startup.py``).
_COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "solve": ("solve", "solve instance files with a neural, hybrid or classical solver"),
    "benchmark": ("benchmark", "benchmark classical and neural solvers"),
    "train": ("train", "train a policy with REINFORCE"),
    "plot-training": ("plot_training", "plot the training curves of a run"),
    "plot": ("plot", "plot the routes of solution files"),
    "plot-experts": (
        "plot_experts",
        "plot the expert load per variant of a mixture-of-experts checkpoint",
    ),
}


def _add_module_commands(sub: argparse._SubParsersAction, full: Collection[str] | None) -> None:
    import importlib

    for command, (name, help_text) in _COMMAND_MODULES.items():
        if full is not None and command not in full:
            sub.add_parser(command, help=help_text)
            continue
        module = importlib.import_module(f"nco.commands.{name}")
        before = set(sub.choices)
        module.add_parser(sub)
        for new in set(sub.choices) - before:
            if sub.choices[new].get_default("func") is None:
                sub.choices[new].set_defaults(func=module.run)


def build_parser(full: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the ``nco`` command.

    Parameters
    ----------
    full : the subcommands whose own arguments are added (None = all); the others are listed
        with their help line only, which keeps ``nco --help`` from importing torch.
    """
    parser = argparse.ArgumentParser(
        prog="nco", description="Neural combinatorial optimization for vehicle routing."
    )
    parser.add_argument("--version", action="version", version=f"nco {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    _add_module_commands(sub, full)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on a command line (the top level takes no option values)."""
    return next((tok for tok in argv if not tok.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nco`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _requested_command(argv)
    parser = build_parser(full=() if command is None else (command,))
    args = parser.parse_args(argv)
    try:
        func = args.func if hasattr(args, "func") else None
        if func is None:
            parser.error("missing command")
        return int(func(args) or 0)
    except (UsageError, OSError, ValueError) as err:
        # Bad files (InstanceError is a ValueError) and library validation errors name the
        # offending value; show them without a traceback. Nothing is imported for this check:
        # a command that starts workers does so before it loads torch itself.
        print(f"nco {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nco {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
