"""POMO rollout throughput: untrained ``pomo`` preset, multistart greedy, no gradient.

Measures encoder + all decoding steps (env transitions included) on CVRP100 (64 instances x 100
starts) and CVRP50 (64 x 50) with ``torch.set_num_threads(2)`` and compares with the published
RL4CO 0.7.0 reference for the same setting measured on this machine kind.

Usage: ``python benchmarks/rollout.py [--repeats 3] [--csv out.csv]``; the last printed line is
``RESULT pomo_cvrp100_inst_per_s=... pomo_cvrp50_inst_per_s=...``.
"""

from __future__ import annotations

import argparse
import csv
import time
from typing import Any

import torch

from nco.envs import get_problem
from nco.policies import DecodeConfig, build_policy

#: RL4CO 0.7.0 POMO multistart greedy rollout, inst/s, same setting (2 threads, batch 64).
RL4CO_REFERENCE = {100: 10.5, 50: 36.7}


def bench_rollout(
    num_loc: int = 100,
    *,
    batch_size: int = 64,
    problem: str = "cvrp",
    preset: str = "pomo",
    threads: int = 2,
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Time POMO multistart greedy rollouts.

    Parameters
    ----------
    num_loc : customers per instance (starts = num_loc).
    batch_size : instances per rollout.
    problem, preset : what to build (untrained weights, seeded).
    threads : ``torch.set_num_threads`` value.
    repeats, warmup : timed and untimed rollouts (the best timed one is reported: the others
        measure noise from other processes, not the code).
    device : torch device.

    Returns
    -------
    dict with ``inst_per_s`` (best), ``median_inst_per_s``, ``seconds`` (best rollout),
    ``steps`` (decoding steps), ``mean_cost`` and the setting.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    prob = get_problem(problem)
    policy = build_policy(preset, prob).to(device).eval()
    env = prob.make_env(num_loc=num_loc, device=device)
    td = prob.generator(num_loc=num_loc)(batch_size, seed=seed, device=device)
    cfg = DecodeConfig(strategy="multistart_greedy", select_best=True)
    times: list[float] = []
    out = None
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = policy(td, env, cfg)
            if device != "cpu":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    assert out is not None and out.actions is not None
    best = min(times)
    med = sorted(times)[len(times) // 2]
    return {
        "problem": problem,
        "num_loc": num_loc,
        "batch_size": batch_size,
        "starts": num_loc,
        "threads": threads,
        "preset": preset,
        "seconds": best,
        "inst_per_s": batch_size / best,
        "median_inst_per_s": batch_size / med,
        "steps": int(out.actions.shape[-1]),
        "mean_cost": float(-out.best_reward.mean()),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the CVRP100 and CVRP50 benchmarks and print a table with ratios to RL4CO."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = ap.parse_args(argv)
    rows = []
    for n in (100, 50):
        r = bench_rollout(n, batch_size=args.batch_size, repeats=args.repeats)
        r["rl4co_inst_per_s"] = RL4CO_REFERENCE[n]
        r["ratio_vs_rl4co"] = r["inst_per_s"] / RL4CO_REFERENCE[n]
        rows.append(r)
    print(
        f"{'setting':<24}{'steps':>7}{'s/batch':>9}{'inst/s':>9}{'median':>9}{'RL4CO':>8}{'ratio':>7}"
    )
    for r in rows:
        name = f"pomo CVRP{r['num_loc']} {r['batch_size']}x{r['starts']}"
        print(
            f"{name:<24}{r['steps']:>7}{r['seconds']:>9.3f}{r['inst_per_s']:>9.2f}"
            f"{r['median_inst_per_s']:>9.2f}{r['rl4co_inst_per_s']:>8.1f}{r['ratio_vs_rl4co']:>6.2f}x"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    r100, r50 = rows
    print(
        f"RESULT pomo_cvrp100_inst_per_s={r100['inst_per_s']:.2f} pomo_cvrp50_inst_per_s={r50['inst_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
