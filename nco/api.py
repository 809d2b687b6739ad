"""The Python solving API: ``nco.solve``, ``nco.solve_batch``, ``nco.models``, ``nco.load_model``.

>>> import nco
>>> sol = nco.solve("data/instances/E-n13-k4.vrp", solver="pyvrp", time_limit=1)   # doctest: +SKIP
>>> sol = nco.solve(inst, model="cvrp50", refine=True)                               # doctest: +SKIP
>>> sols = nco.solve_batch(instances, model="cvrp100", augment=8)                    # doctest: +SKIP

(The module is ``nco.api`` rather than ``nco.solve`` so that no submodule import can rebind the
package attribute ``nco.solve`` away from the function.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nco.baselines import Solver, get_solver
from nco.checkpoints import load_model
from nco.devices import resolve_device
from nco.envs import Instance, Solution, load
from nco.solvers import (
    ModelSpec,
    NeuralSolver,
    checkpoint_info,
    select_checkpoint,
    shipped_checkpoints,
)

if TYPE_CHECKING:
    from tensordict import TensorDict

    from nco.baselines.mtvrp import MTVRPResult

__all__ = [
    "ModelCard",
    "default_time_limit",
    "load_model",
    "models",
    "solve",
    "solve_batch",
    "solve_mtvrp",
]

#: Default limit of the time-limited solvers: this many seconds per 100 nodes (at least 1 s).
SECONDS_PER_100_NODES = 1.0


def _as_instance(instance: Instance | str | Path) -> Instance:
    return instance if isinstance(instance, Instance) else load(instance)


def default_time_limit(instance: Instance, solver: Solver) -> float | None:
    """None (no limit) for the neural solver, else ``SECONDS_PER_100_NODES`` per 100 nodes
    (at least 1 s)."""
    if isinstance(solver, NeuralSolver):
        return None
    return max(1.0, SECONDS_PER_100_NODES * instance.num_nodes / 100.0)


def solve(
    instance: Instance | str | Path,
    solver: str | Solver = "neural",
    model: ModelSpec = None,
    time_limit: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Solution:
    """Solve one instance and return a checked :class:`~nco.envs.Solution`.

    Parameters
    ----------
    instance : an :class:`~nco.envs.Instance` or a file path (``.vrp``, ``.tsp``, Solomon
        ``.txt``).
    solver : registry name (``neural``, ``hybrid``, ``pyvrp``, ``ortools``, ``hgs``) or a
        solver object.
    model : for ``neural``/``hybrid``: checkpoint path, shipped name, ``(policy, info)`` or None
        (the shipped checkpoint with the nearest training size).
    time_limit : seconds; None = :func:`default_time_limit`.
    seed : solver seed.
    **options : solver options, e.g. ``strategy="multistart_greedy", augment=8,
        refine=True, device="cuda"`` (neural) or ``backend="ortools"`` (hybrid).

    Raises
    ------
    ValueError
        Unknown solver, options it does not take, a checkpoint of another problem, or a
        ``device`` this machine cannot use (:class:`~nco.devices.DeviceError`).
    FileNotFoundError
        Unknown model name or path (the message lists the shipped checkpoints).
    """
    if options.get("device") is not None:
        resolve_device(options["device"])  # a clear error before anything is loaded
    inst = _as_instance(instance)
    if isinstance(solver, str):
        if model is not None:
            options["model"] = model
        try:
            obj = get_solver(solver, **options)
        except TypeError as err:
            raise ValueError(
                f"solver {solver!r} does not take the option(s) {', '.join(sorted(options))}: {err}"
            ) from None
    else:
        if model is not None or options:
            raise ValueError("model and options apply to a solver name, not a solver object")
        obj = solver
    limit = default_time_limit(inst, obj) if time_limit is None else float(time_limit)
    return obj.solve(inst, time_limit=limit, seed=seed)  # type: ignore[arg-type]


def solve_batch(
    instances: Sequence[Instance | str | Path],
    model: ModelSpec = None,
    *,
    strategy: str = "multistart_greedy",
    augment: int = 8,
    refine: bool = False,
    device: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> list[Solution]:
    """Solve many instances of one problem with the neural solver in batched forward passes.

    Instances of the same size are decoded together (``batch_size`` per pass); different sizes
    form separate groups. Results are in input order, each checked by the independent checker.

    Raises
    ------
    ValueError
        When the instances are of different problems, the model is for another problem, or
        ``device`` cannot be used here (:class:`~nco.devices.DeviceError`).
    """
    device = resolve_device(device)
    insts = [_as_instance(i) for i in instances]
    solver = NeuralSolver(
        model,
        strategy=strategy,
        augment=augment,
        refine=refine,
        device=device,
        batch_size=batch_size,
    )
    return solver.solve_many(insts, seed=seed)


def solve_mtvrp(
    td: TensorDict,
    solver: str = "neural",
    *,
    model: ModelSpec = None,
    time_limit: float | None = None,
    seed: int = 0,
    augment: int = 8,
    device: str | None = None,
    batch_size: int = 256,
    workers: int = 1,
) -> list[MTVRPResult]:
    """Solve a batch of multi-variant VRP instances (:mod:`nco.envs.mtvrp` tensors, any mix of
    the 48 variants) and return one checked result per instance, in order.

    Parameters
    ----------
    td : MTVRP tensors with batch ``[B]``, e.g. from ``mtvrp.MTVRPGenerator`` or
        ``mtvrp.make_instances`` (your own coordinates, demands, windows, ...).
    solver : ``neural`` (a multi-variant checkpoint, POMO multistart greedy, best of the starts
        and of ``augment`` (1 or 8) symmetric augmentations), ``pyvrp`` or ``ortools``.
    model : neural only: checkpoint path, shipped name or ``(policy, info)``; None = the shipped
        mtvrp checkpoint nearest in size.
    time_limit : seconds per instance; required by ``pyvrp`` and ``ortools``, not taken by
        ``neural``.
    seed : PyVRP's seed.
    augment, device, batch_size : neural decoding (device None = CUDA when available).
    workers : classical solvers' worker processes.

    Returns
    -------
    list[MTVRPResult]
        Routes, start depots, float cost, and the independent checker's violations (empty =
        feasible). A neural result's ``runtime`` is its share of the batched decoding time.
    """
    from nco.baselines.mtvrp import MTVRP_SOLVERS, MTVRPResult, solve_mtvrp_batch

    if td.batch_dims != 1:
        raise ValueError(f"solve_mtvrp takes a batch [B] of instances, got {list(td.batch_size)}")
    if solver in MTVRP_SOLVERS:
        if model is not None:
            raise ValueError(f"solver {solver!r} takes no model")
        if time_limit is None:
            raise ValueError(f"solver {solver!r} needs time_limit (seconds per instance)")
        return solve_mtvrp_batch(td, solver, time_limit=time_limit, seed=seed, workers=workers)
    if solver != "neural":
        raise ValueError(
            f"unknown MTVRP solver {solver!r}; expected 'neural' or one of {MTVRP_SOLVERS}"
        )
    if time_limit is not None:
        raise ValueError("solver 'neural' takes no time_limit (it decodes once, batched)")
    import time

    import torch

    from nco.envs import get_problem, mtvrp
    from nco.policies import DecodeConfig

    dev = resolve_device(device)
    size = int(td["locs"].shape[1]) - 1
    if isinstance(model, tuple):
        policy, info = model
        policy = policy.to(dev).eval()
    else:
        spec = select_checkpoint("mtvrp", size) if model is None else model
        policy, info = load_model(spec, problem="mtvrp", device=dev)
    if info.get("problem") != "mtvrp":
        raise ValueError(f"model was trained on problem {info.get('problem')!r}, not 'mtvrp'")
    env = get_problem("mtvrp").make_env(num_loc=size, device=dev)
    config = DecodeConfig(strategy="multistart_greedy", augment=augment, return_actions=False)
    out: list[MTVRPResult] = []
    for lo in range(0, td.shape[0], batch_size):
        chunk = td[lo : lo + batch_size].to(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            roll = policy(chunk, env, config)
        assert roll.best_actions is not None
        tours = roll.best_actions.cpu()
        chunk = chunk.cpu()
        costs = mtvrp.cost(chunk, tours).double().tolist()
        violations = mtvrp.check(chunk, tours)
        names = mtvrp.variant_names(chunk)
        share = (time.perf_counter() - t0) / chunk.shape[0]
        for b in range(chunk.shape[0]):
            k = int(chunk["num_depots"][b])
            routes, starts, _ = mtvrp.split_depot_routes(tours[b].tolist(), k)
            out.append(
                MTVRPResult(
                    solver="neural",
                    variant=names[b],
                    routes=routes,
                    cost=float(costs[b]),
                    violations=violations[b],
                    runtime=share,
                    solver_feasible=not violations[b],
                    metadata={"model": info.get("source", model), "augment": augment},
                    depots=starts,
                )
            )
    return out


@dataclass(frozen=True)
class ModelCard:
    """A checkpoint shipped in ``nco/data/checkpoints``.

    Attributes
    ----------
    name : file stem, usable as ``model=name``.
    path : the checkpoint file.
    problem, size, distribution, preset : from the checkpoint's description.
    info : the full description (policy and training configuration, version).
    card : the markdown model card next to the file (``NAME.md``), or None.
    """

    name: str
    path: Path
    problem: str
    size: int | None
    distribution: str | None
    preset: str | None
    info: dict[str, Any] = field(repr=False)
    card: str | None = field(default=None, repr=False)


def models() -> list[ModelCard]:
    """The shipped checkpoints with their descriptions and model cards (empty when none)."""
    out = []
    for path in shipped_checkpoints():
        info = checkpoint_info(path)
        md = path.with_suffix(".md")
        size = info.get("size")
        out.append(
            ModelCard(
                name=path.stem,
                path=path,
                problem=str(info["problem"]),
                size=int(size) if size is not None else None,
                distribution=info.get("distribution"),
                preset=info.get("preset"),
                info=info,
                card=md.read_text(encoding="utf-8") if md.is_file() else None,
            )
        )
    return sorted(out, key=lambda m: (m.problem, m.size or 0, m.name))

