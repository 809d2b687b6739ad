"""Neural solvers behind the :class:`~nco.baselines.Solver` protocol: ``"neural"`` and ``"hybrid"``.

* :class:`NeuralSolver`: a trained policy constructs solutions (default: POMO multistart greedy
  with 8-fold augmentation), the best one is chosen by its cost in the instance's own units, and
  optionally improved by the granular local search of :mod:`nco.kernels.local_search`.
* :class:`HybridSolver`: the neural solution warm-starts PyVRP (default) or OR-Tools within the
  same total time budget.

Both are registered in the baselines registry by :func:`register`, which runs when this module is
imported (``nco.benchmark``, ``nco.api`` and the CLI import it), so ``get_solver("neural")``
works in spawned worker processes too.

Models: a checkpoint path, the name of a checkpoint shipped in ``nco/data/checkpoints`` (e.g.
``"cvrp50"``), an already loaded ``(policy, info)`` pair from :func:`nco.checkpoints.load_model`,
or None to pick, per instance, the shipped checkpoint of the instance's problem whose training
size is nearest to the instance's number of customers.

Instances given only as a distance matrix (no coordinates) are embedded in the plane by
classical multidimensional scaling (:meth:`Instance.to_tensordict`); the policy reads those
positions while masks, rewards and costs use the matrix itself.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from nco.baselines import (
    Solver,
    SolverError,
    SolverFailedError,
    available_solvers,
    get_solver,
    register_solver,
)
from nco.baselines.protocol import check_time_limit
from nco.envs import Instance, Solution, available, get_problem

if TYPE_CHECKING:
    from torchrl.envs import EnvBase

    from nco.policies import AttentionPolicy

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "HybridSolver",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModelSpec",
    "NeuralSolver",
    "refine_routes",
    "register",
    "select_checkpoint",
    "shipped_checkpoints",
]

#: File suffixes of checkpoints (exported ``.pt`` files and Lightning ``.ckpt`` files).
CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth")

#: What ``model=`` accepts: a path, a shipped name, a loaded ``(policy, info)`` pair, or None.
ModelSpec: TypeAlias = "str | Path | tuple[AttentionPolicy, dict[str, Any]] | None"

#: Hybrid: below this many seconds left after the network, the backend is not started.
MIN_BACKEND_TIME = 0.05

#: Cap on the elements of the decoded actions [B, M, T] of one forward pass (int64: 512 MiB).
MAX_DECODE_ELEMENTS = 2**26

_HYBRID_BACKENDS = ("pyvrp", "ortools")


# ---------------------------------------------------------------------------------- errors
class ModelNotFoundError(SolverError, FileNotFoundError):
    """No checkpoint for the request: an unknown name/path, or nothing shipped for a problem."""


class ModelMismatchError(SolverError, ValueError):
    """A checkpoint trained on one problem was given an instance of another."""

    def __init__(self, source: str, trained: str, instance: str, got: str) -> None:
        self.trained = trained
        self.problem = got
        super().__init__(
            f"neural: checkpoint {source} was trained on problem {trained!r}, but instance "
            f"{instance!r} is a {got!r} instance; use a {got} checkpoint (or model=None to pick "
            "a shipped one)"
        )


# ---------------------------------------------------------------------------------- checkpoints
def _checkpoints_dir() -> Path:
    from nco.data import checkpoints_dir

    return checkpoints_dir()


def shipped_checkpoints() -> list[Path]:
    """Checkpoint files shipped in ``nco/data/checkpoints`` (sorted by name; may be empty)."""
    d = _checkpoints_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)


_INFO_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The self-description of a checkpoint file (cached per path and modification time)."""
    from nco.checkpoints import read_checkpoint

    p = Path(path).resolve()
    key = (str(p), p.stat().st_mtime_ns)
    if key not in _INFO_CACHE:
        _INFO_CACHE[key] = read_checkpoint(p)[0]
    return dict(_INFO_CACHE[key])


def _shipped_summary() -> str:
    files = shipped_checkpoints()
    if not files:
        return f"no checkpoints are shipped yet (folder {_checkpoints_dir()} holds none)"
    return "shipped checkpoints: " + ", ".join(p.stem for p in files)


