"""MTVRP evaluation: PyVRP and OR-Tools on fixed test sets of the 16 variants, and a trained
model's gap to the best classical solver (MVMoE / RouteFinder protocol).

Test sets: for each variant and size ``n`` (default 50 and 100), ``--num`` instances (default
1000) from ``MTVRPGenerator(num_loc=n, variants=[variant])(num, seed=--seed)`` (default 1234;
uniform locations, standard capacities 40 / 50, RouteFinder's distributions). The same seed
gives the same locations and demands in every variant.

Classical solvers: :func:`nco.baselines.mtvrp.solve_mtvrp` (mapping and what each solver can
express: that module's docstring), ``--time-limit`` wall seconds per instance, single-threaded,
``--workers`` processes. Per-instance rows go to ``--csv`` (default
``runs/mtvrp_eval/solvers.csv``) as they finish; a rerun skips every (variant, n, num, seed,
index, solver, time limit) already there, so an interrupted run resumes. Costs are the float
:func:`nco.envs.mtvrp.cost` of each plan; ``feasible`` is the independent checker's verdict.

Model (``--model PATH``): ``nco.checkpoints.load_model(PATH, problem="mtvrp")`` decoded with
``DecodeConfig(strategy="multistart_greedy", augment=8)`` (POMO starts x 8 symmetries, best
kept), checked by :func:`nco.envs.mtvrp.check`; per-instance rows to ``--model-csv`` if given.

Table: per variant and size, the mean cost of each solver and of the model (over the
instances where it is feasible; the ``infeasible`` column counts the others), and the model's
gap ``100 * (model / best - 1)`` averaged over instances, ``best`` being the lower feasible
classical cost of that instance. Averages: the six trained variants (``TRAIN_VARIANTS``) and
the ten others (zero-shot), per size and over both. The last line is::

    RESULT trained_gap=<%> zeroshot_gap=<%>

(``nan`` without ``--model``, or when a group has no variant in the run).

Run (full scale is long: 16 variants x 2 sizes x 1000 instances x 2 solvers x time limit /
workers)::

    python benchmarks/mtvrp_eval.py --time-limit 1 --workers 16 --model runs/mtvrp/best.ckpt
    python benchmarks/mtvrp_eval.py --num 4 --time-limit 0.2 --variants CVRP,VRPB --sizes 50
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

from nco.baselines.mtvrp import MTVRP_SOLVERS, MTVRPResult, solve_mtvrp
from nco.envs.mtvrp import TRAIN_VARIANTS, VARIANT_NAMES, MTVRPGenerator, check

FIELDS = (
    "variant",
    "size",
    "num",
    "seed",
    "index",
    "solver",
    "time_limit",
    "cost",
    "feasible",
    "solver_feasible",
    "runtime",
    "num_routes",
)
MODEL_FIELDS = ("variant", "size", "num", "seed", "index", "model", "cost", "feasible")
#: PyVRP's random seed for every instance (OR-Tools is deterministic).
SOLVER_SEED = 0

Key = tuple[str, int, int, int, int, str, float]


def make_test_set(variant: str, size: int, num: int, seed: int) -> TensorDict:
    """The fixed test set of one variant and size, batch [num]."""
    return MTVRPGenerator(num_loc=size, variants=(variant,))(num, seed=seed)


# ----------------------------------------------------------------------------- CSV cache
def _key(row: dict[str, Any]) -> Key:
    return (
        str(row["variant"]),
        int(row["size"]),
        int(row["num"]),
        int(row["seed"]),
        int(row["index"]),
        str(row["solver"]),
        round(float(row["time_limit"]), 6),
    )


def read_rows(path: Path) -> dict[Key, dict[str, Any]]:
    """Rows already in the cache, by key (later rows win)."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {_key(r): r for r in csv.DictReader(f)}


def _row(key: Key, res: MTVRPResult) -> dict[str, Any]:
    variant, size, num, seed, index, solver, limit = key
    return {
        "variant": variant,
        "size": size,
        "num": num,
        "seed": seed,
        "index": index,
        "solver": solver,
        "time_limit": limit,
        "cost": f"{res.cost:.6f}",
        "feasible": int(res.feasible),
        "solver_feasible": int(res.solver_feasible),
        "runtime": f"{res.runtime:.3f}",
        "num_routes": len(res.routes),
    }


