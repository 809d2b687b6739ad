"""Training throughput (instances/s) of ``nco train`` on the CPU, against RL4CO 0.7.0.

Two settings, full-size presets, ``torch.set_num_threads(2)``, float32, a Lightning ``Trainer``
running the real :class:`~nco.train.REINFORCEModule` (generation, rollout, baseline, backward,
Adam, gradient clipping; no validation, no logging, no checkpoints):

* ``pomo`` on CVRP50: batch 64, 50 starts (multistart sampling), shared baseline;
* ``am`` on TSP50: batch 512 (RL4CO's AM default), sampling, greedy rollout baseline (the frozen
  policy decodes every batch greedily, as in RL4CO).

The reference numbers are RL4CO 0.7.0 measured on this machine kind with the same setting
(POMO CVRP50 21.4 inst/s, AM TSP50 108 inst/s). Each step's time is measured between
``on_train_batch_start`` and ``on_train_batch_end`` after ``--warmup`` untimed steps; the median
is reported (the best is printed too: the spread is other processes' noise on a shared machine).

Usage: ``python benchmarks/train_throughput.py [--steps 3] [--warmup 1] [--csv out.csv]``; the last
line is ``RESULT pomo_cvrp50_train_inst_per_s=... am_tsp50_train_inst_per_s=... ratio_vs_rl4co=...``
(the ratio is the geometric mean of the two ratios).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from nco.train import REINFORCEModule, TrainConfig

#: RL4CO 0.7.0 training throughput on this machine kind, inst/s (2 threads, float32).
RL4CO_REFERENCE = {"pomo_cvrp50": 21.4, "am_tsp50": 108.0}

SETTINGS: dict[str, dict[str, Any]] = {
    "pomo_cvrp50": {
        "problem": "cvrp",
        "size": 50,
        "preset": "pomo",
        "batch_size": 64,
        "num_starts": 50,
    },
    "am_tsp50": {
        "problem": "tsp",
        "size": 50,
        "preset": "am",
        "batch_size": 512,
        "baseline": "rollout",
    },
}


class _StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.times.append(time.perf_counter() - self._t)


def bench_training(
    name: str, *, steps: int = 3, warmup: int = 1, threads: int = 2
) -> dict[str, Any]:
    """Time ``warmup + steps`` training steps of setting ``name`` (see :data:`SETTINGS`)."""
    torch.set_num_threads(threads)
    s = SETTINGS[name]
    cfg = TrainConfig(
        **s,
        instances_per_epoch=s["batch_size"] * (steps + warmup),
        epochs=1,
        val_size=1,
        bl_eval_size=1,
        accelerator="cpu",
        log_every=10**6,
    )
    module = REINFORCEModule(cfg)
    timer = _StepTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=cfg.grad_clip,
        callbacks=[timer],
        num_sanity_val_steps=0,
    )
    trainer.fit(module)
    timed = timer.times[warmup:]
    rates = [cfg.batch_size / t for t in timed]
    return {
        "setting": name,
        "batch_size": cfg.batch_size,
        "steps": len(timed),
        "median_s_per_step": statistics.median(timed),
        "inst_per_s": statistics.median(rates),
        "best_inst_per_s": max(rates),
        "rl4co_inst_per_s": RL4CO_REFERENCE[name],
        "ratio_vs_rl4co": statistics.median(rates) / RL4CO_REFERENCE[name],
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--csv", default=None, help="also write the table as CSV")
    args = p.parse_args(argv)
    rows = [
        bench_training(name, steps=args.steps, warmup=args.warmup, threads=args.threads)
        for name in SETTINGS
    ]
    print(
        f"\n{'setting':<14}{'batch':>7}{'s/step':>9}{'inst/s':>9}{'best':>9}{'RL4CO':>9}{'ratio':>8}"
    )
    for r in rows:
        print(
            f"{r['setting']:<14}{r['batch_size']:>7}{r['median_s_per_step']:>9.2f}{r['inst_per_s']:>9.1f}{r['best_inst_per_s']:>9.1f}{r['rl4co_inst_per_s']:>9.1f}{r['ratio_vs_rl4co']:>8.2f}"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    ratio = math.exp(sum(math.log(r["ratio_vs_rl4co"]) for r in rows) / len(rows))
    by = {r["setting"]: r for r in rows}
    print(
        f"RESULT pomo_cvrp50_train_inst_per_s={by['pomo_cvrp50']['inst_per_s']:.1f} am_tsp50_train_inst_per_s={by['am_tsp50']['inst_per_s']:.1f} ratio_vs_rl4co={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
