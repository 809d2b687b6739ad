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
from collections.abc import Callable, Sequence
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

#: Hybrid: the most of its time limit the network may use for the warm start (the neural
#: construction is time-limited to this share; the backend gets the rest).
NEURAL_SHARE = 0.25

#: Candidates kept per instance from each decode (by the network's own cost) for the final
#: choice in instance units; bounds the result's memory when M = starts x transforms is large.
KEEP_CANDIDATES = 16

#: Share of a neural time limit kept for choosing, checking and building the solution.
FINISH_RESERVE = 0.04

#: A time-limited neural solve returns within ``time_limit + max(TIME_TOLERANCE_S, 5%)``:
#: the construction is checked against its deadline every 8 decoding steps.
TIME_TOLERANCE_S = 0.25

#: Prior decoding throughput (row x node x step units per second) for the first round of a
#: time-limited solve, before anything is measured: a conservative CPU value (2 busy cores
#: measure 4-9e7); later rounds use the measured rate of the earlier ones.
PRIOR_RATE = 2.5e7

#: Prior per-step overhead (seconds) of the decode loop (Python, env bookkeeping, kernel
#: launches), independent of the number of rows.
STEP_OVERHEAD = 4e-4

#: Prior encoder cost per encoder layer and squared node count (seconds; the encoder cannot be
#: stopped midway, so a round is not started when this estimate does not fit).
ENCODER_PRIOR = 3e-8

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

    A checkpoint trained on a size range (``size_range`` in its description) is at distance 0
    from the sizes inside it. Ties go to the larger training size. Raises :class:`ModelNotFoundError` naming the problem
    and what is shipped when none fits.
    """
    cands: list[tuple[int, int, Path]] = []
    for p in shipped_checkpoints():
        info = checkpoint_info(p)
        if info.get("problem") == problem:
            lo, hi = _trained_sizes(info)
            # a multi-size checkpoint is at distance 0 from every size it was trained on
            dist = 0 if lo <= size <= hi else min(abs(size - lo), abs(size - hi))
            cands.append((dist, -hi, p))
    if not cands:
        raise ModelNotFoundError(
            f"neural: no shipped checkpoint for problem {problem!r}; {_shipped_summary()}. "
            "Pass model=PATH (--model PATH), e.g. a run directory or a file from nco train."
        )
    return min(cands)[2]


def _trained_sizes(info: dict[str, Any]) -> tuple[int, int]:
    """(smallest, largest) training size of a checkpoint description (0, 0 when unknown)."""
    size = int(info.get("size") or 0)
    lo, hi = info.get("size_range") or (size, size)
    return int(lo), int(hi)


def _resolve(model: str | Path) -> Path:
    from nco.checkpoints import resolve_checkpoint

    try:
        return resolve_checkpoint(model)
    except FileNotFoundError as err:
        msg = str(err)  # resolve_checkpoint already lists the shipped names when there are any
        if "shipped checkpoints:" not in msg:
            msg = f"{msg}; {_shipped_summary()}"
        raise ModelNotFoundError(msg) from None


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
    from nco.devices import resolve_device

    return resolve_device(device)


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


#: Improving moves per local-search call when refining against a deadline (the kernel cannot
#: watch the clock, so it is called in slices of this many moves until it converges or time
#: is up).
LS_SLICE = 256

#: Share of a time limit the construction may use when the solution is refined afterwards.
REFINE_SPLIT = 0.75


def refine_routes(
    instance: Instance, routes: Sequence[Sequence[int]], *, deadline: float | None = None
) -> list[list[int]]:
    """Granular local search (relocate, swap, 2-opt, 2-opt*) on routes in instance units.

    Capacity and time windows are respected by the kernel; the result's cost is never higher
    (callers still compare with the instance's checker and cost, see :class:`NeuralSolver`).
    With a ``deadline`` (a ``time.perf_counter()`` value) the search runs in slices of
    :data:`LS_SLICE` moves and stops after the slice that passes it.
    """
    from nco.kernels.local_search import local_search_tsp, local_search_vrp, neighbour_lists

    problem = get_problem(instance.problem)
    nb = neighbour_lists(instance.distance, min(20, max(1, instance.num_nodes - 1)))
    moves = 10_000 if deadline is None else LS_SLICE
    if not instance.has_depot:
        start = np.asarray([v for r in routes for v in r], dtype=np.int64)
        out = _search_until(
            lambda t: local_search_tsp(t, instance.distance, neighbours=nb, max_iterations=moves),
            start,
            deadline,
        )
        return problem.tours_to_routes(out.tolist())
    flat = [0]
    for r in routes:
        if len(r):
            flat.extend(int(v) for v in r)
            flat.append(0)
    assert instance.demand is not None and instance.capacity is not None
    demand, capacity = instance.demand, float(instance.capacity)
    out = _search_until(
        lambda f: local_search_vrp(
            f,
            instance.distance,
            demand,
            capacity,
            instance.time_windows,
            instance.service_time,
            neighbours=nb,
            max_iterations=moves,
        ),
        np.asarray(flat, dtype=np.int64),
        deadline,
    )
    return problem.tours_to_routes(out.tolist())


def _search_until(
    search: Callable[[np.ndarray], np.ndarray], start: np.ndarray, deadline: float | None
) -> np.ndarray:
    """Apply ``search`` once (no deadline) or repeatedly until it changes nothing or the
    deadline has passed."""
    cur = start
    while True:
        out = search(cur)
        if deadline is None or np.array_equal(out, cur) or time.perf_counter() > deadline:
            return out
        cur = out


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
    num_starts : POMO starts per transform; None = planned per instance size
        (:func:`~nco.policies.decoding.plan_decode`: every customer up to ~330 nodes, fewer,
        randomly chosen, above, so that a 1000-customer instance decodes in seconds).
    memory_budget : bytes of decode state alive at once (rows are decoded in chunks that fit);
        default :data:`~nco.policies.decoding.DEFAULT_MEMORY_BUDGET` (1 GiB).
    candidates : k-nearest candidate restriction of the decoder (0 = off).

    With a ``time_limit`` the construction runs in rounds (one or more dihedral transforms
    each): the rows of each round are chosen from the measured cost of the earlier rounds, a
    round that would pass the limit is stopped, and the best plan so far is returned (or, when
    not one rollout fits, one route per customer, marked in ``metadata``). With ``refine`` the
    construction gets :data:`REFINE_SPLIT` of the limit and the local search the rest. The call
    returns within ``time_limit + max(TIME_TOLERANCE_S, 5%)``.

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
        num_starts: int | None = None,
        memory_budget: int | None = None,
        candidates: int = 0,
    ) -> None:
        from nco.policies.decoding import DEFAULT_MEMORY_BUDGET, DecodeConfig

        if batch_size < 1:
            raise ValueError(f"neural: batch_size must be >= 1, got {batch_size}")
        if num_starts is not None and num_starts < 1:
            raise ValueError(f"neural: num_starts must be >= 1, got {num_starts}")
        if memory_budget is not None and memory_budget < 1:
            raise ValueError(f"neural: memory_budget must be >= 1 byte, got {memory_budget}")
        self.num_starts = num_starts
        self.memory_budget = int(memory_budget or DEFAULT_MEMORY_BUDGET)
        # validates strategy, augment, num_samples and beam_width
        self._decode = DecodeConfig(
            strategy=strategy,
            augment=augment,
            num_samples=num_samples,
            beam_width=beam_width,
            select_best=False,
            candidates=candidates,
            keep_top=KEEP_CANDIDATES,
        )
        self.strategy = strategy
        self.augment = augment
        self.refine = bool(refine)
        self.batch_size = int(batch_size)
        self._envs: dict[tuple[str, int, str], EnvBase] = {}
        self._fixed: tuple[AttentionPolicy, dict[str, Any]] | None = None
        self._prepared: set[str] = set()
        self._quiet = False
        self._warned: set[tuple[str, int]] = set()
        self._source: str | None = None
        if isinstance(model, tuple):
            policy, info = model
            if "problem" not in info:
                raise ValueError("neural: the info of a loaded model must hold its 'problem'")
            if device is not None:
                policy = policy.to(_auto_device(device))
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
        key = (source, instance.num_customers)
        if not self._quiet and key not in self._warned:
            self._warned.add(key)
            _warn_size(source, info, instance)
        return source, policy, info

    def prepare(self, instance: Instance) -> None:
        """Load the model for ``instance`` and solve one tiny generated instance of its problem
        once, so one-time costs (checkpoint reading, numba compilation or cache loading, torch
        warm-up) are not part of a later timed solve."""
        self._quiet = True  # set-up only: the solve itself warns about the size
        try:
            source, _, _ = self._model(instance)
            if source in self._prepared:
                return
            problem = get_problem(instance.problem)
            td = problem.generator(num_loc=5)(1, seed=0)
            self.solve_many([problem.to_instance(td[0], name="warm-up")])
        finally:
            self._quiet = False
        self._prepared.add(source)

    def _env(self, problem: str, num_loc: int) -> EnvBase:
        key = (problem, num_loc, self.device)
        if key not in self._envs:
            self._envs[key] = get_problem(problem).make_env(num_loc=num_loc, device=self.device)
        return self._envs[key]

    def _plan(self, num_nodes: int, num_candidates: int) -> Any:
        """The decode plan of this solver's options for one instance size."""
        from nco.policies.decoding import plan_decode

        cfg = self._decode
        multi = cfg.strategy.startswith("multistart")
        return plan_decode(
            num_nodes,
            num_candidates if multi else 1,
            augment=cfg.augment,
            num_starts=self.num_starts if multi else 1,
            num_samples=cfg.num_samples if multi else 1,
            memory_budget=self.memory_budget,
        )

    def _config(self, plan: Any, num_candidates: int, seed: int) -> Any:
        """The DecodeConfig of one decode under ``plan``."""
        cfg = self._decode
        over: dict[str, Any] = {"seed": int(seed), "max_rows": plan.max_rows}
        if cfg.strategy.startswith("multistart"):
            over["num_starts"] = plan.num_starts
            over["augment"] = plan.augment
            # a subset of starts is drawn at random: the first ones in file order may all lie in
            # one region of the instance
            over["start_choice"] = "random" if plan.num_starts < num_candidates else "first"
        return dataclasses.replace(cfg, **over)

    def _rows(self, cfg: Any) -> int:
        """Decode rows per instance and transform under ``cfg``."""
        if cfg.strategy.startswith("multistart"):
            return int(cfg.num_starts) * (
                cfg.num_samples if cfg.strategy.endswith("sampling") else 1
            )
        if cfg.strategy == "beam_search":
            return cfg.beam_width
        return cfg.num_samples if cfg.strategy == "sampling" else 1

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

        ``time_limit`` (None = no limit) bounds the whole call: the construction runs in rounds
        that fit it (see the class) and the refinement is skipped when no time is left.
        ``initial_routes``, when given and better, are returned instead
        (``metadata["returned_initial"]``). ``seed`` seeds the sampling strategies and the
        choice of starts when fewer than all are decoded.
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

        best_routes: list[list[list[int]]] = [[] for _ in insts]
        share: list[float] = [0.0] * len(insts)
        batch_time: list[float] = [0.0] * len(insts)
        deadline = None
        if time_limit is not None:
            frac = REFINE_SPLIT if self.refine else 1.0 - FINISH_RESERVE
            deadline = t0 + time_limit * frac
        decode_meta: list[dict[str, Any]] = [{} for _ in insts]
        for idx in groups.values():
            tg = time.perf_counter()
            _, policy, _ = models[idx[0]]
            inst0 = insts[idx[0]]
            env = self._env(problem.name, inst0.num_customers)
            cands = problem.num_starts(tds[idx[0]])
            plan = self._plan(inst0.num_nodes, cands)
            gcfg = self._config(plan, cands, seed)
            rows = self._rows(gcfg)
            step = max(1, min(self.batch_size, plan.max_rows // rows))
            for s in range(0, len(idx), step):
                chunk = idx[s : s + step]
                td = torch.cat([tds[k] for k in chunk], 0)
                if deadline is None:
                    found, info_k = self._decode_all(policy, td, env, gcfg, plan)
                else:
                    found, info_k = self._decode_rounds(policy, td, env, gcfg, plan, deadline)
                for j, k in enumerate(chunk):
                    decode_meta[k] = dict(info_k)
                    if found is None:
                        best_routes[k] = _fallback_routes(insts[k])
                        continue
                    m = _best_index(insts[k], found[j])
                    best_routes[k] = problem.tours_to_routes(found[j, m].tolist())
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
                **decode_meta[k],
            }
            sol = Solution.from_routes(inst, best_routes[k], solver=self.name)
            meta["construction_cost"] = sol.cost
            if self.refine:
                ls_end = None
                if time_limit is not None:
                    ls_end = t0 + time_limit * (1.0 - FINISH_RESERVE)
                if ls_end is not None and time.perf_counter() >= ls_end:
                    meta["refine_skipped"] = f"time limit {time_limit:g} s used by construction"
                else:
                    refined = Solution.from_routes(
                        inst, refine_routes(inst, sol.routes, deadline=ls_end), solver=self.name
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

    def _decode_all(
        self, policy: AttentionPolicy, td: Any, env: EnvBase, cfg: Any, plan: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One decode of the whole plan -> candidate actions [B, K, T] and what was done."""
        import torch

        with torch.inference_mode():
            roll = policy(td, env, cfg)
        assert roll.actions is not None
        info = {"num_starts": self._rows(cfg), "transforms": cfg.augment, "rounds": 1}
        return roll.actions.detach().cpu().numpy().astype(np.int64), info

    def _decode_rounds(
        self,
        policy: AttentionPolicy,
        td: Any,
        env: EnvBase,
        cfg: Any,
        plan: Any,
        deadline: float,
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Time-limited construction: rounds of transforms until the plan or the time is used.

        Round k decodes transforms ``first..first+g-1`` with the rows that the time left allows
        (spread evenly over the transforms still to do), estimated from the measured cost of
        the earlier rounds (a prior before the first); a round still running at ``deadline``
        is dropped. Returns None when not even the first round finished.
        """
        import torch

        from nco.policies.decoding import DecodeTimeout

        b, n = td.batch_size[0], int(td["locs"].shape[-2])
        multi = cfg.strategy.startswith("multistart")
        want = self._rows(cfg)
        steps = plan.est_steps
        rate, overhead = PRIOR_RATE, STEP_OVERHEAD
        kept: list[np.ndarray] = []
        done_t, rows_done, rounds, stopped = 0, 0, 0, None
        total = cfg.augment
        enc = ENCODER_PRIOR * len(policy.encoder.layers) * n * n * b  # per transform
        while done_t < total:
            left = deadline - time.perf_counter()
            todo = total - done_t
            if left <= enc:
                stopped = f"time limit: {done_t} of {total} transforms decoded"
                break
            g, afford = _round_plan(
                left, todo, want, enc=enc, steps=steps, overhead=overhead, rate=rate,
                rows_scale=b * n, first=not rounds,
            )  # fmt: skip
            if not multi:
                afford = want if afford >= want else (0 if kept else want)
            rows = min(want, afford)
            if rows < 1:
                if kept:
                    stopped = f"time limit: {done_t} of {total} transforms decoded"
                    break
                rows = 1  # try one row; the deadline guards it
            rcfg = dataclasses.replace(
                cfg,
                augment=g,
                first_transform=done_t,
                seed=int(cfg.seed) + 7919 * rounds,
                deadline=deadline,
                **({"num_starts": rows} if multi else {}),
                **({"start_choice": "random"} if multi and rows < want else {}),
            )
            tr = time.perf_counter()
            try:
                with torch.inference_mode():
                    roll = policy(td, env, rcfg)
            except DecodeTimeout:
                stopped = f"time limit: round {rounds + 1} stopped at the deadline"
                break
            dt = time.perf_counter() - tr
            assert roll.actions is not None
            t_real = int(roll.actions.shape[-1])
            steps = max(steps, t_real) if rounds == 0 else t_real
            # time = g * enc + t_real * (overhead + b * g * rows * n / rate): a round of a few
            # rows measures the overhead, a larger one the rate
            busy = dt - g * enc
            work = b * g * rows * n
            if g * rows <= 4:
                overhead = max(busy / t_real, 1e-5)
            elif busy - t_real * overhead > 0:
                rate = work * t_real / (busy - t_real * overhead)
            kept.append(roll.actions.detach().cpu().numpy().astype(np.int64))
            rows_done += g * rows
            done_t += g
            rounds += 1
        info: dict[str, Any] = {
            "num_starts": rows_done // max(1, done_t),
            "transforms": done_t,
            "rounds": rounds,
        }
        if stopped:
            info["construction_stopped"] = stopped
        if not kept:
            info["construction_stopped"] = "time limit: no rollout finished; fallback plan"
            return None, info
        tmax = max(k.shape[-1] for k in kept)
        padded = [
            np.concatenate([k, np.repeat(k[..., -1:], tmax - k.shape[-1], -1)], -1) for k in kept
        ]
        return np.concatenate(padded, 1), info


def _round_plan(
    left: float,
    todo: int,
    want: int,
    *,
    enc: float,
    steps: int,
    overhead: float,
    rate: float,
    rows_scale: int,
    first: bool,
) -> tuple[int, int]:
    """(transforms g, rows per transform) of the next round of a time-limited construction.

    A round of g transforms and r rows costs ``g * enc + steps * (overhead + g * r * rows_scale
    / rate)`` seconds. The first round decodes one transform in its share of the time (nothing
    is measured yet and its encoder runs before any deadline check); later rounds take the g
    that decodes the most rows (at most ``want`` per transform) in their share of ``left``
    (``g / todo`` of it, or all of it when that share fits no row). Rows < 1: nothing fits.
    """

    def rows(g: int, budget: float) -> int:
        return int(((budget - g * enc) / steps - overhead) * rate / (rows_scale * g))

    if first:
        return 1, min(want, rows(1, left / todo))
    best = (1, min(want, rows(1, left / todo)))
    for g in range(1, todo + 1):
        r = rows(g, left * g / todo)
        if r < 1:
            r = rows(g, left)
        r = min(want, r)
        if r >= 1 and g * r >= best[0] * max(best[1], 0):
            best = (g, r)
    return best


#: An instance this many times larger (or smaller) than a checkpoint's training sizes gets a
#: warning: quality drops quickly outside them (a CVRPTW50 network on Solomon's 100 customers:
#: 44.5% above the optimum).
SIZE_WARNING_FACTOR = 2.0


def _warn_size(source: str, info: dict[str, Any], instance: Instance) -> None:
    """Warn once per checkpoint and size when ``instance`` is far outside its training sizes."""
    import warnings

    lo, hi = _trained_sizes(info)
    if not hi:
        return
    n = instance.num_customers
    if lo / SIZE_WARNING_FACTOR <= n <= hi * SIZE_WARNING_FACTOR:
        return
    trained = f"{lo}-{hi}" if lo != hi else f"{hi}"
    warnings.warn(
        f"neural: {Path(source).stem} was trained on {trained} "
        f"{'customers' if instance.has_depot else 'cities'}; {instance.name!r} has {n}: expect a "
        "larger gap (pass model= a checkpoint trained nearer this size, or refine=True)",
        UserWarning,
        stacklevel=4,
    )


def _fallback_routes(instance: Instance) -> list[list[int]]:
    """The plan returned when the network could not finish one rollout in the time limit:
    one route per customer (VRPs), the file order (TSP)."""
    if not instance.has_depot:
        return [list(range(instance.num_nodes))]
    return [[c] for c in range(1, instance.num_nodes)]


# ---------------------------------------------------------------------------------- hybrid
class HybridSolver:
    """Neural construction as the warm start of PyVRP or OR-Tools, in one time budget.

    The network's wall time is charged to ``time_limit``: its construction is limited to
    :data:`NEURAL_SHARE` of it (fewer starts when a full multistart would not fit) and the
    backend gets what is left (if less than :data:`MIN_BACKEND_TIME` is left, the neural
    solution is returned). The result is
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
            instance, time_limit=NEURAL_SHARE * time_limit, seed=seed, initial_routes=initial_routes
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
