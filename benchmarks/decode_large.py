"""Decoding at real sizes: seconds and peak memory of POMO construction at n = 100 / 500 / 1000
/ 5000 customers, nco against RL4CO 0.7 in the same run.

Each measurement runs in a fresh process (so its peak RSS is its own): it builds the model,
decodes one tiny instance (compilation and warm-up, not timed), then one generated uniform CVRP
instance of n customers, and reports wall seconds, decoding steps and the process's peak
resident memory (``ru_maxrss``; the interpreter with torch imported is about 0.4-0.5 GB of it).

Workloads, per n:

* ``same S``: multistart greedy from S = min(n, ``--starts``) starts, no augmentation, an
  untrained 6-layer POMO network (d=128, 8 heads, FFN 512, instance norm) in both libraries:
  the like-for-like comparison (RL4CO: ``POMO`` policy defaults, ``decode_type=
  "multistart_greedy"``);
* ``all starts``: every customer a start, no augmentation (``--all-starts-max`` bounds n;
  RL4CO at 5000 customers would need ~5000 x 5001 x ... and is skipped there);
* ``nco default``: what ``nco.solve(inst, solver="neural")`` does with the shipped checkpoint
  nearest in size (x8 augmentation, starts planned from the size; see
  :func:`nco.policies.decoding.plan_decode`), in chunks of the default memory budget.

The table has ratio columns RL4CO / nco for time and memory (higher is better for nco).
Without RL4CO installed (``pip install -e .[peers]``) its columns are empty.

Usage: ``python benchmarks/decode_large.py [--sizes 100,500,1000,5000] [--starts 100]
[--threads 2] [--csv rows.csv]``. The last line is ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- child side
def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _child_nco(n: int, starts: int | None, default: bool, threads: int) -> dict[str, Any]:
    import torch

    import nco
    from nco.envs import get_problem
    from nco.policies import DecodeConfig, build_policy

    torch.set_num_threads(threads)
    problem = get_problem("cvrp")
    td = problem.generator(num_loc=n)(1, seed=0)
    if default:
        inst = problem.to_instance(td[0], name=f"cvrp{n}")
        tiny = problem.to_instance(problem.generator(num_loc=n)(1, seed=1)[0], name="warm")
        nco.solve(tiny, solver="neural", num_starts=1, augment=1)  # load + compile
        t = time.perf_counter()
        sol = nco.solve(inst, solver="neural")
        dt = time.perf_counter() - t
        meta = sol.metadata
        return {
            "seconds": dt,
            "peak_gb": _peak_gb(),
            "rows": int(meta["num_starts"]) * int(meta["transforms"]),
            "cost": sol.cost,
            "feasible": sol.feasible,
        }
    torch.manual_seed(0)
    policy = build_policy("pomo", "cvrp").eval()
    env = problem.make_env(num_loc=n)
    s = min(n, starts) if starts else n
    cfg = DecodeConfig(strategy="multistart_greedy", num_starts=s, select_best=True)
    with torch.inference_mode():
        warm = DecodeConfig(strategy="multistart_greedy")
        policy(problem.generator(num_loc=10)(1, seed=1), problem.make_env(num_loc=10), warm)
        t = time.perf_counter()
        out = policy(td, env, cfg)
        dt = time.perf_counter() - t
    return {
        "seconds": dt,
        "peak_gb": _peak_gb(),
        "rows": s,
        "steps": int(out.actions.shape[-1]),
        "cost": float(-out.best_reward[0]),
    }


def _child_rl4co(n: int, starts: int | None, threads: int) -> dict[str, Any]:
    import torch
    from rl4co.envs import CVRPEnv
    from rl4co.models import POMO

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    env = CVRPEnv(generator_params={"num_loc": n})
    policy = POMO(env).policy.eval()
    s = min(n, starts) if starts else n
    with torch.inference_mode():
        small = CVRPEnv(generator_params={"num_loc": 10})
        policy(
            small.reset(batch_size=[1]),
            small,
            phase="test",
            decode_type="multistart_greedy",
            num_starts=10,
        )
        td = env.reset(batch_size=[1])
        t = time.perf_counter()
        out = policy(td, env, phase="test", decode_type="multistart_greedy", num_starts=s)
        dt = time.perf_counter() - t
    return {
        "seconds": dt,
        "peak_gb": _peak_gb(),
        "rows": s,
        "steps": int(out["actions"].shape[-1]),
        "cost": float(-out["reward"].max()),
    }


# ----------------------------------------------------------------------------- parent side
def _measure(
    lib: str, n: int, starts: int | None, default: bool, threads: int, timeout: float
) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        str(HERE),
        "--child",
        lib,
        str(n),
        str(starts or 0),
        "1" if default else "0",
        "--threads",
        str(threads),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:g} s"}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {res.returncode}: {tail[:80]}"}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the table and the RESULT line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=4, metavar=("LIB", "N", "STARTS", "DEFAULT"))
    ap.add_argument("--sizes", default="100,500,1000,5000")
    ap.add_argument("--starts", type=int, default=100, help="S of the 'same S' workload")
    ap.add_argument("--all-starts-max", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.child:
        lib, n, starts, default = args.child
        fn = _child_rl4co if lib == "rl4co" else None
        if fn is not None:
            out = fn(int(n), int(starts) or None, args.threads)
        else:
            out = _child_nco(int(n), int(starts) or None, default == "1", args.threads)
        print(json.dumps(out))
        return 0
    have_rl4co = importlib.util.find_spec("rl4co") is not None
    sizes = [int(x) for x in args.sizes.split(",") if x]
    rows: list[dict[str, Any]] = []
    print(f"threads {args.threads}; RL4CO {'0.7 installed' if have_rl4co else 'not installed'}")
    head = (
        f"{'n':>6} {'workload':<12}{'rows':>6}{'nco s':>9}{'nco GB':>8}{'RL4CO s':>9}"
        f"{'RL4CO GB':>9}{'x time':>8}{'x mem':>7}"
    )
    print(head)
    for n in sizes:
        work = [("same S", args.starts, False)]
        if n <= args.all_starts_max:
            work.append(("all starts", None, False))
        work.append(("nco default", None, True))
        for name, starts, default in work:
            ours = _measure("nco", n, starts, default, args.threads, args.timeout)
            peer = None
            if have_rl4co and not default:
                peer = _measure("rl4co", n, starts, False, args.threads, args.timeout)
            row: dict[str, Any] = {"n": n, "workload": name}
            for tag, res in (("nco", ours), ("rl4co", peer)):
                for k, v in (res or {}).items():
                    row[f"{tag}_{k}"] = v
            rows.append(row)

            def cell(tag: str, key: str, fmt: str, row: dict[str, Any] = row) -> str:
                v = row.get(f"{tag}_{key}")
                return format(v, fmt) if isinstance(v, float | int) else "-"

            ratio_t = ratio_m = "-"
            if "nco_seconds" in row and "rl4co_seconds" in row:
                ratio_t = f"{row['rl4co_seconds'] / row['nco_seconds']:.2f}"
                ratio_m = f"{row['rl4co_peak_gb'] / row['nco_peak_gb']:.2f}"
            err = " ".join(
                f"[{t}: {row[f'{t}_error']}]" for t in ("nco", "rl4co") if f"{t}_error" in row
            )
            print(
                f"{n:>6} {name:<12}{row.get('nco_rows', '-'):>6}{cell('nco', 'seconds', '.2f'):>9}"
                f"{cell('nco', 'peak_gb', '.2f'):>8}{cell('rl4co', 'seconds', '.2f'):>9}"
                f"{cell('rl4co', 'peak_gb', '.2f'):>9}{ratio_t:>8}{ratio_m:>7} {err}",
                flush=True,
            )
    if args.csv is not None:
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("n", "workload"), k))
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    result = [
        f"n{r['n']}_{r['workload'].replace(' ', '_')}_s={r.get('nco_seconds', float('nan')):.2f}"
        f"_gb={r.get('nco_peak_gb', float('nan')):.2f}"
        for r in rows
    ]
    print("RESULT " + " ".join(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
