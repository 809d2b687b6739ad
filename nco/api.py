"""The Python solving API: ``nco.solve``, ``nco.solve_batch``, ``nco.models``, ``nco.load_model``.

>>> import nco
>>> sol = nco.solve("data/instances/E-n13-k4.vrp", solver="pyvrp", time_limit=1)   # doctest: +SKIP
>>> sol = nco.solve(inst, model="cvrp50", refine=True)                               # doctest: +SKIP
>>> sols = nco.solve_batch(instances, model="cvrp100", augment=8)                    # doctest: +SKIP
>>> td = nco.get_problem("mtvrp").generator(num_loc=50)(64, seed=0)                  # doctest: +SKIP
>>> sols = nco.solve_batch(td, solver="pyvrp", time_limit=1, workers=2)              # doctest: +SKIP

Tensor batches (a TensorDict with batch ``[B]``, e.g. from a problem's generator) are accepted
wherever instances are: each row becomes an :class:`~nco.envs.Instance` through
``get_problem(problem).to_instance`` (the problem is the registered one whose instance keys the
batch holds, or ``problem=``), so every solver returns checked :class:`~nco.envs.Solution` s.

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
    shipped_checkpoints,
)

if TYPE_CHECKING:
    from tensordict import TensorDict

__all__ = [
    "ModelCard",
    "default_time_limit",
    "instances_from_tensors",
    "load_model",
    "models",
    "solve",
    "solve_batch",
]

#: Default limit of the time-limited solvers: this many seconds per 100 nodes (at least 1 s).
SECONDS_PER_100_NODES = 1.0


def _is_tensordict(x: Any) -> bool:
    from tensordict import TensorDictBase

    return isinstance(x, TensorDictBase)


def _tensor_problem(td: TensorDict) -> str:
    """The registered problem whose instance keys ``td`` holds (the most specific one)."""
    from nco.envs import available, get_problem

    keys = set(td.keys())
    fits = [
        (len(get_problem(p).instance_keys), p)
        for p in available()
        if set(get_problem(p).instance_keys) <= keys
    ]
    if not fits:
        raise ValueError(
            f"a tensor batch with keys {sorted(keys)} matches no problem's instance keys; "
            "pass problem="
        )
    return max(fits)[1]


def instances_from_tensors(
    td: TensorDict, *, problem: str | None = None, name: str = "instance"
) -> list[Instance]:
    """Each row of a tensor batch ``[B]`` (or one instance, batch ``[]``) as an
    :class:`~nco.envs.Instance` named ``{name}{row}``, through ``get_problem(problem).to_instance``.

    ``problem`` defaults to the registered problem whose instance keys the batch holds (the one
    with the most keys, e.g. ``mtvrp`` for :class:`~nco.envs.mtvrp.MTVRPGenerator` batches).
    """
    from nco.envs import get_problem

    prob = get_problem(problem if problem is not None else _tensor_problem(td))
    if td.batch_dims == 0:
        return [prob.to_instance(td, name=f"{name}0")]
    if td.batch_dims != 1:
        raise ValueError(f"expected a tensor batch [B] of instances, got {list(td.batch_size)}")
    return [prob.to_instance(td[i : i + 1], name=f"{name}{i}") for i in range(td.shape[0])]


def _as_instance(instance: Instance | str | Path | TensorDict) -> Instance:
    if isinstance(instance, Instance):
        return instance
    if _is_tensordict(instance):
        insts = instances_from_tensors(instance)  # type: ignore[arg-type]
        if len(insts) != 1:
            raise ValueError(
                f"solve takes one instance; a tensor batch of {len(insts)} goes to solve_batch"
            )
        return insts[0]
    return load(instance)  # type: ignore[arg-type]


def _as_instances(
    instances: Sequence[Instance | str | Path] | TensorDict, problem: str | None = None
) -> list[Instance]:
    if _is_tensordict(instances):
        return instances_from_tensors(instances, problem=problem)  # type: ignore[arg-type]
    if problem is not None:
        raise ValueError("problem= applies to a tensor batch, not to instances or files")
    return [_as_instance(i) for i in instances]  # type: ignore[union-attr]


def _build_solver(name: str, options: dict[str, Any]) -> Solver:
    """``get_solver(name, **options)``, with options the solver does not take as a ValueError."""
    try:
        return get_solver(name, **options)
    except TypeError as err:
        raise ValueError(
            f"solver {name!r} does not take the option(s) {', '.join(sorted(options))}: {err}"
        ) from None


def default_time_limit(instance: Instance, solver: Solver) -> float | None:
    """None (no limit) for the neural solver, else ``SECONDS_PER_100_NODES`` per 100 nodes
    (at least 1 s)."""
    if isinstance(solver, NeuralSolver):
        return None
    return max(1.0, SECONDS_PER_100_NODES * instance.num_nodes / 100.0)


def solve(
    instance: Instance | str | Path | TensorDict,
    solver: str | Solver = "neural",
    model: ModelSpec = None,
    time_limit: float | None = None,
    seed: int = 0,
    **options: Any,
) -> Solution:
    """Solve one instance and return a checked :class:`~nco.envs.Solution`.

    Parameters
    ----------
    instance : an :class:`~nco.envs.Instance`, a file path (``.vrp``, ``.tsp``, Solomon
        ``.txt``) or one instance as tensors (batch ``[]`` or ``[1]``, e.g. ``td[i]`` of a
        generated batch; see :func:`instances_from_tensors`).
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
        obj = _build_solver(solver, options)
    else:
        if model is not None or options:
            raise ValueError("model and options apply to a solver name, not a solver object")
        obj = solver
    limit = default_time_limit(inst, obj) if time_limit is None else float(time_limit)
    return obj.solve(inst, time_limit=limit, seed=seed)  # type: ignore[arg-type]


