"""Learning curves on the CPU for a fixed time budget: ``am`` on TSP20 and ``pomo`` on CVRP20.

Each run is a real ``nco train`` run (:func:`nco.train.train`, full-size presets, default
optimiser settings, lr 1e-4 as in the papers) stopped by ``max_time``. Per epoch it prints the greedy
validation cost (``val/cost``: single-start greedy for ``am``, multistart greedy for ``pomo``)
on a fixed validation set (200 instances, seed 4321) and the gap to a reference computed in the
same run: a nearest-neighbour tour (TSP: from every start city, best kept; CVRP: nearest
feasible customer, back to the depot when none fits), or OR-Tools with ``--ortools SECONDS``
per instance when ``nco.baselines.get_solver("ortools")`` imports.

Usage: ``python benchmarks/learning_curve.py [--budget 300] [--out DIR] [--ortools 0]``; writes
DIR/<setting>/ (the run directories, with metrics.csv and training.png) and DIR/curves.csv, and
prints ``RESULT am_tsp20_gap=...% pomo_cvrp20_gap=...%`` (final gaps to the reference).
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from nco.envs import get_problem
from nco.train import TrainConfig, load_validation_set, train

SETTINGS: dict[str, dict[str, Any]] = {
    "am_tsp20": {
        "problem": "tsp",
        "size": 20,
        "preset": "am",
        "batch_size": 128,
        "instances_per_epoch": 128 * 20,
    },
    "pomo_cvrp20": {
        "problem": "cvrp",
        "size": 20,
        "preset": "pomo",
        "batch_size": 32,
        "instances_per_epoch": 32 * 20,
    },
}
VAL_SIZE = 200


def nearest_neighbour_costs(problem: str, td: Any) -> torch.Tensor:
    """Nearest-neighbour reference costs [B] (instance units = unit square) for TSP or CVRP."""
    prob = get_problem(problem)
    locs = td["locs"].double()
    b, n, _ = locs.shape
    dist = torch.cdist(locs, locs)
    if not prob.has_depot:
        best = torch.full((b,), math.inf, dtype=torch.float64)
        for start in range(n):
            visited = torch.zeros(b, n, dtype=torch.bool)
            cur = torch.full((b,), start)
            visited[torch.arange(b), cur] = True
            length = torch.zeros(b, dtype=torch.float64)
            for _ in range(n - 1):
                d = dist[torch.arange(b), cur].masked_fill(visited, math.inf)
                nxt = d.argmin(1)
                length += d[torch.arange(b), nxt]
                visited[torch.arange(b), nxt] = True
                cur = nxt
            best = torch.minimum(best, length + dist[torch.arange(b), cur, torch.full((b,), start)])
        return best
    demand = td["demand"].double()
    costs = torch.zeros(b, dtype=torch.float64)
    for i in range(b):
        left, cur, load, total = set(range(1, n)), 0, 0.0, 0.0
        while left:
            fits = [j for j in left if load + float(demand[i, j]) <= 1 + 1e-9]
            if not fits:
                total += float(dist[i, cur, 0])
                cur, load = 0, 0.0
                continue
            j = min(fits, key=lambda k: float(dist[i, cur, k]))
            total += float(dist[i, cur, j])
            load += float(demand[i, j])
            left.discard(j)
            cur = j
        costs[i] = total + float(dist[i, cur, 0])
    return costs


def ortools_costs(problem: str, td: Any, seconds: float) -> torch.Tensor:
    """OR-Tools costs [B] in the normalised units of ``td`` (raises ImportError when unavailable)."""
    from nco.baselines import get_solver

    solver = get_solver("ortools")
    prob = get_problem(problem)
    out = []
    for i in range(td.batch_size[0]):
        inst = prob.to_instance(td[i : i + 1], name=f"val{i}")
        sol = solver.solve(inst, time_limit=seconds, seed=0)
        # to_instance keeps the unit-square scale for generated data (scale 1).
        out.append(float(sol.cost))
    return torch.tensor(out, dtype=torch.float64)


def run_setting(name: str, budget: float, out_dir: Path, ortools: float) -> list[dict[str, Any]]:
    """Train one setting for ``budget`` seconds; per-epoch rows of val cost and gap."""
    s = SETTINGS[name]
    cfg = TrainConfig(
        **s,
        epochs=10_000,
        val_size=VAL_SIZE,
        max_time=budget,
        accelerator="cpu",
        log_every=10,
        checkpoint_every=10**6,
    )
    val = load_validation_set(cfg)
    ref_name = "nearest-neighbour"
    ref = nearest_neighbour_costs(cfg.problem, val)
    if ortools > 0:
        try:
            ref, ref_name = ortools_costs(cfg.problem, val, ortools), f"OR-Tools {ortools:g}s"
        except ImportError as err:
            print(f"OR-Tools unavailable ({err}); using nearest neighbour")
    run = out_dir / name
    shutil.rmtree(run, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_csv = out_dir / f"{name}_reference.csv"
    with ref_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "cost"])
        w.writerows(enumerate(ref.tolist()))
    cfg = cfg.replace(val_reference=str(ref_csv))
    t0 = time.time()
    result = train(cfg, run, progress_bar=False)
    wall = time.time() - t0
    from nco.plotting.training import plot_training

    plot_training(run / "metrics.csv", run / "training.png")
    with (run / "metrics.csv").open(newline="") as fh:
        metric_rows = [r for r in csv.DictReader(fh) if r.get("val/cost")]
    rows = [
        {
            "setting": name,
            "epoch": int(r["epoch"]),
            "step": int(r["step"]) + 1,
            "val_cost": float(r["val/cost"]),
            "gap_pct": float(r["val/gap"]),
            "reference": ref_name,
            "reference_cost": float(ref.mean()),
        }
        for r in metric_rows
    ]
    print(
        f"\n{name}: {result.global_step} steps, {len(rows)} epochs in {wall:.0f} s; reference {ref_name} mean cost {float(ref.mean()):.4f}"
    )
    print(f"{'epoch':>6}{'steps':>7}{'val cost':>10}{'gap %':>9}")
    for r in rows:
        print(f"{r['epoch']:>6}{r['step']:>7}{r['val_cost']:>10.4f}{r['gap_pct']:>9.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--budget", type=float, default=300.0, help="training seconds per setting (default 300)"
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/learning_curve"))
    p.add_argument(
        "--ortools",
        type=float,
        default=0.0,
        help="OR-Tools seconds per validation instance (0 = nearest neighbour)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help="comma-separated subset of " + ", ".join(SETTINGS),
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in args.settings.split(","):
        rows += run_setting(name, args.budget, args.out, args.ortools)
    with (args.out / "curves.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    final = {}
    for r in rows:
        final[r["setting"]] = r["gap_pct"]
    print("RESULT " + " ".join(f"{k}_gap={v:.2f}%" for k, v in final.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
