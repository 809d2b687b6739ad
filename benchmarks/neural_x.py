"""The neural solver on CVRPLib X and TSPLIB: gap to the best-known value, seconds and peak
memory per instance, by size band.

For every instance of the shared sets (``../shared/data/cvrplib-x``: 31 X instances with 100-1000
customers; ``../shared/data/tsplib``: 21 instances with 51-1002 cities; ``solomon``: the 56
Solomon VRPTW instances; ``gh1000``: 30 Gehring-Homberger VRPTW instances of 1000 customers),
with at most
``--max-n`` customers/cities, solve with the shipped checkpoint nearest in size (or
``--model`` / ``--tsp-model``) in these configurations (``--configs``):

* ``default``: ``nco.solve(inst, solver="neural")`` as a user gets it: POMO multistart greedy
  x8 augmentation, every start up to ~330 nodes and a planned, randomly chosen subset above
  (the decode plan of :func:`nco.policies.decoding.plan_decode`);
* ``x8``: every start, x8 augmentation (the full POMO inference; slow at 1000 nodes);
* ``ls``: ``default`` + the numba local search (``refine=True``);
* ``limit``: ``default`` under ``time_limit = --time-limit`` seconds;
* ``knn``: ``default`` with the decoder restricted to the ``--candidates`` nearest nodes.

Each solve is checked by the independent checker. Peak RSS is the process's resident memory
sampled every 2 ms during the solve (model and interpreter included). Rows are printed per
instance, then a table per set and size band (<= 300 and > 300 customers): mean gap, median
seconds, the largest peak RSS. The last line is ``RESULT ...`` with the band means.

Usage: ``python benchmarks/neural_x.py [--sets x,tsplib] [--configs default,x8,ls]
[--max-n 1000] [--model CKPT] [--tsp-model CKPT] [--tw-model CKPT] [--csv rows.csv]
[--threads 2]``
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

import nco

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: set key -> (folder, file pattern, nco.load options)
SETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "x": ("cvrplib-x", "X-n*.vrp", {}),
    "tsplib": ("tsplib", "*.tsp", {}),
    "solomon": ("solomon", "*.txt", {}),
    "gh1000": ("vrptw-gh1000", "*.vrp", {"edge_weight": "SOLOMON"}),
}
CONFIGS = ("default", "x8", "ls", "limit", "knn")
BAND = 300


class PeakRSS:
    """Largest resident set size (GB) of this process while the ``with`` block runs."""

    def __init__(self, every: float = 0.002) -> None:
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now() -> float:
        """Current resident set size in GB (Linux ``/proc``)."""
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * 4096 / 1e9

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.every)

    def __enter__(self) -> PeakRSS:
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def best_known(set_dir: str) -> dict[str, float]:
    """Best-known values of one shared set from ``bks.csv``."""
    with (SHARED / "bks.csv").open() as fh:
        return {r["instance"]: float(r["bks"]) for r in csv.DictReader(fh) if r["set"] == set_dir}


def solve(inst: nco.Instance, config: str, model: str | None, limit: float, candidates: int) -> Any:
    """One configured neural solve."""
    opts: dict[str, Any] = {"model": model}
    if config == "knn":
        opts["candidates"] = candidates
    if config == "x8":
        opts["num_starts"] = inst.num_nodes  # capped to every candidate start
    if config == "ls":
        opts["refine"] = True
    return nco.solve(inst, solver="neural", time_limit=limit if config == "limit" else math.inf, **opts)


def main(argv: list[str] | None = None) -> int:
    """Solve every instance in every configuration, print the tables and the RESULT line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="x,tsplib", help="comma-separated: x, tsplib, solomon, gh1000")
    ap.add_argument("--configs", default="default,x8,ls", help=f"comma-separated: {CONFIGS}")
    ap.add_argument("--max-n", type=int, default=1000, help="largest instance (customers/cities)")
    ap.add_argument("--min-n", type=int, default=0, help="smallest instance")
    ap.add_argument("--x8-max-n", type=int, default=1000, help="largest instance for x8")
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds, config 'limit'")
    ap.add_argument("--candidates", type=int, default=20, help="k of config 'knn'")
    ap.add_argument("--model", default=None, help="CVRP checkpoint (default: shipped, nearest)")
    ap.add_argument("--tsp-model", default=None, help="TSP checkpoint (default: shipped)")
    ap.add_argument("--tw-model", default=None, help="CVRPTW checkpoint of the solomon and gh1000 sets")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = [c for c in args.configs.split(",") if c]
    bad = sorted(set(configs) - set(CONFIGS))
    if bad:
        ap.error(f"unknown configs {bad}; expected some of {CONFIGS}")
    rows: list[dict[str, Any]] = []
    for key in [s for s in args.sets.split(",") if s]:
        set_dir, pattern, load_opts = SETS[key]
        folder = SHARED / set_dir
        if not folder.is_dir():
            print(f"{set_dir}: not found at {folder}; skipped")
            continue
        bks = best_known(set_dir)
        model = {"tsplib": args.tsp_model, "solomon": args.tw_model, "gh1000": args.tw_model}.get(
            key, args.model
        )
        insts = sorted(
            (nco.load(f, **load_opts) for f in folder.glob(pattern) if f.stem in bks),
            key=lambda i: (i.num_customers, i.name),
        )
        print(f"\n{set_dir}: {len(insts)} instances")
        if insts:  # warm-up: model loading and kernel compilation are not solving time
            nco.solve(insts[0], solver="neural", model=model)
        print(f"{'instance':<16}{'n':>5}{'config':>9}{'cost':>11}{'gap%':>8}{'s':>8}{'GB':>6}")
        for inst in insts:
            n = inst.num_customers
            if not args.min_n <= n <= args.max_n:
                continue
            ref = bks[inst.name]
            for config in configs:
                if config == "x8" and n > args.x8_max_n:
                    continue
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    sol = solve(inst, config, model, args.time_limit, args.candidates)
                    dt = time.perf_counter() - t
                gap = 100 * (sol.cost / ref - 1)
                row = {
                    "set": set_dir,
                    "instance": inst.name,
                    "n": n,
                    "config": config,
                    "cost": sol.cost,
                    "bks": ref,
                    "gap": gap,
                    "seconds": dt,
                    "peak_rss_gb": mem.peak,
                    "feasible": sol.feasible,
                    "starts": sol.metadata.get("num_starts"),
                    "transforms": sol.metadata.get("transforms"),
                    "model": Path(str(sol.metadata.get("model"))).stem,
                }
                rows.append(row)
                flag = "" if sol.feasible else "  INFEASIBLE"
                print(
                    f"{inst.name:<16}{n:>5}{config:>9}{sol.cost:>11.0f}{gap:>8.2f}{dt:>8.2f}"
                    f"{mem.peak:>6.2f}{flag}",
                    flush=True,
                )
    if not rows:
        print("no instances found")
        return 1
    if args.csv is not None:
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    print(
        f"\n{'set':<11}{'band':<8}{'config':<9}{'inst':>5}{'mean gap%':>11}{'median s':>10}"
        f"{'max GB':>8}"
    )
    result = []
    for set_dir in dict.fromkeys(r["set"] for r in rows):
        for band, sel in (
            ("<=300", lambda n: n <= BAND),
            (">300", lambda n: n > BAND),
            ("all", lambda n: True),
        ):
            for config in configs:
                rs = [
                    r for r in rows if r["set"] == set_dir and r["config"] == config and sel(r["n"])
                ]
                if not rs:
                    continue
                gap = statistics.fmean(r["gap"] for r in rs)
                sec = statistics.median(r["seconds"] for r in rs)
                mem = max(r["peak_rss_gb"] for r in rs)
                print(
                    f"{set_dir:<11}{band:<8}{config:<9}{len(rs):>5}{gap:>11.2f}{sec:>10.2f}"
                    f"{mem:>8.2f}"
                )
                result.append(
                    f"{set_dir}_{config}_{band.replace('<=', 'le').replace('>', 'gt')}={gap:.2f}"
                )
    print(f"all feasible: {all(r['feasible'] for r in rows)}")
    print("RESULT " + " ".join(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
