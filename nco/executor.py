"""One way to run independent tasks (solves) in parallel: ``nco solve --workers``,
``nco benchmark --workers`` and ``nco.solve_batch(workers=)`` all go through :func:`run_tasks`.

Executors
---------
``"process"`` (default)
    A pool of ``workers`` local processes, one thread each (``torch.set_num_threads(1)`` in every
    worker): ``workers`` is the number of cores used. The workers are forked from a fork server
    that imports the task's modules once (``preload``; spawned processes where the platform has
    no fork server, e.g. Windows), so N workers do not pay N times the seconds of importing
    torch, and the pool can be started (:class:`Pool`) before the caller loads its inputs, so
    that import overlaps the caller's own. ``workers=1`` runs the tasks in this process.
``"ray"``
    Ray tasks of one CPU each, at most ``workers`` in flight: on the cluster named by the
    standard ``RAY_ADDRESS`` environment variable (``nco`` must be installed on its nodes), else
    on a local instance started for the call (and shut down after it). A Ray session that is
    already initialised (``ray.init(...)`` before the call) is used as it is. Ray is imported
    only here, only when asked for: ``pip install "nco[cluster]"``.

Results are the same with every executor: each task runs the same function on the same
input, and an exception of the types in ``catch`` comes back as a :class:`TaskFailure` result
on every executor (other exceptions are raised in the caller).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["EXECUTORS", "Pool", "TaskFailure", "run_tasks"]

T = TypeVar("T")
R = TypeVar("R")

#: The executors :func:`run_tasks` offers.
EXECUTORS = ("process", "ray")

_Catch = tuple[type[BaseException], ...]
#: How an executor runs tasks: submit task i -> a handle; wait for some handles -> (handle,
#: result) pairs.
_Calls = tuple[Callable[[int], Any], Callable[[list[Any]], list[tuple[Any, Any]]]]

#: The install hint of the Ray executor.
RAY_INSTALL = 'pip install "nco[cluster]"  (or: pip install ray)'


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised one of the exception types the caller asked to catch.

    Attributes
    ----------
    kind : the exception's class name, e.g. ``SolverFailedError``.
    message : its message.
    """

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Raised:
    """An exception not to be caught, carried to the caller as its class, ``args`` and
    attributes: exceptions whose ``__init__`` takes other arguments than their message (most
    solver errors) do not survive pickling as themselves."""

    cls: type[BaseException]
    args: tuple[Any, ...]
    state: dict[str, Any]

    def reraise(self) -> None:
        err = self.cls.__new__(self.cls, *self.args)
        err.args = self.args
        err.__dict__.update(self.state)
        raise err


def _carried(err: BaseException) -> _Raised:
    """``err`` as a :class:`_Raised` that pickles (a RuntimeError naming it when its class or
    attributes do not)."""
    raised = _Raised(type(err), tuple(err.args), dict(vars(err)))
    try:
        pickle.dumps(raised)
    except Exception:
        return _Raised(RuntimeError, (f"{type(err).__name__}: {err}",), {})
    return raised


def _guarded(fn: Callable[[Any], Any], task: Any, catch: tuple[type[BaseException], ...]) -> Any:
    """``fn(task)`` in a worker, with the exceptions in ``catch`` as a :class:`TaskFailure`
    result and any other as a :class:`_Raised` the caller re-raises."""
    try:
        return fn(task)
    except catch as err:
        return TaskFailure(type(err).__name__, str(err))
    except Exception as err:
        return _carried(err)


def _one_thread() -> None:
    """Worker set-up: one torch thread, so that ``workers`` processes use ``workers`` cores
    (torch's default pool of one thread per core would oversubscribe them many times)."""
    import torch

    torch.set_num_threads(1)


def _ray_call(fn: Callable[[Any], Any], task: Any, catch: tuple[type[BaseException], ...]) -> Any:
    _one_thread()
    return _guarded(fn, task, catch)


def _check(executor: str, workers: int) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"the ray executor needs the package 'ray', which is not installed; install it "
            f"with: {RAY_INSTALL}"
        ) from err
    return ray


