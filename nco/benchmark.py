"""Benchmark runner: instances x solvers x time limits -> ``results.csv``, solution files,
a summary table and a gap-vs-time plot.

A run directory holds everything needed to re-check it from outside::

    RUN_DIR/results.csv          one row per instance x solver x time limit (x seed)
    RUN_DIR/solutions/*.sol      VRPLIB .sol (TSPLIB .tour for the TSP), one per row
    RUN_DIR/instances/*.vrp      generated instances (VRPLIB/TSPLIB files), when generated
    RUN_DIR/gap_vs_time.png      mean gap per solver against the time limit

Runs are resumable: rows already in ``results.csv`` are not solved again, unless the checkpoint
a row was solved with has changed since (each row keeps the checkpoint's content digest, so a
network retrained or replaced under the same name or path is noticed and its rows re-run). With ``workers`` > 1
the jobs run in parallel on an :mod:`nco.executor` (``"process"``: local worker processes of one
thread each, so ``workers`` is the number of cores used; ``"ray"``: Ray tasks, on the cluster of
``RAY_ADDRESS`` or a local instance); the rows are the same with every executor.

A time-independent solver (:func:`time_independent`: ``neural`` without the local search, whose
plan does not depend on the time limit when the limit does not bind) runs once per instance,
without a limit, and that run stands for every budget at least as long as its runtime (its rows
there say so in ``note``); only the budgets it does not fit in are run with their limit.

Solvers are named by labels (:func:`solver_spec`): ``NAME`` (a registry name), ``NAME+ls`` (with
``refine=True``) and ``NAME@MODEL`` (``neural``/``hybrid`` with that checkpoint), e.g.
``neural@mtvrp50``, ``neural+ls@mtvrp50moe``. Rows are keyed by label, so several checkpoints
benchmarked in one run get their own rows and resume independently. Every row names the
instance's variant (``CVRP``, ``VRPTW``, ``OVRPBLTW``, ``MDVRPTW``, ``TSP``, ...), and
:func:`variant_tables` turns the rows into the per-variant table of the multi-variant VRP: each
variant's mean cost per reference solver and each model's mean gap to the best reference plan.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import nco.envs as E
from nco.api import cached_solver  # also registers "neural" and "hybrid" in spawned workers
from nco.baselines import Solver, SolverError, available_solvers
from nco.checkpoints import checkpoint_digest
from nco.envs.io import atomic_write, is_instance_file
from nco.references import gap_pct, reference_from_sol
from nco.solvers import NeuralSolver, fleet_limited

__all__ = [
    "RESULT_COLUMNS",
    "BenchmarkError",
    "Job",
    "VariantTable",
    "collect_instances",
    "format_budget_tables",
    "gap_column",
    "format_summary",
    "generate_instances",
    "model_label",
    "parse_variants",
    "read_results",
    "run_benchmark",
    "solve_file",
    "solver_spec",
    "summarize",
    "time_independent",
    "trained_variants",
    "variant_tables",
]

#: Columns of ``results.csv`` (in order).
RESULT_COLUMNS = [
    "instance",
    "problem",
    "variant",
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
    "model",
    "model_digest",
    "note",
]


class BenchmarkError(ValueError):
    """Bad benchmark input (unknown solver, empty directory, bad reference file, ...)."""


#: Solver label suffix: ``neural+ls`` is the ``neural`` solver with ``refine=True``.
LS_SUFFIX = "+ls"
#: Solver label separator of a checkpoint: ``neural@mtvrp50`` is ``neural`` with that model.
MODEL_SEP = "@"
#: Solvers that take a checkpoint (``model=``).
MODEL_SOLVERS = ("neural", "hybrid")


def solver_spec(label: str) -> tuple[str, dict[str, Any]]:
    """A benchmark solver label -> (registry name, constructor options).

    ``NAME``; ``NAME+ls`` (the solver's ``refine=True``, for the solvers that take it);
    ``NAME@MODEL`` or ``NAME+ls@MODEL`` (``model=MODEL``: a shipped name, a checkpoint file or a
    run directory; :func:`run_benchmark`'s ``solver_options`` may name the checkpoint instead,
    as ``nco benchmark --model A,B`` does with labels ``neural@A``, ``neural@B``).
    """
    name, sep, model = label.partition(MODEL_SEP)
    opts: dict[str, Any] = {}
    if name.endswith(LS_SUFFIX):
        name = name[: -len(LS_SUFFIX)]
        opts["refine"] = True
    if sep:
        if not model:
            raise BenchmarkError(f"solver label {label!r}: expected NAME@MODEL")
        opts["model"] = model
    return name, opts


def model_label(spec: str | Path) -> str:
    """A short name of a checkpoint for solver labels: a run directory's name, the run of
    ``RUN/checkpoints/X.ckpt``, a file's stem, or a shipped name as given."""
    p = Path(spec)
    if p.is_dir():
        return p.resolve().name
    if p.suffix == ".ckpt" and p.parent.name == "checkpoints":  # RUN/checkpoints/last.ckpt
        return p.resolve().parent.parent.name
    return p.stem if p.suffix else str(spec)


#: The budget label of a time-independent solver's one run without a time limit.
FREE = "free"
#: ``note`` of the rows a time-independent solver's run stands for.
FREE_NOTE = "time-independent: one run without a time limit, reported at every budget it fits"


def time_label(time_limit: float | None, per_100: float | None) -> str:
    """How a run's budget is named in keys and tables: ``2`` (seconds), ``0.3/100`` (seconds
    per 100 customers, the time limit then scales with the instance) or :data:`FREE` (no
    limit)."""
    if per_100:
        return f"{float(per_100):g}/100"
    return FREE if time_limit is None else _fmt_num(time_limit)


def time_independent(solver: Solver, instance: E.Instance | None = None) -> bool:
    """Whether a solver's plan does not depend on its time limit as long as the limit does not
    bind: the neural construction without the local search (a fixed decode plan, greedy or
    seeded), on an instance without a fleet limit (a plan over the fleet goes through the
    fleet repair, which uses the time it is given; :func:`nco.solvers.fleet_limited`). Its run
    without a limit is then its result at every budget at least as long as that run; a shorter
    budget binds (fewer starts or transforms) and is run with its limit. The local search
    (``refine``) and the metaheuristics use whatever time they are given."""
    return (
        isinstance(solver, NeuralSolver)
        and not solver.refine
        and (instance is None or not fleet_limited(instance))
    )


# ---------------------------------------------------------------------------------- inputs
def collect_instances(
    directory: str | Path,
    *,
    max_customers: int | None = None,
    first: int | None = None,
    edge_weight: str | None = None,
    scale: float = 1.0,
) -> list[Path]:
    """Instance files (``.vrp``, ``.tsp``, Solomon ``.txt``) directly in ``directory``, sorted by
    name; optionally only those with at most ``max_customers`` customers, then the ``first``.
    ``edge_weight`` and ``scale`` go to :func:`nco.envs.load` where files are read."""
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
        opts = load_options(edge_weight, scale)
        files = [p for p in files if E.load(p, **opts).num_customers <= max_customers]
    if first is not None:
        files = files[:first]
    if not files:
        raise BenchmarkError(
            f"{d}: no instance files (.vrp, .tsp, .txt)"
            + (f" with at most {max_customers} customers" if max_customers is not None else "")
        )
    return files


def load_options(edge_weight: str | None = None, scale: float = 1.0) -> dict[str, Any]:
    """Keyword arguments of :func:`nco.envs.load` (only those that differ from its defaults)."""
    out: dict[str, Any] = {}
    if edge_weight is not None:
        out["edge_weight"] = edge_weight
    if float(scale) != 1.0:
        out["scale"] = float(scale)
    return out


def _natural_key(p: Path) -> tuple[Any, ...]:
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.stem))


