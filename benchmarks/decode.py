"""Decoder hot-path benchmarks: (a) full POMO rollouts, (b) the masked sampling step.

Run as ``python benchmarks/decode.py [--repeats 30] [--rollout-repeats 3] [--csv rows.csv]``.

(a) POMO multistart greedy rollout of the untrained ``pomo`` preset (6 encoder layers, d=128,
    8 heads, FFN 512; encoder + every decoding step + env transitions, no gradient) on CVRP100
    (64 instances x 100 starts) and CVRP50 (64 x 50), against the RL4CO 0.7.0 reference measured
    on this machine kind with the same setting. Untrained policies differ in how often they return
    to the depot, so the number of decoding steps is printed too: the per-step time is the
    like-for-like comparison when the step counts differ.
(b) The masked sampling step: numba kernel behind ``nco.kernels.sampling.masked_sample`` vs the
    torch reference ``sample_torch`` on a [256, 100, 101] logits array with a realistic mask;
    medians over repeats, both paths in the same run on the same inputs; the ratio column is
    ``torch reference time / kernel time`` (higher is better).

The last line is ``RESULT pomo_cvrp100_inst_per_s=... pomo_cvrp50_inst_per_s=...
sampling_speedup=...``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import torch

from nco.envs import get_problem
from nco.kernels.sampling import masked_sample, sample_torch
from nco.policies import DecodeConfig, build_policy

THREADS = 2

# Decoding configurations timed by bench_sampling: name -> keyword arguments.
SAMPLING_MODES: dict[str, dict] = {
    "greedy": {"greedy": True},
    "sampling": {},
    "sampling top_k=10": {"top_k": 10},
    "sampling top_p=0.9": {"top_p": 0.9},
}


def make_step_inputs(
    batch: int = 256, starts: int = 100, nodes: int = 101, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and mask of one mid-rollout decoding step.

    Returns
    -------
    logits : Tensor, float32, shape [batch, starts, nodes]
        Tanh-clipped scores (``10 * tanh``), as produced by attention decoders.
    mask : Tensor, bool, shape [batch, starts, nodes]
        Depot infeasible and a per-row fraction in [0.3, 0.7] of the customers already visited;
        at least one customer stays feasible in every row.
    """
    g = torch.Generator().manual_seed(seed)
    logits = 10.0 * torch.tanh(torch.randn(batch, starts, nodes, generator=g))
    visited_frac = 0.3 + 0.4 * torch.rand(batch, starts, 1, generator=g)
    mask = torch.rand(batch, starts, nodes, generator=g) >= visited_frac
    mask[..., 0] = False
    keep = torch.randint(1, nodes, (batch, starts, 1), generator=g)
    mask.scatter_(-1, keep, True)
    return logits, mask


def _median_ms(fn: Callable[[int], object], repeats: int, warmup: int) -> float:
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(warmup + i)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_sampling(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    repeats: int = 30,
    warmup: int = 3,
    modes: dict[str, dict] | None = None,
) -> dict:
    """Time one masked sampling step: numba kernel vs torch reference.

    Parameters
    ----------
    logits : Tensor, float32, shape [B, S, N] (CPU)
    mask : Tensor, bool, shape [B, S, N]
    repeats, warmup : int
        Timed and untimed calls per path and mode; each call uses a new counter/generator state.
    modes : dict, optional
        Name -> keyword arguments of ``masked_sample``; defaults to ``SAMPLING_MODES``.

    Returns
    -------
    dict
        ``rows``: list of ``{mode, kernel_ms, torch_ms, speedup}``; ``greedy_speedup`` and
        ``sampling_speedup`` (plain sampling) when those modes were timed.
    """
    modes = SAMPLING_MODES if modes is None else modes
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, kw in modes.items():
        # Each path runs its repeats back to back so that neither pays for the other's thread
        # pool spinning down; warm-up also triggers (or loads) the numba compilation.
        kernel_ms = _median_ms(
            lambda i, kw=kw: masked_sample(logits, mask, seed=1, counter=i, **kw), repeats, warmup
        )
        torch_ms = _median_ms(
            lambda i, kw=kw: sample_torch(logits, mask, generator=gen, **kw), repeats, warmup
        )
        rows.append(
            {
                "mode": name,
                "kernel_ms": kernel_ms,
                "torch_ms": torch_ms,
                "speedup": torch_ms / kernel_ms,
            }
        )
    out: dict = {"rows": rows}
    by_mode = {r["mode"]: r["speedup"] for r in rows}
    if "greedy" in by_mode:
        out["greedy_speedup"] = by_mode["greedy"]
    if "sampling" in by_mode:
        out["sampling_speedup"] = by_mode["sampling"]
    return out


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


def _print_table(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"{'mode':<22}{'numba kernel ms':>17}{'torch ref ms':>14}{'ratio vs torch':>16}")
    for r in rows:
        print(f"{r['mode']:<22}{r['kernel_ms']:>17.2f}{r['torch_ms']:>14.2f}{r['speedup']:>15.2f}x")


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        # rollout and sampling rows have different columns: write their union
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=101)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rollout-repeats", type=int, default=3)
    parser.add_argument("--rollout-batch", type=int, default=64)
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV")
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numba {numba.__version__} ({numba.get_num_threads()} threads)"
    )

    # RESULT fields, in order; other benchmarks in this script append theirs.
    result: dict[str, float] = {}

    rollouts = []
    for n in (100, 50):
        r = bench_rollout(
            n, batch_size=args.rollout_batch, repeats=args.rollout_repeats, threads=THREADS
        )
        r["rl4co_inst_per_s"] = RL4CO_REFERENCE[n]
        r["ratio_vs_rl4co"] = r["inst_per_s"] / RL4CO_REFERENCE[n]
        rollouts.append(r)
        result[f"pomo_cvrp{n}_inst_per_s"] = r["inst_per_s"]
    print("POMO multistart greedy rollout (untrained pomo preset, best of repeats)")
    print(
        f"{'setting':<24}{'steps':>7}{'s/batch':>9}{'ms/step':>9}{'inst/s':>9}{'median':>9}"
        f"{'RL4CO':>8}{'ratio':>8}"
    )
    for r in rollouts:
        name = f"pomo CVRP{r['num_loc']} {r['batch_size']}x{r['starts']}"
        print(
            f"{name:<24}{r['steps']:>7}{r['seconds']:>9.3f}{1e3 * r['seconds'] / r['steps']:>9.2f}"
            f"{r['inst_per_s']:>9.2f}{r['median_inst_per_s']:>9.2f}{r['rl4co_inst_per_s']:>8.1f}"
            f"{r['ratio_vs_rl4co']:>7.2f}x"
        )
    print()

    logits, mask = make_step_inputs(args.batch, args.starts, args.nodes)
    sampling = bench_sampling(logits, mask, repeats=args.repeats)
    _print_table(
        f"sampling step, logits [{args.batch}, {args.starts}, {args.nodes}] float32, "
        f"median of {args.repeats}",
        sampling["rows"],
    )
    if args.csv is not None:
        _write_csv(args.csv, [*rollouts, *sampling["rows"]])
    result["sampling_speedup"] = sampling["sampling_speedup"]

    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
