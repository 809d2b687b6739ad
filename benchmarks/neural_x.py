"""Shipped neural solver and hybrid on CVRPLib X instances, against the best-known solutions.

For every ``X-n*.vrp`` with at most ``--max-customers`` customers in the given folders (default:
``data/instances`` and ``../shared/data/cvrplib-x``), solve with

* ``neural x8``: the shipped checkpoint nearest in size, POMO multistart greedy, x8 augmentation;
* ``neural x8 + LS``: the same, refined by the numba local search;
* ``hybrid``: neural warm start + PyVRP with 1 s per 100 customers in total;

and print one row per instance (cost, gap to the best-known value from the ``.sol`` next to the
file) and the mean gaps. Last line: ``RESULT x_instances=K neural_x8_gap=... neural_x8_ls_gap=...
hybrid_gap=...``.

Usage: ``python benchmarks/neural_x.py [DIR ...] [--max-customers 300] [--csv rows.csv]``
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import torch

import nco
from nco.benchmark import reference_cost_from_sol

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = (ROOT / "data" / "instances", ROOT.parent / "shared" / "data" / "cvrplib-x")


def main(argv: list[str] | None = None) -> int:
    """Solve, print the table and the RESULT line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", type=Path, default=list(DEFAULT_DIRS))
    ap.add_argument("--max-customers", type=int, default=300)
    ap.add_argument("--model", default=None, help="checkpoint (default: shipped, nearest size)")
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    files: dict[str, Path] = {}
    for d in args.dirs:
        if d.is_dir():
            for f in sorted(d.glob("X-n*.vrp")):
                files.setdefault(f.stem, f)
    rows = []
    print(
        f"{'instance':<16}{'n':>5}{'BKS':>9}{'neural x8':>11}{'gap%':>7}{'+LS':>9}{'gap%':>7}"
        f"{'hybrid':>9}{'gap%':>7}{'s':>6}"
    )
    for name, path in sorted(files.items(), key=lambda kv: (nco.load(kv[1]).num_customers, kv[0])):
        inst = nco.load(path)
        if inst.num_customers > args.max_customers:
            continue
        bks = reference_cost_from_sol(path, inst)
        if not bks:
            continue
        neural = nco.solve(inst, solver="neural", model=args.model, augment=8)
        refined = nco.solve(inst, solver="neural", model=args.model, augment=8, refine=True)
        limit = inst.num_customers / 100.0
        hybrid = nco.solve(inst, solver="hybrid", model=args.model, time_limit=limit)
        row = {
            "instance": name,
            "n": inst.num_customers,
            "bks": bks,
            "model": neural.metadata.get("model"),
            "neural_x8": neural.cost,
            "neural_x8_gap": 100 * (neural.cost / bks - 1),
            "neural_x8_s": neural.runtime,
            "neural_x8_ls": refined.cost,
            "neural_x8_ls_gap": 100 * (refined.cost / bks - 1),
            "hybrid": hybrid.cost,
            "hybrid_gap": 100 * (hybrid.cost / bks - 1),
            "hybrid_limit_s": limit,
            "feasible": neural.feasible and refined.feasible and hybrid.feasible,
        }
        rows.append(row)
        print(
            f"{name:<16}{row['n']:>5}{bks:>9.0f}{neural.cost:>11.0f}{row['neural_x8_gap']:>7.2f}"
            f"{refined.cost:>9.0f}{row['neural_x8_ls_gap']:>7.2f}{hybrid.cost:>9.0f}"
            f"{row['hybrid_gap']:>7.2f}{limit:>6.1f}",
            flush=True,
        )
    if not rows:
        print("no X instances found")
        return 1
    if args.csv is not None:
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    means = {
        k: statistics.fmean(r[k] for r in rows)
        for k in ("neural_x8_gap", "neural_x8_ls_gap", "hybrid_gap")
    }
    print(
        f"mean over {len(rows)} instances: neural x8 {means['neural_x8_gap']:+.2f}%, "
        f"+LS {means['neural_x8_ls_gap']:+.2f}%, hybrid {means['hybrid_gap']:+.2f}%; "
        f"all feasible: {all(r['feasible'] for r in rows)}"
    )
    print(
        f"RESULT x_instances={len(rows)} neural_x8_gap={means['neural_x8_gap']:.2f} "
        f"neural_x8_ls_gap={means['neural_x8_ls_gap']:.2f} hybrid_gap={means['hybrid_gap']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