def parse_variants(text: str) -> tuple[str, ...]:
    """Multi-variant VRP variant names: ``core`` (the 16 O/B/L/TW variants), ``all`` (48, with
    M and MD), ``train`` (MVMoE's six) or a comma-separated list of names (any case); a
    BenchmarkError names an unknown one."""
    from nco.envs import mtvrp

    key = text.strip().lower()
    if key == "core":
        return mtvrp.VARIANT_NAMES
    if key == "all":
        return mtvrp.ALL_VARIANT_NAMES
    if key == "train":
        return mtvrp.TRAIN_VARIANTS
    try:
        names = tuple(
            mtvrp.ALL_VARIANT_NAMES[mtvrp.variant_index(v.strip())]
            for v in text.split(",")
            if v.strip()
        )
    except ValueError as err:
        raise BenchmarkError(f"--variants: {err}") from None
    if not names:
        raise BenchmarkError("--variants names no variant")
    return names


def generate_instances(
    problem: str,
    size: int,
    num: int,
    seed: int,
    out_dir: str | Path,
    *,
    distribution: str = "uniform",
    variants: Sequence[str] | None = None,
) -> list[Path]:
    """Generate ``num`` seeded instances and write them as files under ``out_dir``.

    Uses ``get_problem(problem).generator(num_loc=size, distribution=...)(num, seed=seed)``;
    existing files with the same names are kept (generation is deterministic), so a resumed run
    solves the very same instances. Files are named ``{problem}{size}-{distribution}-s{seed}-{i}``.

    ``variants`` (``mtvrp`` only; default the 16 core variants, see :func:`parse_variants`):
    the same ``num`` instances in every variant (MVMoE / RouteFinder protocol): one batch drawn
    with every attribute (``OVRPBLTW``, or ``MDOVRPBLTW`` when an MD variant is asked for; the
    extra depots are drawn last, so the other variants' instances do not change) and switched to
    each variant with :func:`nco.envs.mtvrp.to_variant`. One file per instance and variant,
    named ``mtvrp{size}-{VARIANT}-{distribution}-s{seed}-{i}.vrp`` and ordered instance-major
    (a run cut short leaves every variant equally far).
    """
    if problem not in E.available():
        raise BenchmarkError(
            f"unknown problem {problem!r}; expected one of {', '.join(E.available())}"
        )
    prob = E.get_problem(problem)
    if size < 2 or num < 1:
        raise BenchmarkError(f"expected --size >= 2 and --num >= 1, got {size} and {num}")
    if variants is not None and not prob.has_variants:
        family = ", ".join(p for p in E.available() if E.get_problem(p).has_variants)
        raise BenchmarkError(f"--variants applies to {family}, not {problem!r}")
    out = Path(out_dir)
    ext = prob.instance_suffix
    if prob.has_variants:
        from nco.envs import mtvrp

        names_v = tuple(variants) if variants is not None else mtvrp.VARIANT_NAMES
        if not names_v:
            raise BenchmarkError("no variants given")
        grid = [(i, v) for i in range(num) for v in names_v]
        names = [f"{problem}{size}-{v}-{distribution}-s{seed}-{i:04d}" for i, v in grid]
    else:
        grid = [(i, "") for i in range(num)]
        names = [f"{problem}{size}-{distribution}-s{seed}-{i:04d}" for i in range(num)]
    paths = [out / f"{name}{ext}" for name in names]
    if all(p.is_file() for p in paths):
        return paths
    try:
        if prob.has_variants:
            md = any(mtvrp.VARIANTS[v].multi_depot for v in names_v)
            full = ("MDOVRPBLTW" if md else "OVRPBLTW",)
            td = prob.generator(num_loc=size, distribution=distribution, variants=full)(
                num, seed=seed
            )
            per = {v: mtvrp.to_variant(td, v) for v in names_v}
        else:
            td = prob.generator(num_loc=size, distribution=distribution)(num, seed=seed)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(f"cannot generate {problem} instances: {err}") from err
    for (i, v), name, path in zip(grid, names, paths):
        if not path.is_file():
            row = per[v][i : i + 1] if v else td[i : i + 1]
            E.write_instance(prob.to_instance(row, name=name), path)
    return paths