def _job(args: tuple[Key, TensorDict]) -> tuple[Key, MTVRPResult]:
    key, td = args
    solver, limit = key[5], key[6]
    return key, solve_mtvrp(td, solver, time_limit=limit, seed=SOLVER_SEED)


def _worker_init() -> None:
    torch.set_num_threads(1)


def _jobs(
    sets: dict[tuple[str, int], TensorDict], args: argparse.Namespace, done: set[Key]
) -> Iterator[tuple[Key, TensorDict]]:
    for (variant, size), td in sets.items():
        for i in range(td.shape[0]):
            for solver in args.solvers:
                key = (variant, size, args.num, args.seed, i, solver, round(args.time_limit, 6))
                if key not in done:
                    yield key, td[i : i + 1]


def run_solvers(
    sets: dict[tuple[str, int], TensorDict], args: argparse.Namespace, path: Path
) -> dict[Key, dict[str, Any]]:
    """Solve every missing (instance, solver) and append its row to ``path`` as it finishes."""
    rows = read_rows(path)
    jobs = list(_jobs(sets, args, set(rows)))
    total = len(jobs)
    print(f"solvers: {total} runs to do, {len(rows)} rows cached in {path}", flush=True)
    if not total:
        return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.is_file() or path.stat().st_size == 0
    t0 = time.perf_counter()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()

        def record(done: Iterable[tuple[Key, MTVRPResult]]) -> None:
            for k, (key, res) in enumerate(done, 1):
                row = _row(key, res)
                rows[key] = row
                writer.writerow(row)
                f.flush()
                if k % max(1, total // 20) == 0 or k == total:
                    print(f"  {k}/{total} runs, {time.perf_counter() - t0:.0f} s", flush=True)

        if args.workers <= 1:
            record(_job(j) for j in jobs)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                args.workers, mp_context=ctx, initializer=_worker_init
            ) as pool:
                futures = [pool.submit(_job, j) for j in jobs]
                record(fut.result() for fut in as_completed(futures))
    return rows