class Pool:
    """The workers of one executor, started when entered (``with Pool(...) as pool:``) so
    that their start-up runs while the caller prepares its tasks; :meth:`map` runs them.

    Parameters
    ----------
    workers : processes (``"process"``) or Ray tasks in flight (``"ray"``); ``"process"`` with
        1 runs every task in this process.
    executor : one of :data:`EXECUTORS`.
    preload : modules the ``"process"`` workers import before the first task (the modules of
        the task function and of its inputs, e.g. ``("nco.api",)``).
    """

    def __init__(
        self, workers: int = 1, executor: str = "process", preload: Sequence[str] = ()
    ) -> None:
        _check(executor, workers)
        self.workers = int(workers)
        self.executor = executor
        self.preload = tuple(preload)
        self._pool: Any = None
        self._starter: threading.Thread | None = None
        self._ray: Any = None
        self._started_ray = False

    def __enter__(self) -> Pool:
        if self.executor == "ray":
            ray = _import_ray()
            if not ray.is_initialized():
                address = os.environ.get("RAY_ADDRESS") or None
                local = {} if address else {"num_cpus": self.workers}
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,  # no start-up chatter in the command's output
                    **local,
                )
                self._started_ray = True
            self._ray = ray
        elif self.workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # fork server or spawn, never fork: torch's OpenMP threads in this process would
            # deadlock a forked child
            ctx: multiprocessing.context.BaseContext
            if "forkserver" in multiprocessing.get_all_start_methods():
                server = multiprocessing.get_context("forkserver")
                server.set_forkserver_preload(list(self.preload))
                ctx = server
            else:
                ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=_one_thread
            )
            # Starting a worker waits for the fork server to import ``preload``: do it on a
            # thread, so that the caller's own imports and loading run meanwhile.
            self._starter = threading.Thread(target=self._start_workers, daemon=True)
            self._starter.start()
        return self

    def _start_workers(self) -> None:
        """Start every worker (one no-op task each; each submit starts a process)."""
        for fut in [self._pool.submit(_one_thread) for _ in range(self.workers)]:
            fut.result()

    def _ready(self) -> None:
        if self._starter is not None:
            self._starter.join()
            self._starter = None

    def __exit__(self, *exc: object) -> None:
        self._ready()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._started_ray and self._ray is not None:
            self._ray.shutdown()
            self._started_ray = False

    def map(
        self,
        fn: Callable[[T], R],
        tasks: Sequence[T],
        *,
        on_result: Callable[[int, R | TaskFailure], None] | None = None,
        catch: tuple[type[BaseException], ...] = (),
    ) -> list[R | TaskFailure]:
        """``fn(task)`` for every task; results in task order, ``on_result(index, result)`` as
        each ends. Tasks start in order, at most ``2 * workers`` submitted at a time (an
        interrupt loses little, and the first tasks, e.g. reference runs, end first)."""
        results: list[Any] = [None] * len(tasks)

        def done(i: int, res: Any) -> None:
            if isinstance(res, _Raised):
                res.reraise()
            results[i] = res
            if on_result is not None:
                on_result(i, res)

        if self._ray is None and self._pool is None:
            for i, task in enumerate(tasks):
                res: R | TaskFailure
                try:
                    res = fn(task)
                except catch as err:
                    res = TaskFailure(type(err).__name__, str(err))
                done(i, res)
            return results
        self._ready()
        calls = self._ray_calls if self._ray is not None else self._pool_calls
        submit, finished = calls(fn, tasks, catch)
        self._windowed(len(tasks), submit, finished, done)
        return results

    def _pool_calls(self, fn: Callable[[Any], Any], tasks: Sequence[Any], catch: _Catch) -> _Calls:
        """(submit task i, wait for some) on the process pool."""
        from concurrent.futures import FIRST_COMPLETED, wait

        def finished(pending: list[Any]) -> list[tuple[Any, Any]]:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            return [(fut, fut.result()) for fut in ready]

        return (lambda i: self._pool.submit(_guarded, fn, tasks[i], catch)), finished

    def _ray_calls(self, fn: Callable[[Any], Any], tasks: Sequence[Any], catch: _Catch) -> _Calls:
        """(submit task i, wait for some) as Ray tasks of one CPU."""
        ray = self._ray
        remote = ray.remote(num_cpus=1)(_ray_call)

        def finished(pending: list[Any]) -> list[tuple[Any, Any]]:
            ready, _ = ray.wait(pending, num_returns=1)
            return [(ref, ray.get(ref)) for ref in ready]

        return (lambda i: remote.remote(fn, tasks[i], catch)), finished

    def _windowed(
        self,
        n: int,
        submit: Callable[[int], Any],
        finished: Callable[[list[Any]], list[tuple[Any, Any]]],
        done: Callable[[int, Any], None],
    ) -> None:
        """Tasks ``0..n-1`` in order, at most ``2 * workers`` submitted at once; ``finished``
        waits for at least one handle and returns ``(handle, result)`` pairs."""
        pending: dict[Any, int] = {}
        queue = list(range(n))
        while queue or pending:
            while queue and len(pending) < 2 * self.workers:
                i = queue.pop(0)
                pending[submit(i)] = i
            for handle, result in finished(list(pending)):
                done(pending.pop(handle), result)


@contextmanager
def _opened(
    pool: Pool | None, workers: int, executor: str, preload: Sequence[str]
) -> Iterator[Pool]:
    if pool is not None:
        yield pool
        return
    with Pool(workers, executor, preload) as fresh:
        yield fresh


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    workers: int = 1,
    executor: str = "process",
    on_result: Callable[[int, R | TaskFailure], None] | None = None,
    catch: tuple[type[BaseException], ...] = (),
    preload: Sequence[str] = (),
    pool: Pool | None = None,
) -> list[R | TaskFailure]:
    """Run ``fn(task)`` for every task on an executor; results in task order.

    Parameters
    ----------
    fn : a module-level function (the workers import it by name).
    tasks : its inputs (picklable).
    workers, executor, preload : see :class:`Pool`; ignored when ``pool`` is given.
    on_result : called in this process with ``(index, result)`` as each task ends.
    catch : exception types that become :class:`TaskFailure` results instead of being raised.
    pool : a started :class:`Pool` to run on (its workers are kept for the next call).
    """
    if not tasks:
        return []
    if pool is None:
        _check(executor, workers)
    with _opened(pool, workers, executor, preload) as p:
        return p.map(fn, tasks, on_result=on_result, catch=catch)
