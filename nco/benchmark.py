"""Benchmark runner: instances x solvers x time limits -> ``results.csv``, solution files,
a summary table and a gap-vs-time plot.

A run directory holds everything needed to re-check it from outside::

    RUN_DIR/results.csv          one row per instance x solver x time limit (x seed)
    RUN_DIR/solutions/*.sol      VRPLIB .sol (TSPLIB .tour for the TSP), one per row
    RUN_DIR/instances/*.vrp      generated instances (VRPLIB/TSPLIB files), when generated
    RUN_DIR/gap_vs_time.png      mean gap per solver against the time limit

Runs are resumable: rows already in ``results.csv`` are not solved again. Each job runs in its
own worker process (``spawn``), and every solver is single-threaded, so ``workers`` is the
number of cores used.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nco.envs as E
import nco.solvers  # noqa: F401  (registers "neural" and "hybrid", also in spawned workers)
from nco.baselines import SolverError, available_solvers, get_solver
from nco.envs.io import atomic_write, is_instance_file

__all__ = [
    "RESULT_COLUMNS",
    "BenchmarkError",
    "Job",
    "collect_instances",
    "format_summary",
    "generate_instances",
    "load_bks",
    "read_results",
    "reference_cost_from_sol",
    "format_budget_tables",
    "run_benchmark",
    "solve_file",
    "solver_spec",
    "summarize",
]

#: Columns of ``results.csv`` (in order).
RESULT_COLUMNS = [
    "instance",
    "problem",
    "n",
    "solver",
    "time_limit",
    "time_per_100",
    "seed",
    "cost",
    "feasible",
    "violations",
    "runtime",
    "cpu_time",
    "reference",
    "gap_pct",
    "solution_file",
    "instance_file",
    "error",
    "note",
]


class BenchmarkError(ValueError):
    """Bad benchmark input (unknown solver, empty directory, bad reference file, ...)."""


#: Solver label suffix: ``neural+ls`` is the ``neural`` solver with ``refine=True``.
LS_SUFFIX = "+ls"


def solver_spec(label: str) -> tuple[str, dict[str, Any]]:
    """A benchmark solver label -> (registry name, constructor options): ``NAME`` or
    ``NAME+ls`` (the solver's ``refine=True``, for the solvers that take it)."""
    if label.endswith(LS_SUFFIX):
        return label[: -len(LS_SUFFIX)], {"refine": True}
    return label, {}


def time_label(time_limit: float, per_100: float | None) -> str:
    """How a run's budget is named in keys and tables: ``2`` (seconds) or ``0.3/100`` (seconds
    per 100 customers, the time limit then scales with the instance)."""
    return f"{float(per_100):g}/100" if per_100 else _fmt_num(time_limit)


# ---------------------------------------------------------------------------------- inputs
def collect_instances(
    directory: str | Path, *, max_customers: int | None = None, first: int | None = None
) -> list[Path]:
    """Instance files (``.vrp``, ``.tsp``, Solomon ``.txt``) directly in ``directory``, sorted by
    name; optionally only those with at most ``max_customers`` customers, then the ``first``."""
    d = Path(directory)
    if not d.is_dir():
        raise BenchmarkError(f"{d}: not a directory")
    files = sorted(
        (
            p
            for p in d.iterdir()
            if p.is_file() and is_instance_file(p) and p.name.lower() != "readme.txt"
        ),
        key=_natural_key,
    )
    if max_customers is not None:
        files = [p for p in files if E.load(p).num_customers <= max_customers]
    if first is not None:
        files = files[:first]
    if not files:
        raise BenchmarkError(
            f"{d}: no instance files (.vrp, .tsp, .txt)"
            + (f" with at most {max_customers} customers" if max_customers is not None else "")
        )
    return files


def _natural_key(p: Path) -> tuple[Any, ...]:
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.stem))


