"""Train a tiny policy for a few seconds, export it, and solve with it.

Run as ``python examples/train_tiny_model.py [--quick] [--out DIR]``.

The network is far too small and trained far too briefly to be good (the shipped checkpoints
took 10-56 CPU-minutes each; see their model cards): the point is the workflow. The same steps
on the command line are ``nco train ... --out RUN_DIR`` and ``nco solve FILE --solver neural
--model RUN_DIR``.

1. ``nco.train.train`` writes a run directory (``config.yaml``, ``metrics.csv``,
   ``checkpoints/last.ckpt`` and ``best.ckpt``).
2. ``export_model`` writes a slim weights-only ``.pt`` (what ``data/checkpoints`` ships).
3. ``nco.solve(..., solver="neural", model=PATH)`` solves with it; OR-Tools on the same instances for scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import nco
from nco.checkpoints import export_model, resolve_checkpoint
from nco.train import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    """Train, export, solve and compare."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short epoch (the test suite)")
    ap.add_argument("--out", type=Path, default=Path("out/train_tiny_model"), help="output folder")
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    config = TrainConfig(
        problem="cvrp",
        size=10,
        preset="pomo",
        policy={"d_model": 32, "num_layers": 2, "num_heads": 4, "d_ff": 64},
        batch_size=16,
        instances_per_epoch=32 if args.quick else 512,
        epochs=1 if args.quick else 5,
        val_size=16,
        accelerator="cpu",
    )
    run_dir = args.out / "run"
    result = train(config, run_dir, progress_bar=False)
    print(f"training {result.status}: run directory {run_dir}")

    weights = export_model(resolve_checkpoint(run_dir), args.out / "tiny-cvrp10.pt")
    policy, info = nco.load_model(weights)
    params = sum(p.numel() for p in policy.parameters())
    print(f"exported {weights} ({info['problem']}, {params:,} parameters)")

    problem = nco.get_problem("cvrp")
    td = problem.generator(num_loc=10)(3, seed=7)
    for i in range(3):
        inst = problem.to_instance(td[i : i + 1], name=f"cvrp10-{i}")
        mine = nco.solve(inst, solver="neural", model=weights)
        ref = nco.solve(inst, solver="ortools", time_limit=0.2)
        gap = 100.0 * (mine.cost / ref.cost - 1.0)
        print(
            f"{inst.name}: tiny model {mine.cost:.3f} ({'feasible' if mine.feasible else 'INFEASIBLE'}), "
            f"OR-Tools {ref.cost:.3f}, gap {gap:+.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