# ---------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """One solver run: an instance file, a solver, a time limit (None: the run without a limit
    of a :func:`time_independent` solver) and a seed."""

    instance_file: str
    instance: str
    problem: str
    n: int
    solver: str
    time_limit: float | None
    seed: int
    #: solver constructor options as sorted (name, value) pairs, e.g. (("model", "cvrp50"),)
    options: tuple[tuple[str, Any], ...] = ()
    #: the budget in seconds per 100 customers this time limit came from (None: absolute)
    per_100: float | None = None
    #: :func:`nco.envs.load` options as sorted (name, value) pairs, e.g. (("edge_weight", "SOLOMON"),)
    load: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity used for resuming: instance, solver label, budget, seed."""
        return (
            self.instance,
            self.solver,
            time_label(self.time_limit, self.per_100),
            str(self.seed),
        )

    def solution_name(self) -> str:
        """File name of this job's solution (the problem's solution suffix: ``.tour`` for the
        TSP, ``.sol`` for the VRPs)."""
        ext = E.get_problem(self.problem).solution_suffix
        if self.per_100:
            t = f"p{self.per_100:g}"
        else:
            t = FREE if self.time_limit is None else f"t{_fmt_num(self.time_limit)}"
        return f"{self.instance}.{_file_safe(self.solver)}.{t}.s{self.seed}{ext}"


def _file_safe(label: str) -> str:
    """A solver label as a file-name part (``neural@runs/x`` -> ``neural@runs_x``)."""
    import re

    return re.sub(r"[^\w.+@=-]", "_", label)


def _fmt_num(x: float) -> str:
    return f"{float(x):g}"