def generate_instances(
    problem: str,
    size: int,
    num: int,
    seed: int,
    out_dir: str | Path,
    *,
    distribution: str = "uniform",
) -> list[Path]:
    """Generate ``num`` seeded instances and write them as files under ``out_dir``.

    Uses ``get_problem(problem).generator(num_loc=size, distribution=...)(num, seed=seed)``;
    existing files with the same names are kept (generation is deterministic), so a resumed run
    solves the very same instances.
    """
    if problem not in E.available():
        raise BenchmarkError(
            f"unknown problem {problem!r}; expected one of {', '.join(E.available())}"
        )
    if not E.get_problem(problem).file_io:
        raise BenchmarkError(
            f"problem {problem!r} is tensor-only: no instance files or classical solvers yet"
        )
    if size < 2 or num < 1:
        raise BenchmarkError(f"expected --size >= 2 and --num >= 1, got {size} and {num}")
    out = Path(out_dir)
    ext = ".tsp" if problem == "tsp" else ".vrp"
    names = [f"{problem}{size}-{distribution}-s{seed}-{i:04d}" for i in range(num)]
    paths = [out / f"{name}{ext}" for name in names]
    if all(p.is_file() for p in paths):
        return paths
    prob = E.get_problem(problem)
    try:
        td = prob.generator(num_loc=size, distribution=distribution)(num, seed=seed)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(f"cannot generate {problem} instances: {err}") from err
    for i, (name, path) in enumerate(zip(names, paths)):
        if not path.is_file():
            E.write_instance(prob.to_instance(td[i : i + 1], name=name), path)
    return paths


