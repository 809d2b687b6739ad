"""Cross-check the plans of an ``nco benchmark`` run with PyVRP's own feasibility test.

Every ``.sol`` of the run (``results.csv`` ``solution_file``) is read back against its instance
file, checked by nco's independent checker and by PyVRP's ``Solution.is_feasible()`` on the
``ProblemData`` nco's PyVRP solver builds for it (the file's fleet, its depots and their
vehicles, backhauls, duration limits, windows); the table says, per solver, how many plans each
accepts and on how many the two verdicts agree. Instances PyVRP cannot model are counted under
``not modelled``. Read the files with the benchmark's conventions (``--edge-weight``,
``--scale``).

    python benchmarks/pyvrp_crosscheck.py runs/bench-vrpb
    python benchmarks/pyvrp_crosscheck.py runs/bench-mdvrptw --edge-weight EUC_2D --scale 1000
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from nco.baselines import UnsupportedProblemError, get_solver
from nco.envs import Instance
from nco.envs.io import load, load_solution


def main() -> None:
    """Read the run directory, check every plan both ways and print one row per solver."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="an nco benchmark --out directory")
    ap.add_argument("--edge-weight", default=None, help="as given to nco benchmark")
    ap.add_argument("--scale", type=float, default=1.0, help="as given to nco benchmark")
    args = ap.parse_args()
    pyvrp = get_solver("pyvrp")
    rows = list(csv.DictReader((args.run / "results.csv").open()))
    # solver -> [plans, nco feasible, pyvrp feasible, agree, not modelled]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    disagree: list[str] = []
    cache: dict[str, Instance] = {}
    for row in rows:
        if not row.get("solution_file"):
            continue
        inst_file = row["instance_file"]
        if inst_file not in cache:
            cache[inst_file] = load(inst_file, edge_weight=args.edge_weight, scale=args.scale)
        inst = cache[inst_file]
        sol = load_solution(args.run / row["solution_file"], inst)
        c = counts[row["solver"]]
        c[0] += 1
        c[1] += sol.feasible
        try:
            problem, meta = pyvrp.problem_data(inst)
        except UnsupportedProblemError:
            c[4] += 1
            continue
        theirs = bool(
            pyvrp.pyvrp_solution(problem, meta, inst, sol.routes, sol.route_depots).is_feasible()
        )
        c[2] += theirs
        c[3] += theirs == sol.feasible
        if theirs != sol.feasible:
            disagree.append(
                f"{row['instance']} {row['solver']}: nco {sol.feasible}, pyvrp {theirs}"
            )
    print(f"run {args.run}: {sum(c[0] for c in counts.values())} plans")
    print(
        "| solver | plans | nco checker feasible | PyVRP is_feasible | verdicts agree | not modelled |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for solver, (n, ours, theirs, agree, skipped) in sorted(counts.items()):
        print(f"| {solver} | {n} | {ours} | {theirs} | {agree} | {skipped} |")
    for line in disagree:
        print("disagree:", line)


if __name__ == "__main__":
    main()