# ----------------------------------------------------------------------------- model
def run_model(
    sets: dict[tuple[str, int], TensorDict], args: argparse.Namespace
) -> dict[tuple[str, int], list[tuple[float, bool]]]:
    """(cost, feasible) per instance of every set for the checkpoint ``args.model``."""
    from nco.checkpoints import load_model
    from nco.envs import get_problem
    from nco.policies import DecodeConfig

    policy, info = load_model(args.model, problem="mtvrp", device=args.device)
    print(
        f"model: {args.model} (trained on n={info.get('size')}, preset {info.get('preset')})",
        flush=True,
    )
    config = DecodeConfig(strategy="multistart_greedy", augment=8, return_actions=False)
    out: dict[tuple[str, int], list[tuple[float, bool]]] = {}
    for (variant, size), td in sets.items():
        env = get_problem("mtvrp").make_env(num_loc=size, device=args.device)
        results: list[tuple[float, bool]] = []
        t0 = time.perf_counter()
        for lo in range(0, td.shape[0], args.batch_size):
            chunk = td[lo : lo + args.batch_size].to(args.device)
            with torch.no_grad():
                roll = policy(chunk, env, config)
            assert roll.best_actions is not None and roll.best_reward is not None
            violations = check(chunk, roll.best_actions)
            costs = (-roll.best_reward).double().cpu().tolist()
            results.extend((c, not v) for c, v in zip(costs, violations, strict=True))
        out[(variant, size)] = results
        print(f"  model {variant} n={size}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- table
def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _fmt(x: float, width: int, digits: int) -> str:
    return f"{x:{width}.{digits}f}" if math.isfinite(x) else f"{'-':>{width}}"


def summarise(
    sets: dict[tuple[str, int], TensorDict],
    rows: dict[Key, dict[str, Any]],
    model: dict[tuple[str, int], list[tuple[float, bool]]] | None,
    args: argparse.Namespace,
) -> dict[tuple[str, int], float]:
    """Print the table; return the model's mean gap per (variant, size)."""
    solvers = list(args.solvers)
    head = (
        f"{'variant':<10}{'n':>5}"
        + "".join(f"{s:>11}" for s in solvers)
        + f"{'model':>11}{'gap %':>9}"
        + f"  infeasible ({'/'.join(s[0] for s in solvers)}/m)"
    )
    print()
    print(head)
    print("-" * len(head))
    gaps: dict[tuple[str, int], float] = {}
    for (variant, size), td in sets.items():
        num = td.shape[0]
        per: dict[str, list[float | None]] = {}
        for s in solvers:
            vals: list[float | None] = []
            for i in range(num):
                r = rows.get((variant, size, args.num, args.seed, i, s, round(args.time_limit, 6)))
                vals.append(float(r["cost"]) if r is not None and int(r["feasible"]) else None)
            per[s] = vals
        best = [
            min((per[s][i] for s in solvers if per[s][i] is not None), default=None)  # type: ignore[type-var]
            for i in range(num)
        ]
        m = model.get((variant, size)) if model is not None else None
        model_costs = [c for c, ok in m if ok] if m is not None else []
        inst_gaps = (
            [100.0 * (c / b - 1.0) for (c, ok), b in zip(m, best, strict=True) if ok and b]
            if m is not None
            else []
        )
        gap = _mean(inst_gaps)
        gaps[(variant, size)] = gap
        bad = [sum(v is None for v in per[s]) for s in solvers]
        bad.append(sum(not ok for _, ok in m) if m is not None else 0)
        print(
            f"{variant:<10}{size:>5}"
            + "".join(_fmt(_mean([v for v in per[s] if v is not None]), 11, 4) for s in solvers)
            + _fmt(_mean(model_costs), 11, 4)
            + _fmt(gap, 9, 3)
            + "  "
            + "/".join(map(str, bad))
        )
    print("-" * len(head))
    sizes = sorted({s for _, s in sets})
    for group, names in (("trained", TRAIN_VARIANTS), ("zero-shot", _zero_shot())):
        for size in sizes:
            vals = [g for (v, s), g in gaps.items() if s == size and v in names]
            print(
                f"avg {group:<10} n={size:<4} gap % {_fmt(_mean(vals), 8, 3)}  ({len(vals)} variants)"
            )
    return gaps


def _zero_shot() -> tuple[str, ...]:
    return tuple(v for v in VARIANT_NAMES if v not in TRAIN_VARIANTS)


# ----------------------------------------------------------------------------- main
def _variants(text: str) -> list[str]:
    if text.lower() == "all":
        return list(VARIANT_NAMES)
    out = [v.strip().upper() for v in text.split(",") if v.strip()]
    unknown = [v for v in out if v not in VARIANT_NAMES]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; expected names from {VARIANT_NAMES}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--sizes", default="50,100", help="comma-separated customer counts")
    parser.add_argument("--num", type=int, default=1000, help="instances per variant and size")
    parser.add_argument("--seed", type=int, default=1234, help="test-set seed")
    parser.add_argument("--time-limit", type=float, default=1.0, help="seconds per instance")
    parser.add_argument("--workers", type=int, default=1, help="solver processes")
    parser.add_argument("--solvers", default=",".join(MTVRP_SOLVERS))
    parser.add_argument("--csv", type=Path, default=Path("runs/mtvrp_eval/solvers.csv"))
    parser.add_argument("--model", default=None, help="checkpoint to evaluate (optional)")
    parser.add_argument("--model-csv", type=Path, default=None, help="per-instance model rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=100, help="model decoding batch")
    args = parser.parse_args(argv)
    args.solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    if not args.solvers or any(s not in MTVRP_SOLVERS for s in args.solvers):
        raise SystemExit(f"--solvers must name some of {MTVRP_SOLVERS}")
    variants = _variants(args.variants)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    sets = {(v, n): make_test_set(v, n, args.num, args.seed) for n in sizes for v in variants}
    rows = run_solvers(sets, args, args.csv)
    model = run_model(sets, args) if args.model else None
    if model is not None and args.model_csv is not None:
        args.model_csv.parent.mkdir(parents=True, exist_ok=True)
        with args.model_csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=MODEL_FIELDS)
            writer.writeheader()
            for (variant, size), res in model.items():
                for i, (c, ok) in enumerate(res):
                    writer.writerow(
                        dict(
                            variant=variant,
                            size=size,
                            num=args.num,
                            seed=args.seed,
                            index=i,
                            model=args.model,
                            cost=f"{c:.6f}",
                            feasible=int(ok),
                        )
                    )
    gaps = summarise(sets, rows, model, args)
    group = defaultdict(list)
    for (variant, _), g in gaps.items():
        group["trained" if variant in TRAIN_VARIANTS else "zeroshot"].append(g)
    print(
        f"RESULT trained_gap={_mean(group['trained']):.3f} "
        f"zeroshot_gap={_mean(group['zeroshot']):.3f}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