def load_bks(path: str | Path) -> dict[str, float]:
    """Best-known costs from a CSV with an ``instance`` column and a ``bks`` (or ``cost``) column."""
    p = Path(path)
    if not p.is_file():
        raise BenchmarkError(f"{p}: no such reference file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        key = "bks" if "bks" in cols else "cost" if "cost" in cols else None
        if "instance" not in cols or key is None:
            raise BenchmarkError(
                f"{p}: expected CSV columns 'instance' and 'bks' (or 'cost'), got {cols}"
            )
        out: dict[str, float] = {}
        for row in reader:
            try:
                out[row["instance"].strip()] = float(row[key])
            except (TypeError, ValueError):
                continue
    return out


def reference_cost_from_sol(
    instance_file: str | Path, instance: E.Instance | None = None
) -> float | None:
    """Cost of the ``.sol`` (or ``.opt.tour``) next to an instance file, or None."""
    f = Path(instance_file)
    for cand in (f.with_suffix(".sol"), f.with_suffix(".opt.tour")):
        if cand.is_file():
            inst = instance if instance is not None else E.load(f)
            try:
                return inst.route_cost(E.read_solution(cand, inst))
            except (E.InstanceError, ValueError):
                return None
    return None


# ---------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One solver run: an instance file, a solver, a time limit and a seed."""

    instance_file: str
    instance: str
    problem: str
    n: int
    solver: str
    time_limit: float
    seed: int
    #: solver constructor options as sorted (name, value) pairs, e.g. (("model", "cvrp50"),)
    options: tuple[tuple[str, Any], ...] = ()
    #: the budget in seconds per 100 customers this time limit came from (None: absolute)
    per_100: float | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity used for resuming: instance, solver label, budget, seed."""
        return (self.instance, self.solver, time_label(self.time_limit, self.per_100), str(self.seed))

    def solution_name(self) -> str:
        """File name of this job's solution (``.tour`` for the TSP)."""
        ext = ".tour" if self.problem == "tsp" else ".sol"
        t = f"p{self.per_100:g}" if self.per_100 else f"t{_fmt_num(self.time_limit)}"
        return f"{self.instance}.{self.solver}.{t}.s{self.seed}{ext}"


def _fmt_num(x: float) -> str:
    return f"{float(x):g}"


def _init_worker() -> None:
    # One core per job: torch (imported by nco.envs) must not start its own thread pool.
    import torch

    torch.set_num_threads(1)


def solve_file(
    instance_file: str | Path,
    solver: str,
    time_limit: float,
    seed: int,
    out_file: str | Path | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load an instance, solve it, write the solution (if ``out_file``) and return a result row.

    ``solver`` is a label (:func:`solver_spec`: ``neural+ls`` adds ``refine=True``); ``options``
    go to the solver's constructor (e.g. ``{"model": "cvrp50"}`` for ``neural`` and
    ``hybrid``). ``note`` carries the solver's one-line ``metadata["summary"]`` where it has one
    (the hybrid: what ran for how long, what was skipped). Solver failures (no solution in time, no checkpoint for the problem) become rows
    with an ``error`` and ``feasible`` False instead of exceptions, so one failure does not stop
    a batch.
    """
    inst = E.load(instance_file)
    row: dict[str, Any] = {
        "instance": inst.name,
        "problem": inst.problem,
        "n": inst.num_customers,
        "solver": solver,
        "time_limit": _fmt_num(time_limit),
        "seed": seed,
        "cost": "",
        "feasible": False,
        "violations": "",
        "runtime": "",
        "cpu_time": "",
        "reference": "",
        "gap_pct": "",
        "solution_file": "",
        "instance_file": str(instance_file),
        "error": "",
        "note": "",
    }
    name, extra = solver_spec(solver)
    try:
        obj = get_solver(name, **{**extra, **dict(options or {})})
        prepare = getattr(obj, "prepare", None)
        if prepare is not None:
            prepare(inst)  # one-time set-up (model loading, compilation) outside the budget
    except SolverError as err:
        row.update(error=str(err))
        return row
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        sol = obj.solve(inst, time_limit=float(time_limit), seed=int(seed))
    except SolverError as err:
        row.update(
            error=str(err),
            runtime=f"{time.perf_counter() - t0:.3f}",
            cpu_time=f"{time.process_time() - c0:.3f}",
        )
        return row
    row.update(
        cost=f"{sol.cost:.10g}",
        feasible=sol.feasible,
        violations="; ".join(str(v) for v in sol.violations[:3])
        + (f"; ... ({len(sol.violations)} in all)" if len(sol.violations) > 3 else ""),
        runtime=f"{sol.runtime:.3f}",
        cpu_time=f"{time.process_time() - c0:.3f}",
        note=str(sol.metadata.get("summary", "")),
    )
    if out_file is not None:
        sol.write(out_file)
        row["solution_file"] = str(out_file)
    return row


def _run_job(job: Job, run_dir: str) -> dict[str, Any]:
    out = Path(run_dir) / "solutions" / job.solution_name()
    row = solve_file(
        job.instance_file, job.solver, job.time_limit, job.seed, out, dict(job.options)
    )
    if row["solution_file"]:
        row["solution_file"] = str(Path("solutions") / job.solution_name())
    row["instance"] = job.instance  # the name used for resuming, even if the file names differ
    row["time_per_100"] = _fmt_num(job.per_100) if job.per_100 else ""
    return row


def execute(
    jobs: Sequence[Job],
    run_dir: str | Path,
    *,
    workers: int,
    on_result: Callable[[Job, dict[str, Any]], None],
) -> None:
    """Run jobs in ``workers`` processes (inline for 1) and call ``on_result`` as each ends."""
    if not jobs:
        return
    if workers <= 1:
        for job in jobs:
            on_result(job, _run_job(job, str(run_dir)))
        return
    # spawn, not fork: the parent has torch loaded, and forking a process with OpenMP
    # threads can deadlock the child.
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker
    ) as pool:
        pending: dict[Future[dict[str, Any]], Job] = {}
        queue = list(jobs)
        # Submit a bounded window so the order of completion follows the order of jobs
        # (reference runs first) and an interrupt loses little.
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                job = queue.pop(0)
                pending[pool.submit(_run_job, job, str(run_dir))] = job
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                on_result(job, fut.result())


# ---------------------------------------------------------------------------------- results
def read_results(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``results.csv`` (empty list if the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _row_key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        str(row["instance"]),
        str(row["solver"]),
        _row_label(row),
        str(row["seed"]),
    )


def _row_label(row: dict[str, Any]) -> str:
    return time_label(float(row["time_limit"]), _float(row.get("time_per_100")))


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _is_true(x: Any) -> bool:
    return str(x).strip().lower() in ("true", "1", "yes")


def _write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_write(path) as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _append_result(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def parse_reference(spec: str | None, time_limits: Sequence[float]) -> tuple[str, Any]:
    """``None``/``"sol"`` -> ("sol", None): the ``.sol`` next to each instance; ``"none"``;
    ``"pyvrp"`` or ``"pyvrp:SECONDS"`` (default: the largest time limit); else a BKS CSV path."""
    if spec is None or spec == "sol":
        return "sol", None
    if spec == "none":
        return "none", None
    if spec == "pyvrp" or spec.startswith("pyvrp:"):
        secs = max(time_limits) if spec == "pyvrp" else _float(spec.split(":", 1)[1])
        if secs is None or secs <= 0:
            raise BenchmarkError(f"bad reference {spec!r}; expected pyvrp or pyvrp:SECONDS")
        return "pyvrp", float(secs)
    return "bks", load_bks(spec)


def run_benchmark(
    instance_files: Sequence[str | Path],
    solvers: Sequence[str],
    time_limits: Sequence[float],
    run_dir: str | Path,
    *,
    seed: int = 0,
    workers: int = 1,
    reference: str | None = None,
    progress: Callable[[str], None] | None = None,
    solver_options: Mapping[str, Mapping[str, Any]] | None = None,
    per_100: Sequence[float] | None = None,
) -> list[dict[str, str]]:
    """Solve every instance with every solver at every time limit; write and return the rows.

    Parameters
    ----------
    instance_files : instance file paths (each is loaded once here to validate it).
    solvers : solver labels (:func:`solver_spec`: registry names, ``neural+ls``); combinations a
        solver does not support are skipped (reported).
    time_limits : seconds per run (ignored when ``per_100`` is given).
    run_dir : output folder (``results.csv``, ``solutions/``); existing rows are kept and skipped.
    seed : solver seed recorded per row.
    workers : parallel worker processes.
    reference : see :func:`parse_reference`; the gap column is ``100 * (cost / reference - 1)``.
    progress : called with one line per finished job (default: print to stderr).
    solver_options : constructor options per solver label, e.g. ``{"neural": {"model": "cvrp50"}}``
        (rows are keyed by solver label only: use another run directory for another model).
    per_100 : budgets in seconds per 100 customers (cities): each instance gets
        ``budget * n / 100`` seconds, and rows are grouped by budget (``time_per_100``).
    """
    say = progress or (lambda s: print(s, file=sys.stderr, flush=True))
    unknown = [s for s in solvers if solver_spec(s)[0] not in available_solvers()]
    if unknown:
        raise BenchmarkError(
            f"unknown solver(s) {', '.join(unknown)}; expected some of {', '.join(available_solvers())}"
        )
    if not solvers:
        raise BenchmarkError("no solvers given")
    budgets = list(per_100 or [])
    if any(b <= 0 for b in budgets):
        raise BenchmarkError(f"budgets per 100 customers must be positive, got {budgets}")
    if not budgets and (not time_limits or any(t <= 0 for t in time_limits)):
        raise BenchmarkError(f"time limits must be positive seconds, got {list(time_limits)}")
    if not instance_files:
        raise BenchmarkError("no instances given")
    kind, ref_arg = parse_reference(reference, time_limits)
    opts = {s: dict(o) for s, o in (solver_options or {}).items()}
    solver_objs = {}
    for s in sorted(set(solvers) | ({"pyvrp"} if kind == "pyvrp" else set())):
        name, extra = solver_spec(s)
        solver_objs[s] = get_solver(name, **{**extra, **opts.get(s, {})})

    run = Path(run_dir)
    (run / "solutions").mkdir(parents=True, exist_ok=True)
    instances: list[tuple[Path, E.Instance]] = [(Path(f), E.load(f)) for f in instance_files]
    names = [inst.name for _, inst in instances]
    if len(set(names)) != len(names):
        raise BenchmarkError("instance names must be unique (the NAME field is used as the key)")

    # (solver, seconds, per 100 customers); seconds is None when it scales with the instance
    grid: list[tuple[str, float | None, float | None]] = (
        [(s, None, float(b)) for b in budgets for s in solvers]
        if budgets
        else [(s, float(t), None) for s in solvers for t in time_limits]
    )
    if kind == "pyvrp" and ("pyvrp", ref_arg, None) not in grid:
        grid = [("pyvrp", ref_arg, None), *grid]  # reference runs first: gaps become known early
    jobs: list[Job] = []
    skipped_unsupported: set[tuple[str, str]] = set()
    for path, inst in instances:
        for s, t, b in grid:
            if not solver_objs[s].supports(inst.problem):
                skipped_unsupported.add((s, inst.problem))
                continue
            seconds = t if t is not None else float(b) * max(inst.num_customers, 1) / 100.0  # type: ignore[arg-type]
            jobs.append(
                Job(
                    str(path),
                    inst.name,
                    inst.problem,
                    inst.num_customers,
                    s,
                    seconds,
                    seed,
                    tuple(sorted(opts.get(s, {}).items())),
                    b,
                )
            )
    for s, p in sorted(skipped_unsupported):
        say(f"note: solver {s!r} does not support {p!r}; those runs are skipped")
    if not jobs:
        raise BenchmarkError("no solver supports the given instances")

    results_csv = run / "results.csv"
    existing = read_results(results_csv)
    if existing and list(existing[0]) != RESULT_COLUMNS:
        _write_results(results_csv, existing)  # an older column set: rows are appended below
    done = {_row_key(r) for r in existing}
    todo = [j for j in jobs if j.key not in done]
    if len(todo) < len(jobs):
        say(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} runs already in {results_csv}")
    count = [0]

    def on_result(job: Job, row: dict[str, Any]) -> None:
        _append_result(results_csv, row)
        count[0] += 1
        status = f"cost {row['cost']}" if row["cost"] != "" else f"FAILED ({row['error']})"
        if row["cost"] != "" and not _is_true(row["feasible"]):
            status += " INFEASIBLE"
        say(
            f"[{count[0]:>{len(str(len(todo)))}}/{len(todo)}] {job.instance} {job.solver} {_fmt_num(job.time_limit)}s: {status} in {row['runtime']} s"
        )

    execute(todo, run, workers=workers, on_result=on_result)

    # Fill references and gaps for every row (old and new) and rewrite the file once.
    rows = read_results(results_csv)
    wanted = {j.key for j in jobs}
    ref: dict[str, float | None] = {}
    if kind == "sol":
        ref = {inst.name: reference_cost_from_sol(path, inst) for path, inst in instances}
    elif kind == "bks":
        ref = {name: ref_arg.get(name) for name in names}
    elif kind == "pyvrp":
        for r in rows:
            if (
                r["solver"] == "pyvrp"
                and _float(r["time_limit"]) == ref_arg
                and _is_true(r["feasible"])
                and str(r["seed"]) == str(seed)
            ):
                ref[r["instance"]] = _float(r["cost"])
    for r in rows:
        rc = ref.get(r["instance"])
        cost = _float(r["cost"])
        r["reference"] = f"{rc:.10g}" if rc is not None else ""
        r["gap_pct"] = (
            f"{100.0 * (cost / rc - 1.0):.6f}"
            if rc and cost is not None and _is_true(r["feasible"])
            else ""
        )
    _write_results(results_csv, rows)
    return [r for r in rows if _row_key(r) in wanted]


# ---------------------------------------------------------------------------------- summary
def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per solver x budget: runs, mean cost, mean gap to the reference, mean gap to the best
    solution found for the instance by any row, feasible %, mean wall time and mean CPU time of
    the worker (CPU < wall means the core was shared with other processes), and how the wall
    times kept the budget: the largest overrun in seconds and the % of runs within
    ``time_limit + time_tolerance(time_limit)``.

    Means of cost and gaps are over feasible runs only (the feasible % says how many). A budget
    is a time limit in seconds, or seconds per 100 customers (``time_per_100``, label ``0.3/100``).
    """
    from nco.baselines import time_tolerance

    best: dict[str, float] = {}
    for r in rows:
        c = _float(r["cost"])
        if c is not None and _is_true(r["feasible"]):
            best[r["instance"]] = min(best.get(r["instance"], math.inf), c)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["solver"], _row_label(r))].append(r)

    def order(kv: tuple[tuple[str, str], Any]) -> tuple[float, str]:
        return (float(kv[0][1].split("/")[0]), kv[0][0])

    out = []
    for (solver, label), rs in sorted(groups.items(), key=order):
        feas = [r for r in rs if _is_true(r["feasible"]) and _float(r["cost"]) is not None]
        costs = [_float(r["cost"]) for r in feas]
        gaps = [g for g in (_float(r["gap_pct"]) for r in feas) if g is not None]
        gbest = [
            100.0 * (_float(r["cost"]) / best[r["instance"]] - 1.0)
            for r in feas
            if best.get(r["instance"])
        ]  # type: ignore[operator]
        times = [t for t in (_float(r["runtime"]) for r in rs) if t is not None]
        cpus = [t for t in (_float(r.get("cpu_time")) for r in rs) if t is not None]
        over = [
            (t - float(r["time_limit"]), t <= float(r["time_limit"]) + time_tolerance(float(r["time_limit"])))
            for r in rs
            if (t := _float(r["runtime"])) is not None
        ]
        per = label.endswith("/100")
        out.append(
            {
                "solver": solver,
                "time_limit": float(label.split("/")[0]) if not per else math.nan,
                "time_per_100": float(label.split("/")[0]) if per else math.nan,
                "label": label,
                "runs": len(rs),
                "mean_cost": _mean(costs),
                "mean_gap_ref_pct": _mean(gaps),
                "ref_runs": len(gaps),
                "mean_gap_best_pct": _mean(gbest),
                "feasible_pct": 100.0 * len(feas) / len(rs) if rs else math.nan,
                "mean_time": _mean(times),
                "mean_cpu": _mean(cpus),
                "max_over_s": max((o for o, _ in over), default=math.nan),
                "within_pct": 100.0 * sum(ok for _, ok in over) / len(over) if over else math.nan,
            }
        )
    return out


