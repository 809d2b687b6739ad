"""Measure a trained checkpoint on a fixed test set and write its model card (and shipped copy).

The test set and its reference are an ``nco benchmark`` run directory on a generated set (e.g.
``nco benchmark --problem cvrp --size 50 --num 100 --seed 1234 --solvers hgs --time-limits 1
--reference none --out runs/ref-cvrp50``): its ``instances/`` are decoded here and its
``results.csv`` rows of ``--ref-solver`` at ``--ref-limit`` seconds are the reference costs.

Rows of the card: greedy (one rollout), POMO multistart greedy, multistart x8 augmentation, and
x8 followed by the numba local search (``refine``); mean cost, mean per-instance gap to the
reference, feasible %, and decoding time per instance on this CPU (2 torch threads), both batched
(``nco.solve_batch``, 64 instances per pass) and one instance at a time (``nco.solve``, the first
10 instances).

Usage::

    python benchmarks/model_card.py runs/cvrp50 --name cvrp50 --reference runs/ref-cvrp50 \\
        --command "nco train --problem cvrp --size 50 ..." --export data/checkpoints

With ``--export DIR`` the slim weights (``DIR/NAME.pt``, :func:`nco.checkpoints.export_model`) and
the card (``DIR/NAME.md``) are written there; otherwise the card goes to stdout. The last line is
``RESULT name=... gap_greedy=... gap_multistart=... gap_x8=... gap_x8_refine=...``.
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import nco
from nco.checkpoints import export_model, read_checkpoint, resolve_checkpoint
from nco.envs import Instance, load

THREADS = 2
#: (label, solve options) of the measured decodings.
DECODINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("greedy", {"strategy": "greedy", "augment": 1}),
    ("multistart greedy", {"strategy": "multistart_greedy", "augment": 1}),
    ("multistart x8 aug", {"strategy": "multistart_greedy", "augment": 8}),
    (
        "multistart x8 + local search",
        {"strategy": "multistart_greedy", "augment": 8, "refine": True},
    ),
)


def read_reference(run_dir: Path, solver: str, limit: float) -> dict[str, float]:
    """Instance name -> cost of ``solver`` at ``limit`` s in an ``nco benchmark`` run."""
    out: dict[str, float] = {}
    with (run_dir / "results.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if (
                row["solver"] == solver
                and float(row["time_limit"]) == limit
                and row["cost"]
                and row["feasible"] == "True"
            ):
                out[row["instance"]] = float(row["cost"])
    if not out:
        raise ValueError(f"{run_dir}/results.csv: no feasible {solver} rows at {limit:g} s")
    return out


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_summary(ckpt: Path) -> dict[str, Any]:
    """Steps, epochs, instances seen and training wall time recorded in a Lightning checkpoint."""
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    info = raw.get("hyper_parameters", {})
    train = info.get("train", {})
    timer = next((v for k, v in raw.get("callbacks", {}).items() if "Timer" in k), None)
    seconds = None
    if timer is not None:
        elapsed = timer.get("time_elapsed", {})
        seconds = float(elapsed.get("train", 0.0)) + float(elapsed.get("validate", 0.0))
    steps = int(raw.get("global_step", 0))
    return {
        "steps": steps,
        "epochs": int(raw.get("epoch", 0)),
        "instances": steps * int(train.get("batch_size", 0)),
        "seconds": seconds,
        "train": train,
    }


def measure(
    model: str, insts: list[Instance], ref: dict[str, float], opts: dict[str, Any]
) -> dict[str, Any]:
    """Solve the test set with one decoding; costs, gaps and times."""
    t0 = time.perf_counter()
    # the network's own quality and speed: no time limit binds (the API default budgets it)
    sols = nco.solve_batch(insts, model=model, solver="neural", time_limit=math.inf, **opts)
    batched = (time.perf_counter() - t0) / len(insts)
    single = []
    for inst in insts[:10]:
        t1 = time.perf_counter()
        nco.solve(inst, solver="neural", model=model, time_limit=math.inf, **opts)
        single.append(time.perf_counter() - t1)
    gaps = [100.0 * (s.cost / ref[i.name] - 1.0) for s, i in zip(sols, insts) if s.feasible]
    return {
        "cost": statistics.fmean(s.cost for s in sols if s.feasible),
        "gap": statistics.fmean(gaps),
        "feasible": 100.0 * sum(s.feasible for s in sols) / len(sols),
        "batched_s": batched,
        "single_s": statistics.median(single),
    }


def card_text(
    name: str,
    info: dict[str, Any],
    summary: dict[str, Any],
    rows: list[tuple[str, dict[str, Any]]],
    *,
    ref_label: str,
    ref_mean: float,
    num: int,
    command: str,
    notes: str,
) -> str:
    """The markdown model card."""
    hours = summary["seconds"] / 3600 if summary["seconds"] else None
    budget = (
        f"{summary['steps']} optimizer steps ({summary['instances']:,} training instances, "
        f"{summary['epochs']} epochs)"
        + (f", {hours * 60:.0f} min wall clock" if hours is not None else "")
    )
    pc = info["policy"]
    lines = [
        f"# `{name}`: {info['preset']} policy for {info['problem'].upper()}{info['size']}",
        "",
        f"- **Problem**: {info['problem']}, trained on {info['size']} "
        f"{'cities' if info['problem'] == 'tsp' else 'customers'}, "
        f"{info.get('distribution', 'uniform')} instances generated on the fly.",
        f"- **Preset**: `{info['preset']}` ({pc.get('num_layers')} encoder layers, d={pc.get('d_model')}, "
        f"{pc.get('num_heads')} heads, FFN {pc.get('d_ff')}); nco {info.get('nco_version')}.",
        f"- **Training command**: `{command}`",
        f"- **Budget**: {budget}.",
        f"- **Hardware**: {cpu_name()}, 2 cores shared with other jobs of the session, no GPU.",
        f'- **Use**: `nco.solve(instance, solver="neural", model="{name}")`, `nco solve FILE --solver neural '
        f"--model {name}`; picked automatically for {info['problem']} instances nearest in size.",
        "",
        f"## Quality on a fixed test set ({num} generated instances, `--seed 1234`)",
        "",
        f"Reference: {ref_label} (mean cost {ref_mean:.4f}). Gap = mean over instances of "
        "100 x (cost / reference - 1). Time per instance on this CPU with 2 torch threads: "
        "batched (64 instances per forward pass) and one instance per call.",
        "",
        "| decoding | mean cost | gap % | feasible % | s/inst batched | s/inst single |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['cost']:.4f} | {r['gap']:+.2f} | {r['feasible']:.0f} | "
            f"{r['batched_s']:.3f} | {r['single_s']:.3f} |"
        )
    lines += ["", "## Limits", "", notes.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the card and a RESULT line; export when asked."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="run directory or checkpoint file")
    ap.add_argument("--name", required=True, help="shipped name, e.g. cvrp50")
    ap.add_argument("--reference", type=Path, required=True, help="nco benchmark run directory")
    ap.add_argument("--ref-solver", default="hgs")
    ap.add_argument("--ref-limit", type=float, default=1.0)
    ap.add_argument("--command", required=True, help="the nco train command(s) used")
    ap.add_argument("--notes", default="", help="the Limits section (markdown)")
    ap.add_argument("--export", type=Path, default=None, help="write NAME.pt and NAME.md here")
    ap.add_argument("--no-refine", action="store_true", help="skip the local-search row")
    args = ap.parse_args(argv)
    torch.set_num_threads(THREADS)

    ckpt = resolve_checkpoint(args.checkpoint)
    info, _, _ = read_checkpoint(ckpt)
    summary = training_summary(ckpt)
    ref = read_reference(args.reference, args.ref_solver, args.ref_limit)
    files = sorted((args.reference / "instances").iterdir())
    insts = [load(f) for f in files]
    insts = [i for i in insts if i.name in ref]
    model = str(ckpt)
    rows = []
    for label, opts in DECODINGS:
        if args.no_refine and opts.get("refine"):
            continue
        r = measure(model, insts, ref, opts)
        rows.append((label, r))
        print(
            f"{label:<30} cost {r['cost']:.4f} gap {r['gap']:+.2f}% feasible {r['feasible']:.0f}%"
            f" {r['batched_s']:.3f} s/inst batched, {r['single_s']:.3f} s/inst single",
            flush=True,
        )
    ref_label = f"{args.ref_solver.upper()} at {args.ref_limit:g} s per instance (single-threaded)"
    text = card_text(
        args.name,
        info,
        summary,
        rows,
        ref_label=ref_label,
        ref_mean=statistics.fmean(ref[i.name] for i in insts),
        num=len(insts),
        command=args.command,
        notes=args.notes or "-",
    )
    if args.export is not None:
        from nco.envs.io import atomic_write

        export_model(ckpt, args.export / f"{args.name}.pt")
        with atomic_write(args.export / f"{args.name}.md", "w") as fh:
            fh.write(text)
        print(f"wrote {args.export / (args.name + '.pt')} and {args.export / (args.name + '.md')}")
    else:
        print(text)
    keys = ("gap_greedy", "gap_multistart", "gap_x8", "gap_x8_refine")
    print(
        f"RESULT name={args.name} "
        + " ".join(f"{k}={r['gap']:.2f}" for k, (_, r) in zip(keys, rows))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
