"""The Python solving API: ``nco.solve``, ``nco.solve_batch``, ``nco.models``, ``nco.load_model``.

>>> import nco
>>> sol = nco.solve("data/instances/E-n13-k4.vrp")                                  # doctest: +SKIP
>>> sol = nco.solve("data/instances/E-n13-k4.vrp", solver="pyvrp", time_limit=1)   # doctest: +SKIP
>>> sol = nco.solve(inst, model="cvrp50", refine=True)                               # doctest: +SKIP
>>> sols = nco.solve_batch(instances, model="cvrp100", augment=8)                    # doctest: +SKIP
>>> td = nco.get_problem("mtvrp").generator(num_loc=50)(64, seed=0)                  # doctest: +SKIP
>>> sols = nco.solve_batch(td, solver="pyvrp", time_limit=1, workers=2)              # doctest: +SKIP

Tensor batches (a TensorDict with batch ``[B]``, e.g. from a problem's generator) are accepted
wherever instances are: each row becomes an :class:`~nco.envs.Instance` through
``get_problem(problem).to_instance`` (the problem is the registered one whose instance keys the
batch holds, or ``problem=``), so every solver returns checked :class:`~nco.envs.Solution` s.

One default for every entry point (``nco.solve``, ``nco.solve_batch``, ``nco solve``): the
solver :data:`~nco.DEFAULT_SOLVER` (``hybrid``: the network's plan as PyVRP's warm start) and
the time limit :func:`default_time_limit` (:data:`~nco.SECONDS_PER_100_NODES` per 100 nodes, at
least 1 s) for every solver, the neural one included.

(The module is ``nco.api`` rather than ``nco.solve`` so that no submodule import can rebind the
package attribute ``nco.solve`` away from the function.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nco import DEFAULT_SOLVER, SECONDS_PER_100_NODES
from nco.baselines import Solver, get_solver
from nco.checkpoints import load_model, read_info, shipped_checkpoints
from nco.devices import resolve_device
from nco.envs import Instance, Solution, load
from nco.solvers import ModelSpec, NeuralSolver

if TYPE_CHECKING:
    from tensordict import TensorDict

__all__ = [
    "DEFAULT_SOLVER",
    "SECONDS_PER_100_NODES",
    "ModelCard",
    "SolveTask",
    "cached_solver",
    "default_time_limit",
    "instances_from_tensors",
    "load_model",
    "models",
    "run_task",
    "solve",
    "solve_batch",
]


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
        insts = instances_from_tensors(instance)
        if len(insts) != 1:
            raise ValueError(
                f"solve takes one instance; a tensor batch of {len(insts)} goes to solve_batch"
            )
        return insts[0]
    return load(instance)


def _as_instances(
    instances: Sequence[Instance | str | Path] | TensorDict, problem: str | None = None
) -> list[Instance]:
    if _is_tensordict(instances):
        return instances_from_tensors(instances, problem=problem)
    if problem is not None:
        raise ValueError("problem= applies to a tensor batch, not to instances or files")
    return [_as_instance(i) for i in instances]


def _build_solver(name: str, options: dict[str, Any]) -> Solver:
    """``get_solver(name, **options)``, with options the solver does not take as a ValueError."""
    try:
        return get_solver(name, **options)
    except TypeError as err:
        raise ValueError(
            f"solver {name!r} does not take the option(s) {', '.join(sorted(options))}: {err}"
        ) from None


#: Solvers built in this process, by name and options (see :func:`cached_solver`).
_SOLVERS: dict[tuple[str, tuple[tuple[str, Any], ...]], Solver] = {}


def cached_solver(name: str, options: dict[str, Any] | None = None) -> Solver:
    """The solver ``name`` with ``options``, built once per process and reused (a worker that
    solves many instances loads a checkpoint once). Options that cannot be a dictionary key
    (a loaded ``(policy, info)`` model) build a new solver each call."""
    opts = dict(options or {})
    key = (name, tuple(sorted(opts.items())))
    try:
        hash(key)
    except TypeError:
        return _build_solver(name, opts)
    if key not in _SOLVERS:
        _SOLVERS[key] = _build_solver(name, opts)
    return _SOLVERS[key]


def default_time_limit(instance: Instance) -> float:
    """The time limit of a solve that names none, for every solver: ``SECONDS_PER_100_NODES``
    per 100 nodes, at least 1 s."""
    return max(1.0, SECONDS_PER_100_NODES * instance.num_nodes / 100.0)


@dataclass(frozen=True)
class SolveTask:
    """One solve as a picklable value, the unit of work of :mod:`nco.executor`.

    Attributes
    ----------
    solver : registry name.
    options : its constructor options.
    instance : the instance.
    time_limit : seconds (``math.inf``: no limit, for the neural solver only).
    seed : solver seed.
    """

    solver: str
    options: dict[str, Any]
    instance: Instance
    time_limit: float
    seed: int = 0


def run_task(task: SolveTask) -> Solution:
    """Solve one task with this process's solver of that name and options
    (:func:`cached_solver`); its one-time set-up (``prepare``: checkpoint loading, compilation,
    measuring the network's step cost) runs before the timed solve, so the time limit is the
    search's alone."""
    solver = cached_solver(task.solver, task.options)
    prepare = getattr(solver, "prepare", None)
    if prepare is not None:
        prepare(task.instance)
    return solver.solve(task.instance, time_limit=task.time_limit, seed=task.seed)


def solve(
    instance: Instance | str | Path | TensorDict,
    solver: str | Solver = DEFAULT_SOLVER,
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
    solver : registry name (``hybrid``, the default :data:`~nco.DEFAULT_SOLVER`; ``neural``,
        ``pyvrp``, ``ortools``, ``hgs``) or a solver object.
    model : for ``neural``/``hybrid``: checkpoint path, shipped name, ``(policy, info)`` or None
        (the shipped checkpoint with the nearest training size).
    time_limit : seconds; None = :func:`default_time_limit` (1 s per 100 nodes, at least 1 s).
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
    limit = default_time_limit(inst) if time_limit is None else float(time_limit)
    return obj.solve(inst, time_limit=limit, seed=seed)


def solve_batch(
    instances: Sequence[Instance | str | Path] | TensorDict,
    model: ModelSpec = None,
    *,
    solver: str = DEFAULT_SOLVER,
    time_limit: float | None = None,
    strategy: str | None = None,
    augment: int | None = None,
    refine: bool | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    workers: int = 1,
    executor: str = "process",
    problem: str | None = None,
) -> list[Solution]:
    """Solve many instances of one problem; results in input order, each a checked
    :class:`~nco.envs.Solution`.

    With the neural solver, instances of the same size are decoded together (``batch_size``
    per pass, in this process); different sizes form separate groups. Every other registry name
    (``hybrid``, the default; ``pyvrp``, ``ortools``, ``hgs``) solves the instances one by one,
    in ``workers`` parallel workers of :mod:`nco.executor`, each solver's one-time set-up
    outside the time limits.

    Parameters
    ----------
    instances : instances, file paths, or a tensor batch ``[B]`` (e.g. a mixed-variant
        ``mtvrp`` batch from its generator; each row becomes an instance named ``instance{i}``,
        see :func:`instances_from_tensors`).
    model : for ``neural``/``hybrid``: checkpoint path, shipped name, ``(policy, info)`` or None
        (the shipped checkpoint nearest in size).
    solver : registry name; default :data:`~nco.DEFAULT_SOLVER` (``hybrid``).
    time_limit : seconds per instance; None = :func:`default_time_limit` of each instance. The
        neural solver's batched decode gets the sum over the instances it decodes.
    strategy, augment, batch_size, refine : options of the solvers that take them (``neural``
        and ``hybrid``); None = the solver's default.
    device : ``cpu``/``cuda``/None (CUDA when available) for the network.
    seed : solver seed.
    workers : parallel workers for the solvers other than ``neural`` (1 = in this process).
    executor : ``"process"`` (local processes, one thread each) or ``"ray"`` (the cluster of
        ``RAY_ADDRESS``, else a local Ray instance); see :mod:`nco.executor`.
    problem : the problem of a tensor batch when its keys do not say it.

    Raises
    ------
    ValueError
        When the instances are of different problems, the model is for another problem, an
        option the solver does not take is given, or ``device`` cannot be used here
        (:class:`~nco.devices.DeviceError`).
    """
    from nco.executor import run_tasks

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    insts = _as_instances(instances, problem)
    given = {
        "strategy": strategy,
        "augment": augment,
        "refine": refine,
        "batch_size": batch_size,
        "model": model,
        "device": None if device is None else resolve_device(device),
    }
    options = {k: v for k, v in given.items() if v is not None}
    # fails here, once, on a missing package or an option the solver does not take
    obj = cached_solver(solver, options)
    if isinstance(obj, NeuralSolver):
        # one batched decode in this process, with the budget of its instances together
        limit = (
            sum(default_time_limit(i) for i in insts)
            if time_limit is None
            else float(time_limit) * len(insts)
        )
        return obj.solve_many(insts, time_limit=limit, seed=seed)
    tasks = [
        SolveTask(
            solver,
            options,
            inst,
            default_time_limit(inst) if time_limit is None else float(time_limit),
            seed,
        )
        for inst in insts
    ]
    return run_tasks(run_task, tasks, workers=workers, executor=executor, preload=("nco.api",))  # type: ignore[return-value]


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
        info = read_info(path)
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