def solve_file(
    instance_file: str | Path,
    solver: str,
    time_limit: float | None,
    seed: int,
    out_file: str | Path | None,
    options: Mapping[str, Any] | None = None,
    load: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Load an instance, solve it, write the solution (if ``out_file``) and return a result row.

    ``solver`` is a label (:func:`solver_spec`: ``neural+ls`` adds ``refine=True``); ``options``
    go to the solver's constructor (e.g. ``{"model": "cvrp50"}`` for ``neural`` and
    ``hybrid``). ``load`` goes to :func:`nco.envs.load` (``edge_weight``, ``scale``). ``note``
    carries the solver's one-line ``metadata["summary"]`` where it has one (the hybrid: what ran
    for how long, what was skipped); ``model`` the checkpoint a neural or hybrid solver used.
    ``time_limit`` None runs a :func:`time_independent` solver without a limit. The solver is
    built once per process (:func:`nco.api.cached_solver`) and prepared outside the limit.
    Solver failures (no solution in time, no checkpoint for the problem) become rows with an
    ``error`` and ``feasible`` False instead of exceptions, so one failure does not stop a batch.
    """
    inst = E.load(instance_file, **dict(load or {}))
    row: dict[str, Any] = {
        "instance": inst.name,
        "problem": inst.problem,
        "variant": inst.variant,
        "n": inst.num_customers,
        "solver": solver,
        "time_limit": "" if time_limit is None else _fmt_num(time_limit),
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
        "model": "",
        "model_digest": "",
        "note": "",
    }
    name, extra = solver_spec(solver)
    try:
        obj = cached_solver(name, {**extra, **dict(options or {})})
        prepare = getattr(obj, "prepare", None)
        if prepare is not None:
            prepare(inst)  # one-time set-up (model loading, compilation) outside the budget
    except SolverError as err:
        row.update(error=str(err))
        return row
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        limit = math.inf if time_limit is None else float(time_limit)
        sol = obj.solve(inst, time_limit=limit, seed=int(seed))
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
        model=str(sol.metadata.get("model") or ""),
    )
    if row["model"] and Path(row["model"]).is_file():
        row["model_digest"] = checkpoint_digest(row["model"])
    if out_file is not None:
        sol.write(out_file)
        row["solution_file"] = str(out_file)
    return row


def _run_job(job: Job, run_dir: str) -> dict[str, Any]:
    out = Path(run_dir) / "solutions" / job.solution_name()
    row = solve_file(
        job.instance_file,
        job.solver,
        job.time_limit,
        job.seed,
        out,
        dict(job.options),
        dict(job.load),
    )
    if row["solution_file"]:
        row["solution_file"] = str(Path("solutions") / job.solution_name())
    row["instance"] = job.instance  # the name used for resuming, even if the file names differ
    row["time_per_100"] = _fmt_num(job.per_100) if job.per_100 else ""
    return row


def _free_row(free: Mapping[str, Any], job: Job) -> dict[str, Any]:
    """The row of a budget that a time-independent solver's run without a limit stands for."""
    return {
        **free,
        "time_limit": _fmt_num(job.time_limit),  # type: ignore[arg-type]
        "time_per_100": _fmt_num(job.per_100) if job.per_100 else "",
        "note": FREE_NOTE,
    }


def execute(
    jobs: Sequence[Job],
    run_dir: str | Path,
    *,
    workers: int,
    on_result: Callable[[Job, dict[str, Any]], None],
    executor: str = "process",
) -> None:
    """Run jobs on ``workers`` workers of an :mod:`nco.executor` (``process``: inline for 1)
    and call ``on_result`` as each ends."""
    from nco.executor import run_tasks

    run_tasks(
        _run_one,
        [(job, str(run_dir)) for job in jobs],
        workers=workers,
        executor=executor,
        on_result=lambda i, row: on_result(jobs[i], row),  # type: ignore[arg-type]
        preload=("nco.benchmark",),
    )


def _run_one(task: tuple[Job, str]) -> dict[str, Any]:
    return _run_job(*task)


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


