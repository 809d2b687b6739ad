"""Benchmark: forward+backward of MoE layers against a dense FFN of the same hidden size.

Times ``MoE(k=1, E=4)`` and ``MoE(k=2, E=4)`` (top-k router, d=128, h=512) against
``FFN(d=128, h=512)`` on ``[64, 101, 128]`` tokens (64 instances of 100 customers + depot) with
2 torch threads, all measured in the same run (interleaved rounds). Prints a table with ratios
against the dense FFN (fastest run of each model; medians alongside, they suffer more from a
shared machine), writes a CSV to ``--csv`` when given, and ends with one line::

    RESULT moe_k1_vs_dense=<ratio> moe_k2_vs_dense=<ratio>

Run: ``python benchmarks/moe.py [--repeats 30] [--csv out.csv]``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable

import torch

from nco.policies.moe import FFN, MoE, MoEConfig


def _time(step: Callable[[], None], repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=str, default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, h, shape = 128, 512, (64, 101, 128)
    x = torch.randn(*shape)

    dense = FFN(d, h)
    models: dict[str, torch.nn.Module] = {
        "dense_ffn": dense,
        "moe_k1": MoE(d, h, MoEConfig(num_experts=4, k=1, router="topk")),
        "moe_k2": MoE(d, h, MoEConfig(num_experts=4, k=2, router="topk")),
    }

    def make_step(name: str, model: torch.nn.Module) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            if name == "dense_ffn":
                loss = model(x).square().mean()
            else:
                y, stats = model(x)
                loss = y.square().mean() + 0.01 * stats.aux_loss
            loss.backward()

        return step

    # interleave the measurements so that drift in machine load hits all models alike
    samples: dict[str, list[float]] = {name: [] for name in models}
    steps = {name: make_step(name, m) for name, m in models.items()}
    for step in steps.values():
        _time(step, 0, warmup=5)
    for _ in range(args.repeats):
        for name, step in steps.items():
            samples[name] += _time(step, 1, warmup=0)

    # the machine may be shared: the ratios use each model's fastest run (least disturbed);
    # medians are printed alongside
    best = {name: min(ts) for name, ts in samples.items()}
    median = {name: statistics.median(ts) for name, ts in samples.items()}
    rows = []
    print(f"tokens={shape} d={d} h={h} E=4 threads={args.threads} repeats={args.repeats}")
    print(f"{'model':<12} {'min ms':>10} {'median ms':>10} {'vs dense':>9} {'median vs':>10}")
    for name in samples:
        ratio = best[name] / best["dense_ffn"]
        mratio = median[name] / median["dense_ffn"]
        rows.append((name, best[name] * 1e3, median[name] * 1e3, ratio, mratio))
        print(
            f"{name:<12} {best[name] * 1e3:>10.2f} {median[name] * 1e3:>10.2f} "
            f"{ratio:>9.2f} {mratio:>10.2f}"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["model", "min_ms", "median_ms", "ratio_vs_dense", "median_ratio"])
            writer.writerows(rows)
    print(
        f"RESULT moe_k1_vs_dense={best['moe_k1'] / best['dense_ffn']:.2f} "
        f"moe_k2_vs_dense={best['moe_k2'] / best['dense_ffn']:.2f}"
    )


if __name__ == "__main__":
    main()