def _mean(xs: Sequence[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else math.nan


def _f(x: float, spec: str) -> str:
    return format(x, spec) if not math.isnan(x) else "-"


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`summarize` output."""
    head = f"{'solver':<10} {'budget':>8} {'runs':>5} {'mean cost':>12} {'gap ref %':>10} {'gap best %':>10} {'feasible %':>10} {'time s':>7} {'cpu s':>6} {'max over s':>10}"
    lines = [head, "-" * len(head)]
    for s in summary:
        label = s["label"] if s["label"].endswith("/100") else s["label"] + "s"
        lines.append(
            f"{s['solver']:<10} {label:>8} {s['runs']:>5} {_f(s['mean_cost'], '12.6g'):>12} "
            f"{_f(s['mean_gap_ref_pct'], '10.2f'):>10} {_f(s['mean_gap_best_pct'], '10.2f'):>10} "
            f"{_f(s['feasible_pct'], '10.1f'):>10} {_f(s['mean_time'], '7.2f'):>7} {_f(s['mean_cpu'], '6.2f'):>6} "
            f"{_f(s['max_over_s'], '+10.3f'):>10}"
        )
    return "\n".join(lines)


def format_budget_tables(summary: Sequence[dict[str, Any]], *, title: str = "") -> str:
    """One Markdown table per budget of :func:`summarize` output, solvers by mean gap."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by[s["label"]].append(s)
    parts = []
    for label, ss in by.items():
        unit = "s per 100 customers" if label.endswith("/100") else "s"
        head = f"{title} — " if title else ""
        parts.append(f"**{head}{label.split('/')[0]} {unit}**\n")
        parts.append(
            "| solver | runs | mean gap ref % | mean gap best % | feasible % | mean time s | max over limit s | within limit+tol % |"
        )
        parts.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        key = "mean_gap_ref_pct" if all(not math.isnan(s["mean_gap_ref_pct"]) for s in ss) else "mean_gap_best_pct"
        for s in sorted(ss, key=lambda s: (math.isnan(s[key]), s[key])):
            parts.append(
                f"| {s['solver']} | {s['runs']} | {_f(s['mean_gap_ref_pct'], '.2f')} | "
                f"{_f(s['mean_gap_best_pct'], '.2f')} | {_f(s['feasible_pct'], '.0f')} | "
                f"{_f(s['mean_time'], '.2f')} | {_f(s['max_over_s'], '+.3f')} | {_f(s['within_pct'], '.0f')} |"
            )
        parts.append("")
    return "\n".join(parts)


def job_dict(job: Job) -> dict[str, Any]:
    """A job as a plain dict (for logs)."""
    return asdict(job)
