"""Best-known (reference) costs of instances, and the gap to them.

One reader for every command: ``nco solve`` and ``nco evaluate`` print the gap to the best-known
cost, ``nco benchmark`` fills its ``reference`` and ``gap_pct`` columns. A reference comes from

* a CSV table by instance name (columns ``instance`` and ``bks``, or ``instance`` and ``cost``):
  :func:`read_reference_csv`;
* a ``bks.csv`` beside the instance file (as shipped in ``data/instances``):
  :func:`reference_beside`;
* the solution file next to the instance (``NAME.sol``, TSPLIB ``NAME.opt.tour``), costed by the
  checker in the instance's convention: :func:`reference_from_sol`;
* for an ordered set without names (training's validation set), a CSV column or a list of
  numbers: :func:`read_reference_values`.

:func:`best_known` tries them in that order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nco.envs import Instance

__all__ = [
    "BKS_FILE",
    "PRINT_DIGITS",
    "ReferenceFileError",
    "best_known",
    "format_gap",
    "gap_pct",
    "read_reference_csv",
    "read_reference_values",
    "reference_beside",
    "reference_from_sol",
]

#: The table of best-known costs looked for beside an instance file.
BKS_FILE = "bks.csv"
#: Significant digits of the costs the commands print, e.g. ``812.877`` (solution files keep
#: 10; both through :func:`nco.envs.io.format_cost`, integral costs as integers).
PRINT_DIGITS = 6


class ReferenceFileError(ValueError):
    """A reference table that cannot be read (missing file, missing columns)."""


def read_reference_csv(path: str | Path) -> dict[str, float]:
    """Best-known costs by instance name from a CSV with an ``instance`` column and a ``bks``
    (or ``cost``) column; rows whose value is not a number are left out.

    Raises
    ------
    ReferenceFileError
        When the file does not exist or lacks those columns (the message names the file and the
        columns it has).
    """
    p = Path(path)
    if not p.is_file():
        raise ReferenceFileError(f"{p}: no such reference file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        key = "bks" if "bks" in cols else "cost" if "cost" in cols else None
        if "instance" not in cols or key is None:
            raise ReferenceFileError(
                f"{p}: expected CSV columns 'instance' and 'bks' (or 'cost'), got {cols}"
            )
        out: dict[str, float] = {}
        for row in reader:
            try:
                value = float(row[key])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                out[(row["instance"] or "").strip()] = value
    return out


def read_reference_values(spec: str, count: int) -> list[float]:
    """Reference costs of an ordered instance set (training's ``--val-reference``, one per
    validation instance, in order): a CSV file (column ``cost``, ``reference`` or ``bks``, or
    the last column) or comma-separated numbers."""
    values: list[float]
    looks_like_numbers = all(
        x.strip()
        .replace(".", "", 1)
        .replace("e", "", 1)
        .replace("-", "")
        .replace("+", "")
        .isdigit()
        for x in spec.split(",")
        if x.strip()
    )
    path = Path(spec)
    if not looks_like_numbers and path.is_file():
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError(f"--val-reference {spec}: empty file")
        header = [h.strip().lower() for h in rows[0]]
        try:
            float(rows[0][-1])
            col, body = len(rows[0]) - 1, rows
        except ValueError:
            col = next(
                (header.index(k) for k in ("cost", "reference", "bks", "obj") if k in header),
                len(header) - 1,
            )
            body = rows[1:]
        try:
            values = [float(r[col]) for r in body if r]
        except (ValueError, IndexError) as err:
            raise ValueError(
                f"--val-reference {spec}: not a number in column {col + 1} ({err})"
            ) from err
    else:
        try:
            values = [float(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ValueError(
                f"--val-reference {spec!r}: neither a file nor comma-separated numbers"
            ) from None
    if len(values) != count:
        raise ValueError(
            f"--val-reference: {len(values)} reference costs for {count} validation instances"
        )
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError("--val-reference: reference costs must be positive numbers")
    return values


def reference_beside(instance_file: str | Path, name: str | None = None) -> float | None:
    """The best-known cost of an instance from the :data:`BKS_FILE` in its folder (looked up by
    ``name``, the instance's NAME, or the file's stem), or None when there is no such table or
    no row for it. A table without the expected columns is treated as absent: it is not the
    user's input, only a file that happens to lie there."""
    f = Path(instance_file)
    table = f.parent / BKS_FILE
    if not table.is_file():
        return None
    try:
        costs = read_reference_csv(table)
    except ReferenceFileError:
        return None
    for key in (name, f.stem):
        if key is not None and key in costs:
            return costs[key]
    return None


def reference_from_sol(
    instance_file: str | Path,
    instance: Instance | None = None,
    load: Mapping[str, Any] | None = None,
) -> float | None:
    """Cost of the ``.sol`` (or ``.opt.tour``) next to an instance file, or None.

    The routes are costed by the checker (:func:`nco.envs.load_solution`, with their depots: a
    multi-depot ``.sol`` names them, or numbers its routes by the instance's vehicles), so
    multi-depot and open-route references cost as the solvers' plans do, whatever the file's
    ``Cost`` line says. ``instance`` is the loaded instance (else the file is loaded with the
    :func:`nco.envs.load` options ``load``, e.g. ``{"edge_weight": "EUC_2D", "scale": 1000}``
    for the MDVRPTW files, whose references are in those units). None also when the solution
    does not fit the instance (a depot it does not state, a node out of range).
    """
    import nco.envs as E

    f = Path(instance_file)
    for cand in (f.with_suffix(".sol"), f.with_suffix(".opt.tour")):
        if cand.is_file():
            inst = instance if instance is not None else E.load(f, **dict(load or {}))
            try:
                cost = E.load_solution(cand, inst).cost
            except (E.InstanceError, ValueError):
                return None
            return cost if math.isfinite(cost) else None
    return None


def best_known(
    instance_file: str | Path,
    instance: Instance | None = None,
    *,
    table: Mapping[str, float] | None = None,
    load: Mapping[str, Any] | None = None,
) -> float | None:
    """The reference cost of an instance file: from ``table`` (by the instance's name) when one
    is given, else from the :data:`BKS_FILE` beside the file, else from the solution file next
    to it (:func:`reference_from_sol`); None when none of them has it."""
    name = instance.name if instance is not None else None
    if table is not None:
        return table.get(name if name is not None else Path(instance_file).stem)
    found = reference_beside(instance_file, name)
    if found is not None:
        return found
    return reference_from_sol(instance_file, instance, load)


def gap_pct(cost: float, reference: float) -> float:
    """``100 * (cost / reference - 1)``: the gap of a cost to a reference, in percent."""
    return 100.0 * (cost / reference - 1.0)


def format_gap(cost: float, reference: float, decimals: int = 2) -> str:
    """The gap to a reference as printed, e.g. ``+0.25%``; a gap that rounds to zero prints as
    ``+0.00%``, never ``-0.00%``."""
    pct = round(gap_pct(cost, reference), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{pct:+.{decimals}f}%"