def _model_changed(row: dict[str, Any]) -> bool:
    """Whether the checkpoint a row was solved with is no longer the file it was: retrained or
    replaced under the same path (digest differs) or gone. Rows without a recorded digest (no
    model, or written before digests were kept) are taken as they are."""
    model, digest = row.get("model") or "", row.get("model_digest") or ""
    if not model or not digest:
        return False
    p = Path(model)
    return not p.is_file() or checkpoint_digest(p) != digest


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
    from nco.references import read_reference_csv

    return "bks", read_reference_csv(spec)


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
    load_options: Mapping[str, Any] | None = None,
    executor: str = "process",
) -> list[dict[str, str]]:
    """Solve every instance with every solver at every time limit; write and return the rows.

    A :func:`time_independent` solver runs once per instance without a limit; its rows at the
    budgets that run fits in (runtime <= the budget's seconds) are that run (``note`` says so,
    the solution file is shared), and only the budgets it does not fit in are run with their
    limit.

    Parameters
    ----------
    instance_files : instance file paths (each is loaded once here to validate it).
    solvers : solver labels (:func:`solver_spec`: registry names, ``neural+ls``,
        ``neural@MODEL``); combinations a solver does not support are skipped (reported).
    time_limits : seconds per run (ignored when ``per_100`` is given).
    run_dir : output folder (``results.csv``, ``solutions/``); existing rows are kept and skipped.
    seed : solver seed recorded per row.
    workers : parallel workers (processes, or Ray tasks in flight).
    reference : see :func:`parse_reference`; the gap column is ``100 * (cost / reference - 1)``.
    progress : called with one line per finished job (default: print to stderr).
    solver_options : constructor options per solver label, e.g. ``{"neural": {"model": "cvrp50"}}``
        (they override the label's own). Rows are keyed by solver label: benchmark several
        checkpoints in one run under labels ``neural@A``, ``neural@B`` (each with its own rows,
        resumed independently); a plain ``neural`` label with another model is not re-run.
    per_100 : budgets in seconds per 100 customers (cities): each instance gets
        ``budget * n / 100`` seconds, and rows are grouped by budget (``time_per_100``).
    load_options : :func:`nco.envs.load` options for every file, e.g.
        ``{"edge_weight": "SOLOMON"}`` (Gehring-Homberger) or ``{"edge_weight": "EUC_2D",
        "scale": 1000}`` (MDVRPTW); also used for the ``.sol`` references.
    executor : ``"process"`` or ``"ray"`` (see :mod:`nco.executor`); the rows are the same.
    """
    say = progress or (lambda s: print(s, file=sys.stderr, flush=True))
    if len(set(solvers)) != len(solvers):
        raise BenchmarkError(f"solver labels must be distinct, got {', '.join(solvers)}")
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
    # each label's full options (label's own, then solver_options): what the job builds
    opts = {
        s: {**solver_spec(s)[1], **opts.get(s, {})}
        for s in sorted(set(solvers) | ({"pyvrp"} if kind == "pyvrp" else set()))
    }
    solver_objs = {}
    for s in opts:
        try:
            solver_objs[s] = cached_solver(solver_spec(s)[0], opts[s])
        except ValueError as err:
            raise BenchmarkError(f"solver {s!r}: {err}") from None
    load = tuple(sorted(dict(load_options or {}).items()))

    run = Path(run_dir)
    (run / "solutions").mkdir(parents=True, exist_ok=True)
    instances: list[tuple[Path, E.Instance]] = [
        (Path(f), E.load(f, **dict(load))) for f in instance_files
    ]
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
                    tuple(sorted(opts[s].items())),
                    b,
                    load,
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
    stale = [r for r in existing if _model_changed(r)]
    if stale:
        names_changed = sorted({r["model"] for r in stale})
        say(
            f"re-running {len(stale)} row(s) of {results_csv}: checkpoint(s) changed since they "
            f"ran ({', '.join(names_changed)})"
        )
        existing = [r for r in existing if not _model_changed(r)]
        _write_results(results_csv, existing)
    done = {_row_key(r) for r in existing}
    todo = [j for j in jobs if j.key not in done]
    if len(todo) < len(jobs):
        say(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} runs already in {results_csv}")
    # a time-independent solver's budgets wait for its one run without a limit (or reuse it)
    by_name = {inst.name: inst for _, inst in instances}

    def free(j: Job) -> bool:
        return time_independent(solver_objs[j.solver], by_name[j.instance])

    waiting: dict[tuple[str, str, str], list[Job]] = defaultdict(list)
    for j in todo:
        if free(j):
            waiting[(j.instance, j.solver, str(j.seed))].append(j)
    free_rows: dict[tuple[str, str, str], dict[str, Any]] = {
        (r["instance"], r["solver"], str(r["seed"])): r
        for r in existing
        if r.get("note") == FREE_NOTE
    }
    free_jobs = [
        replace(group[0], time_limit=None, per_100=None)
        for key, group in waiting.items()
        if key not in free_rows
    ]
    first = [j for j in todo if not free(j)] + free_jobs
    count = [0, len(first)]

    def on_result(job: Job, row: dict[str, Any]) -> None:
        count[0] += 1
        status = f"cost {row['cost']}" if row["cost"] != "" else f"FAILED ({row['error']})"
        if row["cost"] != "" and not _is_true(row["feasible"]):
            status += " INFEASIBLE"
        budget = "without a limit" if job.time_limit is None else f"{_fmt_num(job.time_limit)}s"
        say(
            f"[{count[0]:>{len(str(count[1]))}}/{count[1]}] {job.instance} {job.solver} {budget}: {status} in {row['runtime']} s"
        )
        if job.time_limit is None:
            free_rows[(job.instance, job.solver, str(job.seed))] = row
        else:
            _append_result(results_csv, row)

    execute(first, run, workers=workers, on_result=on_result, executor=executor)
    bound = []
    for key, group in waiting.items():
        got = free_rows[key]
        runtime = _float(got["runtime"])
        for j in group:
            # a failed run fails at every budget; a finished one stands for those it fits in
            if got["cost"] == "" or (runtime is not None and runtime <= float(j.time_limit)):  # type: ignore[arg-type]
                _append_result(results_csv, _free_row(got, j))
            else:
                bound.append(j)
    count[:] = [0, len(bound)]
    execute(bound, run, workers=workers, on_result=on_result, executor=executor)

    # Fill references and gaps for every row (old and new) and rewrite the file once.
    rows = read_results(results_csv)
    wanted = {j.key for j in jobs}
    ref: dict[str, float | None] = {}
    if kind == "sol":
        ref = {inst.name: reference_from_sol(path, inst) for path, inst in instances}
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
            f"{gap_pct(cost, rc):.6f}"
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
    # a problem's costs are not another's: one group (and one table) per problem
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(str(r.get("problem", "")), r["solver"], _row_label(r))].append(r)

    def order(kv: tuple[tuple[str, str, str], Any]) -> tuple[str, float, str]:
        return (kv[0][0], float(kv[0][2].split("/")[0]), kv[0][1])

    out = []
    for (problem, solver, label), rs in sorted(groups.items(), key=order):
        feas = [r for r in rs if _is_true(r["feasible"]) and _float(r["cost"]) is not None]
        costs = [_float(r["cost"]) for r in feas]
        gaps = [g for g in (_float(r["gap_pct"]) for r in feas) if g is not None]
        gbest = [
            100.0 * (c / best[r["instance"]] - 1.0)
            for r in feas
            if best.get(r["instance"]) and (c := _float(r["cost"])) is not None
        ]
        times = [t for t in (_float(r["runtime"]) for r in rs) if t is not None]
        cpus = [t for t in (_float(r.get("cpu_time")) for r in rs) if t is not None]
        over = [
            (
                t - float(r["time_limit"]),
                t <= float(r["time_limit"]) + time_tolerance(float(r["time_limit"])),
            )
            for r in rs
            if (t := _float(r["runtime"])) is not None
        ]
        per = label.endswith("/100")
        out.append(
            {
                "problem": problem,
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


def _by_problem(summary: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """:func:`summarize` rows per problem, in their order."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by[str(s.get("problem", ""))].append(s)
    return by


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`summarize` output (one per problem when the run
    holds several, each headed by the problem's name)."""
    by = _by_problem(summary)
    if len(by) > 1:
        return "\n\n".join(f"{problem}:\n{_summary_table(ss)}" for problem, ss in by.items())
    return _summary_table(summary)


def _summary_table(summary: Sequence[dict[str, Any]]) -> str:
    w = max([10, *(len(s["solver"]) for s in summary)])
    head = f"{'solver':<{w}} {'budget':>8} {'runs':>5} {'mean cost':>12} {'gap ref %':>10} {'gap best %':>10} {'feasible %':>10} {'time s':>7} {'cpu s':>6} {'max over s':>10}"
    lines = [head, "-" * len(head)]
    for s in summary:
        label = s["label"] if s["label"].endswith("/100") else s["label"] + "s"
        lines.append(
            f"{s['solver']:<{w}} {label:>8} {s['runs']:>5} {_f(s['mean_cost'], '12.6g'):>12} "
            f"{_f(s['mean_gap_ref_pct'], '10.2f'):>10} {_f(s['mean_gap_best_pct'], '10.2f'):>10} "
            f"{_f(s['feasible_pct'], '10.1f'):>10} {_f(s['mean_time'], '7.2f'):>7} {_f(s['mean_cpu'], '6.2f'):>6} "
            f"{_f(s['max_over_s'], '+10.3f'):>10}"
        )
    return "\n".join(lines)


def gap_column(summary: Sequence[dict[str, Any]]) -> str:
    """The :func:`summarize` gap to rank and plot by: to the reference when every group has
    one, else to the best plan found for the instance in the run."""
    if all(not math.isnan(s["mean_gap_ref_pct"]) for s in summary):
        return "mean_gap_ref_pct"
    return "mean_gap_best_pct"


def format_budget_tables(summary: Sequence[dict[str, Any]], *, title: str = "") -> str:
    """One Markdown table per budget of :func:`summarize` output, solvers by mean gap (and per
    problem when the run holds several)."""
    problems = _by_problem(summary)
    if len(problems) > 1:
        return "\n".join(
            format_budget_tables(ss, title=f"{title} — {problem}" if title else problem)
            for problem, ss in problems.items()
        )
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
        key = gap_column(ss)
        for s in sorted(ss, key=lambda s: (math.isnan(s[key]), s[key])):
            parts.append(
                f"| {s['solver']} | {s['runs']} | {_f(s['mean_gap_ref_pct'], '.2f')} | "
                f"{_f(s['mean_gap_best_pct'], '.2f')} | {_f(s['feasible_pct'], '.0f')} | "
                f"{_f(s['mean_time'], '.2f')} | {_f(s['max_over_s'], '+.3f')} | {_f(s['within_pct'], '.0f')} |"
            )
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class VariantTable:
    """The per-variant table of one budget (:func:`variant_tables`).

    Attributes
    ----------
    label : the budget (``"1"`` seconds or ``"0.3/100"``).
    text : the printed table.
    references : reference solver labels (the cost columns), in order.
    models : the other solver labels (the gap columns), in order.
    variants : the variants (rows), in order.
    costs : {reference: {variant: mean feasible cost}}.
    gaps : {model: {variant: mean gap % to the best reference plan of each instance}}.
    groups : {model: {"trained" | "zero-shot" | "extended": mean of its variants' gaps}}.
    infeasible : {solver label: {variant: runs without a feasible plan}}.
    """

    label: str
    text: str
    references: tuple[str, ...]
    models: tuple[str, ...]
    variants: tuple[str, ...]
    costs: dict[str, dict[str, float]]
    gaps: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]]
    infeasible: dict[str, dict[str, int]]


def _variant_order(names: Iterable[str]) -> list[str]:
    from nco.envs import mtvrp

    known = {v: i for i, v in enumerate(mtvrp.ALL_VARIANT_NAMES)}
    return sorted(set(names), key=lambda v: (v not in known, known.get(v, 0), v))


def variant_tables(
    rows: Sequence[dict[str, Any]],
    *,
    references: Sequence[str] | None = None,
    trained: Mapping[str, Sequence[str]] | None = None,
) -> list[VariantTable]:
    """Per budget, one table of every variant: each reference solver's mean feasible cost and
    each other solver's (model's) mean gap ``100 * (cost / best - 1)`` over the instances, where
    ``best`` is the lowest feasible reference cost of the instance (MVMoE / RouteFinder protocol).

    Parameters
    ----------
    rows : ``results.csv`` rows (:func:`read_results`); the variant is the ``variant`` column
        (rows of files written before it existed: the variant in the instance name).
    references : the reference solver labels; default every label whose solver takes no
        checkpoint (not ``neural``/``hybrid``).
    trained : {model label: its training variants}. A ``*`` marks the training variants of the
        first model; each model's gaps are averaged over its training variants ("trained"),
        the other 16 core variants ("zero-shot") and the other M/MD variants ("extended").
        A model without an entry averages the core ("zero-shot") and the other variants.

    A model's infeasible or failed run counts in ``infeasible``, not in its mean gap; an
    instance without a feasible reference plan has no gap.
    """
    from nco.envs import mtvrp

    core = set(mtvrp.VARIANT_NAMES)
    labels = list(dict.fromkeys(r["solver"] for r in rows))
    refs = (
        [s for s in labels if solver_spec(s)[0] not in MODEL_SOLVERS]
        if references is None
        else [s for s in references if s in labels]
    )
    models = [s for s in labels if s not in refs]
    trained = {k: tuple(v) for k, v in (trained or {}).items()}
    by_budget: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_budget[_row_label(r)].append(r)
    out = []
    for label in sorted(by_budget, key=lambda x: float(x.split("/")[0])):
        rs = by_budget[label]
        variant_of = {r["instance"]: _row_variant(r) for r in rs}
        variants = _variant_order(variant_of.values())
        cost: dict[tuple[str, str], float | None] = {}
        for r in rs:
            c = _float(r["cost"])
            cost[(r["instance"], r["solver"])] = (
                c if c is not None and _is_true(r["feasible"]) else None
            )
        best: dict[str, float] = {}
        for (inst, s), c in cost.items():
            if s in refs and c is not None:
                best[inst] = min(best.get(inst, math.inf), c)
        instances: dict[str, list[str]] = defaultdict(list)
        for inst, v in variant_of.items():
            instances[v].append(inst)
        costs: dict[str, dict[str, float]] = {s: {} for s in refs}
        gaps: dict[str, dict[str, float]] = {m: {} for m in models}
        infeasible: dict[str, dict[str, int]] = {s: {} for s in [*refs, *models]}
        for v in variants:
            for s in [*refs, *models]:
                ran = [i for i in instances[v] if (i, s) in cost]
                ok = [i for i in ran if cost[(i, s)] is not None]
                infeasible[s][v] = len(ran) - len(ok)
                if s in costs:
                    costs[s][v] = _mean([cost[(i, s)] for i in ok])
                else:
                    gaps[s][v] = _mean(
                        [100.0 * (cost[(i, s)] / best[i] - 1.0) for i in ok if best.get(i)]  # type: ignore[operator]
                    )
        groups: dict[str, dict[str, float]] = {}
        members: dict[str, dict[str, list[str]]] = {}
        for m in models:
            own = set(trained.get(m, ()))
            members[m] = {
                "trained": [v for v in variants if v in own],
                "zero-shot": [v for v in variants if v in core and v not in own],
                "extended": [v for v in variants if v not in core and v not in own],
            }
            groups[m] = {g: _mean([gaps[m][v] for v in vs]) for g, vs in members[m].items() if vs}
        marked = set(trained.get(models[0], ())) if models else set()
        n_of = {r["instance"]: r["n"] for r in rs}
        sizes = sorted({int(n_of[i]) for i in variant_of if str(n_of[i]).isdigit()})
        budget = label + ("" if label.endswith("/100") else " s")
        head = (
            f"{'variant':<13}{'n':>6}"
            + "".join(f"{s[:14]:>15}" for s in refs)
            + "".join(f"{m[:14]:>15}" for m in models)
            + "   infeasible"
        )
        lines = [
            f"variants at {budget} ({len(variant_of)} instances"
            + (f", n={_sizes_text(sizes)}" if sizes else "")
            + f"): mean cost of {', '.join(refs) or '(no reference)'}; "
            "model columns: mean gap % to the best reference plan",
            head,
            "-" * len(head),
        ]
        for v in variants:
            ns = sorted({int(n_of[i]) for i in instances[v] if str(n_of[i]).isdigit()})
            lines.append(
                f"{v + ('*' if v in marked else ''):<13}{_sizes_text(ns):>6}"
                + "".join(_fw(costs[s][v], 15, 4) for s in refs)
                + "".join(_fw(gaps[m][v], 15, 2) for m in models)
                + "   "
                + "/".join(str(infeasible[s][v]) for s in infeasible)
            )
        lines.append("-" * len(head))
        for m in models:
            text = "  ".join(
                f"{g} {_fw(x, 6, 2)}% ({len(members[m][g])})" for g, x in groups[m].items()
            )
            lines.append(f"avg {m}: {text}")
        lines.append(
            f"(infeasible: {'/'.join(infeasible)}"
            + (f"; * = trained variants of {models[0]}" if marked else "")
            + ")"
        )
        for m in models:
            g = groups[m]
            lines.append(
                f"RESULT model={m} budget={label} trained_gap={g.get('trained', math.nan):.3f} "
                f"zeroshot_gap={g.get('zero-shot', math.nan):.3f}"
                + (f" extended_gap={g['extended']:.3f}" if "extended" in g else "")
            )
        out.append(
            VariantTable(
                label,
                "\n".join(lines),
                tuple(refs),
                tuple(models),
                tuple(variants),
                costs,
                gaps,
                groups,
                infeasible,
            )  # fmt: skip
        )
    return out


def _sizes_text(sizes: Sequence[int]) -> str:
    """Instance sizes for a table: ``50/100`` for up to three, ``523-1000`` for more."""
    if len(sizes) > 3:
        return f"{min(sizes)}-{max(sizes)}"
    return "/".join(map(str, sizes))


def trained_variants(model: str | Path) -> tuple[str, ...] | None:
    """The variants a multi-variant checkpoint was trained on (its ``train.variants``; all 16
    core variants when it names none), or None for a checkpoint of another problem."""
    from nco.checkpoints import read_info
    from nco.envs import mtvrp

    info = read_info(model)
    if not _has_variants(str(info.get("problem"))):
        return None
    raw = (info.get("train") or {}).get("variants")
    if not raw:
        return mtvrp.VARIANT_NAMES  # trained on the default generator: the 16 core variants
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(mtvrp.ALL_VARIANT_NAMES[mtvrp.variant_index(n.strip())] for n in names)


def _row_variant(row: dict[str, Any]) -> str:
    """A row's variant: its ``variant`` column, else the variant named in a generated mtvrp
    instance's name (``mtvrp50-VRPTW-uniform-s1-0003``), else its problem in capitals."""
    v = str(row.get("variant") or "")
    if v:
        return v
    parts = str(row["instance"]).split("-")
    if _has_variants(str(row.get("problem"))) and len(parts) > 1:
        return parts[1]
    return str(row.get("problem", "")).upper()


def _has_variants(problem: str) -> bool:
    """Whether ``problem`` is a registered variant family (False for names not registered)."""
    return problem in E.available() and E.get_problem(problem).has_variants


def _fw(x: float, width: int, digits: int) -> str:
    return f"{x:{width}.{digits}f}" if math.isfinite(x) else f"{'-':>{width}}"


def job_dict(job: Job) -> dict[str, Any]:
    """A job as a plain dict (for logs)."""
    return asdict(job)