def select_checkpoint(problem: str, size: int) -> Path:
    """The shipped checkpoint for ``problem`` whose training size is nearest to ``size``.

    Ties go to the larger training size. Raises :class:`ModelNotFoundError` naming the problem
    and what is shipped when none fits.
    """
    cands: list[tuple[int, int, Path]] = []
    for p in shipped_checkpoints():
        info = checkpoint_info(p)
        if info.get("problem") == problem:
            s = int(info.get("size") or 0)
            cands.append((abs(s - size), -s, p))
    if not cands:
        raise ModelNotFoundError(
            f"neural: no shipped checkpoint for problem {problem!r}; {_shipped_summary()}. "
            "Pass model=PATH (--model PATH), e.g. a run directory or a file from nco train."
        )
    return min(cands)[2]


def _resolve(model: str | Path) -> Path:
    from nco.checkpoints import resolve_checkpoint

    try:
        return resolve_checkpoint(model)
    except FileNotFoundError as err:
        raise ModelNotFoundError(f"{err}; {_shipped_summary()}") from None


_MODEL_CACHE: dict[tuple[str, int, str], tuple[AttentionPolicy, dict[str, Any]]] = {}


def _load(path: Path, device: str) -> tuple[AttentionPolicy, dict[str, Any]]:
    """load_model with a per-process cache (benchmark workers build a solver per job)."""
    from nco.checkpoints import load_model

    p = path.resolve()
    key = (str(p), p.stat().st_mtime_ns, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(p, device=device)
    return _MODEL_CACHE[key]


def _auto_device(device: str | None) -> str:
    if device is not None:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------- helpers
def _key(sol: Solution) -> tuple[bool, float]:
    """Order of solutions: feasible first, then by cost (NaN last)."""
    return (not sol.feasible, sol.cost if math.isfinite(sol.cost) else math.inf)


def _best_index(instance: Instance, actions: np.ndarray) -> int:
    """Index of the best of M action sequences [M, T] by cost in instance units.

    Candidates that use more routes than the instance's fleet are ranked after those that fit.
    """
    d = instance.distance
    if instance.has_depot:
        z = np.zeros((actions.shape[0], 1), dtype=np.int64)
        seq = np.concatenate([z, actions, z], 1)
        frm, to = seq[:, :-1], seq[:, 1:]
        arc = np.where((frm == 0) & (to == 0), 0.0, d[frm, to])
        cost = arc.sum(1)
        over = np.zeros(len(seq), dtype=bool)
        if instance.num_vehicles is not None:
            over = ((frm != 0) & (to == 0)).sum(1) > instance.num_vehicles
    else:
        tour = actions[:, : instance.num_nodes]
        seq = np.concatenate([tour, tour[:, :1]], 1)
        cost = d[seq[:, :-1], seq[:, 1:]].sum(1)
        over = np.zeros(len(seq), dtype=bool)
    return int(np.lexsort((cost, over))[0])


def refine_routes(instance: Instance, routes: Sequence[Sequence[int]]) -> list[list[int]]:
    """Granular local search (relocate, swap, 2-opt, 2-opt*) on routes in instance units.

    Capacity and time windows are respected by the kernel; the result's cost is never higher
    (callers still compare with the instance's checker and cost, see :class:`NeuralSolver`).
    """
    from nco.kernels.local_search import local_search_tsp, local_search_vrp

    problem = get_problem(instance.problem)
    if not instance.has_depot:
        tour = np.asarray([v for r in routes for v in r], dtype=np.int64)
        return problem.tours_to_routes(local_search_tsp(tour, instance.distance).tolist())
    flat = [0]
    for r in routes:
        if len(r):
            flat.extend(int(v) for v in r)
            flat.append(0)
    assert instance.demand is not None and instance.capacity is not None
    out = local_search_vrp(
        np.asarray(flat, dtype=np.int64),
        instance.distance,
        instance.demand,
        float(instance.capacity),
        instance.time_windows,
        instance.service_time,
    )
    return problem.tours_to_routes(out.tolist())


# ---------------------------------------------------------------------------------- neural
class NeuralSolver:
    """A trained construction policy as a :class:`~nco.baselines.Solver`.

    Parameters
    ----------
    model : checkpoint path or run directory, shipped name (``"cvrp50"``), a loaded
        ``(policy, info)`` pair, or None (the shipped checkpoint of the instance's problem with
        the nearest training size, chosen per instance).
    strategy : decoding strategy (see :data:`nco.policies.decoding.STRATEGIES`).
    augment : 1 or 8 (dihedral augmentation).
    refine : improve the constructed solution with local search (never returns a worse one).
    device : ``"cpu"``, ``"cuda"`` or None (CUDA when available).
    batch_size : instances per forward pass in :meth:`solve_many`.
    num_samples : samples (per start) for the sampling strategies.
    beam_width : width of ``beam_search``.

    Raises
    ------
    ModelNotFoundError
        (a ``FileNotFoundError``) for an unknown path or name; the message lists what is shipped.
    """

    name = "neural"

    def __init__(
        self,
        model: ModelSpec = None,
        *,
        strategy: str = "multistart_greedy",
        augment: int = 8,
        refine: bool = False,
        device: str | None = None,
        batch_size: int = 64,
        num_samples: int = 1,
        beam_width: int = 1,
    ) -> None:
        from nco.policies.decoding import DecodeConfig

        if batch_size < 1:
            raise ValueError(f"neural: batch_size must be >= 1, got {batch_size}")
        # validates strategy, augment, num_samples and beam_width
        self._decode = DecodeConfig(
            strategy=strategy,
            augment=augment,
            num_samples=num_samples,
            beam_width=beam_width,
            select_best=False,
        )
        self.strategy = strategy
        self.augment = augment
        self.refine = bool(refine)
        self.batch_size = int(batch_size)
        self._envs: dict[tuple[str, int, str], EnvBase] = {}
        self._fixed: tuple[AttentionPolicy, dict[str, Any]] | None = None
        self._prepared: set[str] = set()
        self._source: str | None = None
        if isinstance(model, tuple):
            policy, info = model
            if "problem" not in info:
                raise ValueError("neural: the info of a loaded model must hold its 'problem'")
            if device is not None:
                policy = policy.to(device)
            self.device = str(next(policy.parameters()).device)
            self._fixed = (policy.eval(), dict(info))
            self._source = str(info.get("source", "<loaded model>"))
        else:
            self.device = _auto_device(device)
            if model is not None:
                path = _resolve(model)
                self._fixed = _load(path, self.device)
                self._source = str(path)

    def __repr__(self) -> str:
        model = self._source if self._source is not None else "auto"
        return (
            f"NeuralSolver(model={model!r}, strategy={self.strategy!r}, augment={self.augment}, "
            f"refine={self.refine}, device={self.device!r})"
        )

    @property
    def info(self) -> dict[str, Any] | None:
        """The fixed model's checkpoint description (None when chosen per instance)."""
        return None if self._fixed is None else dict(self._fixed[1])

    def supports(self, problem: str) -> bool:
        """The fixed model's problem; with ``model=None`` every registered problem (solving
        raises :class:`ModelNotFoundError` when no checkpoint is shipped for it)."""
        if self._fixed is not None:
            return problem == self._fixed[1]["problem"]
        return problem in available() and get_problem(problem).file_io

    # ------------------------------------------------------------------ model per instance
    def _model(self, instance: Instance) -> tuple[str, AttentionPolicy, dict[str, Any]]:
        if self._fixed is not None:
            policy, info = self._fixed
            source = self._source or "<loaded model>"
        else:
            path = select_checkpoint(instance.problem, instance.num_customers)
            policy, info = _load(path, self.device)
            source = str(path)
        if info["problem"] != instance.problem:
            raise ModelMismatchError(source, info["problem"], instance.name, instance.problem)
        return source, policy, info

    def prepare(self, instance: Instance) -> None:
        """Load the model for ``instance`` and solve one tiny generated instance of its problem
        once, so one-time costs (checkpoint reading, numba compilation or cache loading, torch
        warm-up) are not part of a later timed solve."""
        source, _, _ = self._model(instance)
        if source in self._prepared:
            return
        problem = get_problem(instance.problem)
        td = problem.generator(num_loc=5)(1, seed=0)
        tiny = problem.to_instance(td[0], name="warm-up")
        self.solve_many([tiny])
        self._prepared.add(source)

    def _env(self, problem: str, num_loc: int) -> EnvBase:
        key = (problem, num_loc, self.device)
        if key not in self._envs:
            self._envs[key] = get_problem(problem).make_env(num_loc=num_loc, device=self.device)
        return self._envs[key]

    def _chunk(self, num_starts: int, num_nodes: int) -> int:
        """Instances per forward pass: ``batch_size``, fewer when the decoded action tensor
        [B, M, T] would exceed :data:`MAX_DECODE_ELEMENTS` (large instances with many starts)."""
        cfg = self._decode
        rows = cfg.augment * cfg.num_samples
        if cfg.strategy.startswith("multistart"):
            rows *= num_starts
        elif cfg.strategy == "beam_search":
            rows *= cfg.beam_width
        per_instance = rows * (2 * num_nodes + 2)
        return max(1, min(self.batch_size, MAX_DECODE_ELEMENTS // per_instance))

    # ------------------------------------------------------------------ solving
    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
    ) -> Solution:
        """Construct (and optionally refine) a solution; see :class:`~nco.baselines.Solver`.

        The construction is not interruptible: ``time_limit`` (None = no limit) only skips the
        refinement when the construction already used it up. ``initial_routes``, when given and
        better, are returned instead (``metadata["returned_initial"]``). ``seed`` seeds the
        sampling strategies.
        """
        return self.solve_many(
            [instance], time_limit=time_limit, seed=seed, initial_routes=[initial_routes]
        )[0]

    def solve_many(
        self,
        instances: Sequence[Instance],
        *,
        time_limit: float | None = None,
        seed: int = 0,
        initial_routes: Sequence[list[list[int]] | None] | None = None,
    ) -> list[Solution]:
        """Solve many instances of one problem with batched forward passes.

        Instances are grouped by checkpoint and node count (one forward pass per group and
        ``batch_size`` chunk); results come back in input order. Each solution's ``runtime``
        is its share of its group's decoding time plus its own refinement time
        (``metadata["batch_runtime"]`` holds the group's decoding time).
        """
        import torch

        t0 = time.perf_counter()
        insts = list(instances)
        if not insts:
            return []
        problems = sorted({i.problem for i in insts})
        if len(problems) > 1:
            raise ValueError(
                f"neural: a batch must hold instances of one problem, got {', '.join(problems)}"
            )
        inits = list(initial_routes) if initial_routes is not None else [None] * len(insts)
        if len(inits) != len(insts):
            raise ValueError("neural: initial_routes must have one entry per instance")
        problem = get_problem(problems[0])
        models: list[tuple[str, AttentionPolicy, dict[str, Any]]] = [self._model(i) for i in insts]
        tds = [problem.from_instance(i, device=self.device) for i in insts]
        groups: dict[tuple[str, int, tuple[str, ...]], list[int]] = {}
        for k, (inst, td) in enumerate(zip(insts, tds)):
            gkey = (models[k][0], inst.num_nodes, tuple(sorted(td.keys())))
            groups.setdefault(gkey, []).append(k)

        cfg = dataclasses.replace(self._decode, seed=int(seed))  # used by sampling only
        best_routes: list[list[list[int]]] = [[] for _ in insts]
        share: list[float] = [0.0] * len(insts)
        batch_time: list[float] = [0.0] * len(insts)
        for idx in groups.values():
            tg = time.perf_counter()
            _, policy, _ = models[idx[0]]
            env = self._env(problem.name, insts[idx[0]].num_customers)
            step = self._chunk(problem.num_starts(tds[idx[0]]), insts[idx[0]].num_nodes)
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                td = torch.cat([tds[k] for k in chunk], 0)
                with torch.inference_mode():
                    roll = policy(td, env, cfg)
                assert roll.actions is not None
                acts = roll.actions.detach().cpu().numpy().astype(np.int64)
                for j, k in enumerate(chunk):
                    m = _best_index(insts[k], acts[j])
                    best_routes[k] = problem.tours_to_routes(acts[j, m].tolist())
            dt = time.perf_counter() - tg
            for k in idx:
                share[k] = dt / len(idx)
                batch_time[k] = dt
        out = []
        for k, inst in enumerate(insts):
            tk = time.perf_counter()
            source, _, info = models[k]
            meta: dict[str, Any] = {
                "model": source,
                "model_problem": info["problem"],
                "model_size": info.get("size"),
                "strategy": self.strategy,
                "augment": self.augment,
                "device": self.device,
                "seed": seed,
                "time_limit": time_limit,
                "refine": self.refine,
                "batch_runtime": batch_time[k],
                "embedded_by_mds": inst.coords is None,
            }
            sol = Solution.from_routes(inst, best_routes[k], solver=self.name)
            meta["construction_cost"] = sol.cost
            if self.refine:
                elapsed = time.perf_counter() - t0
                if time_limit is not None and elapsed >= time_limit:
                    meta["refine_skipped"] = f"time limit {time_limit:g} s used by construction"
                else:
                    refined = Solution.from_routes(
                        inst, refine_routes(inst, sol.routes), solver=self.name
                    )
                    meta["refined_cost"] = refined.cost
                    # never worse: feasibility first, then cost in instance units
                    meta["refine_kept"] = _key(refined) <= _key(sol)
                    if meta["refine_kept"]:
                        sol = refined
            meta["returned_initial"] = False
            if inits[k]:
                given = Solution.from_routes(inst, inits[k] or [], solver=self.name)
                if _key(given) < _key(sol):
                    sol = given
                    meta["returned_initial"] = True
            runtime = share[k] + (time.perf_counter() - tk)
            if len(insts) == 1:
                runtime = time.perf_counter() - t0
            out.append(
                Solution.from_routes(
                    inst, sol.routes, solver=self.name, runtime=runtime, metadata=meta
                )
            )
        return out


# ---------------------------------------------------------------------------------- hybrid
class HybridSolver:
    """Neural construction as the warm start of PyVRP or OR-Tools, in one time budget.

    The network's wall time is charged to ``time_limit``: the backend gets what is left (if
    less than :data:`MIN_BACKEND_TIME` is left, the neural solution is returned). The result is
    never worse than the neural warm start (compared with the instance's checker and cost).

    Parameters
    ----------
    model, strategy, refine, device, batch_size : as in :class:`NeuralSolver`.
    augment : 1 (default) or 8. Multistart construction without augmentation costs an eighth of
        the x8 one; at budgets of a second or two the search gains more from that time than the
        warm start gains from seven more augmentations.
    backend : ``"pyvrp"`` (default) or ``"ortools"``.
    """

    name = "hybrid"

    def __init__(
        self,
        model: ModelSpec = None,
        *,
        backend: str = "pyvrp",
        strategy: str = "multistart_greedy",
        augment: int = 1,
        refine: bool = False,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if backend not in _HYBRID_BACKENDS:
            raise ValueError(
                f"hybrid: unknown backend {backend!r}; expected one of {', '.join(_HYBRID_BACKENDS)}"
            )
        self.backend_name = backend
        self.backend: Solver = get_solver(backend)  # fails here if its package is missing
        self.neural = NeuralSolver(
            model,
            strategy=strategy,
            augment=augment,
            refine=refine,
            device=device,
            batch_size=batch_size,
        )

    def __repr__(self) -> str:
        return f"HybridSolver(backend={self.backend_name!r}, neural={self.neural!r})"

    def supports(self, problem: str) -> bool:
        """Problems both the network and the backend handle."""
        return self.backend.supports(problem) and self.neural.supports(problem)

    def solve(
        self,
        instance: Instance,
        *,
        time_limit: float,
        seed: int = 0,
        initial_routes: list[list[int]] | None = None,
    ) -> Solution:
        """Neural warm start, then the backend for the rest of ``time_limit`` seconds."""
        check_time_limit(self.name, time_limit)
        # One-time set-up (model loading, kernel compilation) is not the network's solving time;
        # charging it would leave the backend nothing on a first call.
        self.neural.prepare(instance)
        t0 = time.perf_counter()
        warm = self.neural.solve(
            instance, time_limit=time_limit, seed=seed, initial_routes=initial_routes
        )
        neural_time = time.perf_counter() - t0
        remaining = time_limit - neural_time
        meta: dict[str, Any] = {
            "backend": self.backend_name,
            "neural_cost": warm.cost,
            "neural_feasible": warm.feasible,
            "neural_time": neural_time,
            "backend_time": 0.0,
            "time_limit": time_limit,
            "seed": seed,
            "warm_start": warm.feasible,
            "returned_neural": True,
            **{
                f"neural_{k}": v
                for k, v in warm.metadata.items()
                if k in ("model", "strategy", "augment", "refine")
            },
        }
        best = warm
        if remaining < MIN_BACKEND_TIME:
            meta["backend_skipped"] = f"the network used {neural_time:.3f} s of {time_limit:g} s"
        else:
            tb = time.perf_counter()
            try:
                found = self.backend.solve(
                    instance,
                    time_limit=remaining,
                    seed=seed,
                    initial_routes=[list(r) for r in warm.routes] if warm.feasible else None,
                )
            except SolverFailedError as err:
                if not warm.feasible:
                    raise
                meta["backend_error"] = str(err)
            else:
                meta["backend_cost"] = found.cost
                if _key(found) < _key(warm):
                    best = found
                    meta["returned_neural"] = False
            meta["backend_time"] = time.perf_counter() - tb
        return Solution.from_routes(
            instance,
            best.routes,
            solver=self.name,
            runtime=time.perf_counter() - t0,
            metadata=meta,
        )


# ---------------------------------------------------------------------------------- registry
def _neural_factory(**options: Any) -> Solver:
    return NeuralSolver(**options)


def _hybrid_factory(**options: Any) -> Solver:
    return HybridSolver(**options)


def register() -> None:
    """Register ``"neural"`` and ``"hybrid"`` in :mod:`nco.baselines.registry` (idempotent:
    names already registered are left as they are)."""
    names = available_solvers()
    for name, factory in (("neural", _neural_factory), ("hybrid", _hybrid_factory)):
        if name not in names:
            register_solver(name, factory)


register()