def solve_batch(
    instances: Sequence[Instance | str | Path] | TensorDict,
    model: ModelSpec = None,
    *,
    solver: str = "neural",
    time_limit: float | None = None,
    strategy: str = "multistart_greedy",
    augment: int = 8,
    refine: bool = False,
    device: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    problem: str | None = None,
) -> list[Solution]:
    """Solve many instances of one problem; results in input order, each a checked
    :class:`~nco.envs.Solution`.

    With the neural solver, instances of the same size are decoded together (``batch_size``
    per pass); different sizes form separate groups. Another registry name (``pyvrp``,
    ``ortools``, ``hgs``, ``hybrid``) solves the instances one by one, in ``workers`` processes.

    Parameters
    ----------
    instances : instances, file paths, or a tensor batch ``[B]`` (e.g. a mixed-variant
        ``mtvrp`` batch from its generator; each row becomes an instance named ``instance{i}``,
        see :func:`instances_from_tensors`).
    model : for ``neural``/``hybrid``: checkpoint path, shipped name, ``(policy, info)`` or None
        (the shipped checkpoint nearest in size).
    solver : registry name; default ``neural``.
    time_limit : seconds per instance; None = no limit for ``neural`` (one batched decode), else
        :func:`default_time_limit` per instance.
    strategy, augment, batch_size : neural decoding (not taken by the other solvers).
    refine : the local search after construction (``neural`` and ``hybrid``).
    device : ``cpu``/``cuda``/None (CUDA when available) for the network.
    seed : solver seed.
    workers : processes for the solvers other than ``neural`` (1 = in this process).
    problem : the problem of a tensor batch when its keys do not say it.

    Raises
    ------
    ValueError
        When the instances are of different problems, the model is for another problem, an
        option the solver does not take is given, or ``device`` cannot be used here
        (:class:`~nco.devices.DeviceError`).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    insts = _as_instances(instances, problem)
    if solver == "neural":
        device = resolve_device(device)
        neural = NeuralSolver(
            model,
            strategy=strategy,
            augment=augment,
            refine=refine,
            device=device,
            batch_size=batch_size,
        )
        return neural.solve_many(insts, time_limit=time_limit, seed=seed)
    neural_only = {
        "strategy": strategy != "multistart_greedy",
        "augment": augment != 8,
        "batch_size": batch_size != 64,
    }
    given = [k for k, v in neural_only.items() if v]
    if given:
        raise ValueError(f"{', '.join(given)} apply to the neural solver, not {solver!r}")
    options: dict[str, Any] = {}
    if model is not None:
        options["model"] = model
    if refine:
        options["refine"] = True
    if device is not None:
        options["device"] = resolve_device(device)
    obj = _build_solver(solver, options)
    limits = [
        default_time_limit(i, obj) if time_limit is None else float(time_limit) for i in insts
    ]
    jobs = [(solver, options, inst, limit, seed) for inst, limit in zip(insts, limits)]
    if workers == 1 or len(jobs) <= 1:
        return [obj.solve(inst, time_limit=limit, seed=seed) for inst, limit in zip(insts, limits)]  # type: ignore[arg-type]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # spawn, not fork: torch's OpenMP threads in this process would deadlock a forked child
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread
    ) as pool:
        return list(pool.map(_solve_job, jobs))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _solve_job(job: tuple[str, dict[str, Any], Instance, float, int]) -> Solution:
    name, options, inst, limit, seed = job
    return get_solver(name, **options).solve(inst, time_limit=limit, seed=seed)


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
