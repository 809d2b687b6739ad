"""``nco benchmark --problem mtvrp``: multi-variant VRP test sets, PyVRP / OR-Tools references
and trained models in one per-variant table (MVMoE / RouteFinder protocol).

Test sets: for each variant, ``num`` instances of ``size`` customers, the same instances in
every variant: ``MTVRPGenerator(size, variants=("OVRPBLTW",))(num, seed=seed)`` (with the MD
variants: ``MDOVRPBLTW``) switched to each variant with :func:`~nco.envs.mtvrp.to_variant`
(uniform locations, standard capacities, RouteFinder's distributions).

Classical references: :func:`nco.baselines.mtvrp.solve_mtvrp` (every attribute mapped; see that
module), ``time_limit`` wall seconds per instance, single-threaded, ``workers`` processes. Rows
go to ``OUT/results.csv`` as they finish and a rerun skips every (variant, size, num, seed,
index, solver, time limit) already there, so an interrupted run resumes. Costs are the float
:func:`nco.envs.mtvrp.cost` of each plan; ``feasible`` is the independent checker's verdict.

Models: each checkpoint is decoded with POMO multistart greedy and 8 symmetric augmentations
(best kept), checked by :func:`nco.envs.mtvrp.check`; rows go to ``OUT/models.csv`` one variant
at a time, keyed by the SHA-256 of the checkpoint file, and a rerun reuses every variant already
decoded by the same checkpoint bytes (a retrained ``best.ckpt`` is decoded afresh).

Table (printed and written to ``OUT/table.txt``): per variant, the mean cost of each classical
solver and each model's mean gap ``100 * (model / best - 1)`` over instances, ``best`` being
the lowest feasible classical cost of the instance; a ``*`` marks the variants the FIRST model
was trained on. Averages per model over its own training variants ("trained"), the other core
variants ("zero-shot") and, when present, the M/MD variants ("extended"); one line per model::

    RESULT model=<name> trained_gap=<%> zeroshot_gap=<%> [extended_gap=<%>]
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict

__all__ = [
    "MTVRPBenchmark",
    "make_test_set",
    "parse_variants",
    "run_mtvrp_benchmark",
]

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
MODEL_FIELDS = (
    "variant",
    "size",
    "num",
    "seed",
    "index",
    "model",
    "checkpoint_sha256",
    "cost",
    "feasible",
)
#: PyVRP's random seed for every instance (OR-Tools is deterministic).
SOLVER_SEED = 0

Key = tuple[str, int, int, int, int, str, float]
#: (variant, size, num, seed, index, checkpoint digest): a model row is reused while the
#: checkpoint file's bytes are unchanged, whatever its name.
ModelKey = tuple[str, int, int, int, int, str]


def parse_variants(text: str) -> tuple[str, ...]:
    """``core`` (the 16 O/B/L/TW variants), ``all`` (48, with M and MD), ``train`` (MVMoE's
    six) or a comma-separated list of names; ValueError naming an unknown one."""
    from nco.envs import mtvrp

    key = text.strip().lower()
    if key == "core":
        return mtvrp.VARIANT_NAMES
    if key == "all":
        return mtvrp.ALL_VARIANT_NAMES
    if key == "train":
        return mtvrp.TRAIN_VARIANTS
    names = tuple(
        mtvrp.ALL_VARIANT_NAMES[mtvrp.variant_index(v)] for v in text.split(",") if v.strip()
    )
    if not names:
        raise ValueError("--variants names no variant")
    return names


def make_test_set(variants: Sequence[str], size: int, num: int, seed: int) -> dict[str, TensorDict]:
    """The fixed test sets {variant: batch [num]}: the same instances as every variant."""
    from nco.envs import mtvrp

    md = any(mtvrp.VARIANTS[v].multi_depot for v in variants)
    full = mtvrp.MTVRPGenerator(size, variants=("MDOVRPBLTW" if md else "OVRPBLTW",))
    data = full(num, seed=seed)
    return {v: mtvrp.to_variant(data, v) for v in variants}


# ----------------------------------------------------------------------------- classical
def _instance_key(row: dict[str, Any]) -> tuple[str, int, int, int, int]:
    return (
        str(row["variant"]),
        int(row["size"]),
        int(row["num"]),
        int(row["seed"]),
        int(row["index"]),
    )


def _key(row: dict[str, Any]) -> Key:
    return (*_instance_key(row), str(row["solver"]), round(float(row["time_limit"]), 6))


def _read_csv(
    path: Path, fields: Sequence[str], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, dict[str, Any]] | None:
    """{key: row} of a results file, None when its columns are not ``fields``; a line cut short
    by a killed run is skipped (its job is simply run again), and a missing final newline is
    restored so appended rows stay whole."""
    rows: dict[Any, dict[str, Any]] = {}
    with path.open(newline="") as f:
        text = f.read()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != tuple(fields):
        return None
    for r in reader:
        if None in r or any(r.get(k) in (None, "") for k in fields):
            continue
        try:
            float(r["cost"]), int(r["feasible"])
            rows[key(r)] = r
        except ValueError:
            continue
    if text and not text.endswith("\n"):  # written only when cut: a read-only file still reads
        with path.open("a", newline="") as f:
            f.write("\n")
    return rows


def _read_rows(path: Path) -> dict[Key, dict[str, Any]]:
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    rows = _read_csv(path, FIELDS, _key)
    if rows is None:
        raise ValueError(
            f"{path}: columns are not {','.join(FIELDS)}; move it aside or choose another --out"
        )
    return rows


def _job(args: tuple[Key, TensorDict]) -> tuple[Key, dict[str, Any]]:
    from nco.baselines.mtvrp import solve_mtvrp

    key, td = args
    variant, size, num, seed, index, solver, limit = key
    res = solve_mtvrp(td, solver, time_limit=limit, seed=SOLVER_SEED)
    return key, {
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


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_solvers(
    sets: dict[str, TensorDict],
    size: int,
    num: int,
    seed: int,
    solvers: Sequence[str],
    time_limit: float,
    workers: int,
    path: Path,
    say: Callable[[str], None],
) -> dict[Key, dict[str, Any]]:
    rows = _read_rows(path)
    jobs = [
        ((v, size, num, seed, i, s, round(time_limit, 6)), sets[v][i : i + 1])
        for i in range(num)  # instance-major: a run cut short leaves every variant equally far
        for v in sets
        for s in solvers
    ]
    jobs = [j for j in jobs if j[0] not in rows]
    total = len(jobs)
    say(f"classical: {total} runs to do ({len(rows)} rows already in {path})")
    if not total:
        return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.is_file() or path.stat().st_size == 0
    t0 = time.perf_counter()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()

        def record(done: Iterable[tuple[Key, dict[str, Any]]]) -> None:
            for k, (key, row) in enumerate(done, 1):
                rows[key] = row
                writer.writerow(row)
                f.flush()
                if k % max(1, total // 20) == 0 or k == total:
                    say(f"  {k}/{total} runs, {time.perf_counter() - t0:.0f} s")

        if workers <= 1:
            record(_job(j) for j in jobs)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = [pool.submit(_job, j) for j in jobs]
                record(fut.result() for fut in as_completed(futures))
    return rows


# ----------------------------------------------------------------------------- models
def _model_label(spec: str) -> str:
    p = Path(spec)
    if p.is_dir():
        return p.name
    if p.suffix == ".ckpt" and p.parent.name == "checkpoints":  # RUN/checkpoints/last.ckpt
        return p.parent.parent.name
    return p.stem if p.suffix else spec


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _model_key(row: dict[str, Any]) -> ModelKey:
    return (*_instance_key(row), str(row["checkpoint_sha256"]))


def _open_model_store(path: Path, say: Callable[[str], None]) -> dict[ModelKey, dict[str, Any]]:
    """The rows already in ``path``; a file in another layout is replaced by an empty one."""
    from nco.envs.io import atomic_write

    if path.is_file() and path.stat().st_size > 0:
        rows = _read_csv(path, MODEL_FIELDS, _model_key)
        if rows is not None:
            return rows
        say(f"{path}: columns are not {','.join(MODEL_FIELDS)} (an older nco?); starting it afresh")
    with atomic_write(path) as f:
        csv.DictWriter(f, fieldnames=MODEL_FIELDS).writeheader()
    return {}


def _run_model(
    spec: str,
    label: str,
    sets: dict[str, TensorDict],
    key: tuple[int, int, int],
    device: str,
    batch_size: int,
    store: tuple[Path, dict[ModelKey, dict[str, Any]]],
    say: Callable[[str], None],
) -> tuple[dict[str, list[tuple[float, bool]]], dict[str, Any]]:
    from nco.api import solve_mtvrp
    from nco.checkpoints import load_model

    size, num, seed = key
    path, rows = store
    policy, info = load_model(spec, problem="mtvrp", device=device)
    digest = _digest(Path(info["source"]))
    out: dict[str, list[tuple[float, bool]]] = {}
    reused = 0
    t0 = time.perf_counter()
    for variant, td in sets.items():
        keys = [(variant, size, num, seed, i, digest) for i in range(num)]
        if all(k in rows for k in keys):
            out[variant] = [(float(rows[k]["cost"]), bool(int(rows[k]["feasible"]))) for k in keys]
            reused += 1
            continue
        res = solve_mtvrp(td, model=(policy, info), device=device, batch_size=batch_size)
        out[variant] = [(r.cost, r.feasible) for r in res]
        block = io.StringIO()
        writer = csv.DictWriter(block, fieldnames=MODEL_FIELDS)
        for k, r in zip(keys, res, strict=True):
            row = dict(
                zip(MODEL_FIELDS[:5], k[:5], strict=True),
                model=label, checkpoint_sha256=digest,
                cost=f"{r.cost:.6f}", feasible=int(r.feasible),
            )  # fmt: skip
            rows[k] = row
            writer.writerow(row)
        with path.open("a", newline="") as f:  # one variant per write: a cut run keeps the rest
            f.write(block.getvalue())
    say(
        f"model {spec}: {len(sets) - reused} variants decoded in {time.perf_counter() - t0:.1f} s"
        + (f", {reused} reused from {path}" if reused else "")
    )
    return out, info


# ----------------------------------------------------------------------------- table
def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _fmt(x: float, width: int, digits: int) -> str:
    return f"{x:{width}.{digits}f}" if math.isfinite(x) else f"{'-':>{width}}"


@dataclass(frozen=True)
class MTVRPBenchmark:
    """What :func:`run_mtvrp_benchmark` measured.

    Attributes
    ----------
    table : the printed table (also in ``OUT/table.txt``).
    gaps : {model label: {variant: mean gap % to the best classical cost}}.
    groups : {model label: {"trained" | "zero-shot" | "extended": mean of its variants' gaps}}.
    classical : {solver: {variant: mean feasible cost}}.
    infeasible : {solver or model label: {variant: instances without a feasible plan}}.
    """

    table: str
    gaps: dict[str, dict[str, float]]
    groups: dict[str, dict[str, float]]
    classical: dict[str, dict[str, float]]
    infeasible: dict[str, dict[str, int]]


def _trained_variants(info: dict[str, Any]) -> tuple[str, ...]:
    from nco.envs import mtvrp

    raw = (info.get("train") or {}).get("variants")
    if not raw:
        return mtvrp.VARIANT_NAMES  # trained on the default generator: all 16 core variants
    names = raw.split(",") if isinstance(raw, str) else list(raw)
    return tuple(mtvrp.ALL_VARIANT_NAMES[mtvrp.variant_index(n.strip())] for n in names)


def run_mtvrp_benchmark(
    *,
    variants: Sequence[str],
    size: int,
    num: int,
    seed: int,
    solvers: Sequence[str],
    time_limit: float,
    workers: int,
    models: Sequence[str],
    out: str | Path,
    device: str = "cpu",
    batch_size: int = 100,
    say: Callable[[str], None] = print,
) -> MTVRPBenchmark:
    """Solve the test sets with the classical solvers and decode them with each model; write
    ``OUT/results.csv``, ``OUT/models.csv`` and ``OUT/table.txt`` (see the module docstring)."""
    from nco.baselines.mtvrp import MTVRP_SOLVERS
    from nco.envs import mtvrp
    from nco.envs.io import atomic_write

    bad = [s for s in solvers if s not in MTVRP_SOLVERS]
    if bad or not solvers:
        raise ValueError(
            f"mtvrp references: solvers must be some of {', '.join(MTVRP_SOLVERS)}, got {', '.join(bad) or '(none)'}"
        )
    if num < 1 or size < 1:
        raise ValueError(f"need --num >= 1 and --size >= 1, got {num} and {size}")
    if not time_limit > 0:
        raise ValueError(f"time limit must be positive, got {time_limit}")
    labels = [_model_label(m) for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"models need distinct names, got {labels}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = make_test_set(variants, size, num, seed)
    rows = _run_solvers(
        sets, size, num, seed, solvers, time_limit, workers, out / "results.csv", say
    )
    results: dict[str, dict[str, list[tuple[float, bool]]]] = {}
    trained: dict[str, tuple[str, ...]] = {}
    if models:
        store = (out / "models.csv", _open_model_store(out / "models.csv", say))
    for spec, label in zip(models, labels, strict=True):
        results[label], info = _run_model(
            spec, label, sets, (size, num, seed), device, batch_size, store, say
        )
        trained[label] = _trained_variants(info)

    limit = round(time_limit, 6)
    classical: dict[str, dict[str, float]] = {s: {} for s in solvers}
    infeasible: dict[str, dict[str, int]] = {s: {} for s in [*solvers, *labels]}
    gaps: dict[str, dict[str, float]] = {m: {} for m in labels}
    marked = trained[labels[0]] if labels else mtvrp.TRAIN_VARIANTS
    head = (
        f"{'variant':<13}{'n':>5}"
        + "".join(f"{s:>11}" for s in solvers)
        + "".join(f"{m[:14]:>15}" for m in labels)
        + "   infeasible"
    )
    lines = [
        f"mtvrp n={size}: {num} instances per variant (seed {seed}); classical at {time_limit:g} s; "
        "model columns: mean gap % to the best classical cost (x8 augmentation)",
        head,
        "-" * len(head),
    ]
    for variant in variants:
        per: dict[str, list[float | None]] = {}
        for s in solvers:
            vals: list[float | None] = []
            for i in range(num):
                r = rows.get((variant, size, num, seed, i, s, limit))
                vals.append(float(r["cost"]) if r is not None and int(r["feasible"]) else None)
            per[s] = vals
            classical[s][variant] = _mean([v for v in vals if v is not None])
            infeasible[s][variant] = sum(v is None for v in vals)
        best = [
            min((v for v in (per[s][i] for s in solvers) if v is not None), default=None)
            for i in range(num)
        ]
        cells = []
        for label in labels:
            res = results[label][variant]
            inst = [100.0 * (c / b - 1.0) for (c, ok), b in zip(res, best, strict=True) if ok and b]
            gaps[label][variant] = _mean(inst)
            infeasible[label][variant] = sum(not ok for _, ok in res)
            cells.append(_fmt(gaps[label][variant], 15, 2))
        bad_counts = "/".join(str(infeasible[k][variant]) for k in infeasible)
        lines.append(
            f"{variant + ('*' if variant in marked else ''):<13}{size:>5}"
            + "".join(_fmt(classical[s][variant], 11, 4) for s in solvers)
            + "".join(cells)
            + f"   {bad_counts}"
        )
    lines.append("-" * len(head))
    groups: dict[str, dict[str, float]] = {}
    core = set(mtvrp.VARIANT_NAMES)
    for label in labels:
        own = set(trained[label])
        member = {
            "trained": [v for v in variants if v in own],
            "zero-shot": [v for v in variants if v in core and v not in own],
            "extended": [v for v in variants if v not in core and v not in own],
        }
        groups[label] = {g: _mean([gaps[label][v] for v in vs]) for g, vs in member.items() if vs}
        text = "  ".join(
            f"{g} {_fmt(x, 6, 2)}% ({len(member[g])})" for g, x in groups[label].items()
        )
        lines.append(f"avg {label}: {text}")
    lines.append(
        f"(infeasible: {'/'.join(infeasible)}; * = trained variants of {labels[0] if labels else 'MVMoE'})"
    )
    for label in labels:
        g = groups[label]
        lines.append(
            f"RESULT model={label} trained_gap={g.get('trained', math.nan):.3f} "
            f"zeroshot_gap={g.get('zero-shot', math.nan):.3f}"
            + (f" extended_gap={g['extended']:.3f}" if "extended" in g else "")
        )
    table = "\n".join(lines)
    with atomic_write(out / "table.txt") as f:
        f.write(table + "\n")
    say(table)
    return MTVRPBenchmark(table, gaps, groups, classical, infeasible)
