"""The executor of every parallel solve: results, failures and benchmark rows are the same in
this process, in a process pool and on Ray; Ray is imported only when asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import nco.envs as E
from nco.api import SolveTask, run_task
from nco.baselines import SolverError, UnsupportedProblemError
from nco.benchmark import generate_instances, read_results, run_benchmark
from nco.executor import Pool, TaskFailure, run_tasks


def _instances(problem: str, size: int, num: int, seed: int) -> list[E.Instance]:
    prob = E.get_problem(problem)
    td = prob.generator(num_loc=size)(num, seed=seed)
    return [prob.to_instance(td[i : i + 1], name=f"{problem}{size}-{i}") for i in range(num)]


def _tasks() -> list[SolveTask]:
    """Two CVRPs (solved) around one CVRPTW that HGS-CVRP refuses."""
    cvrp = _instances("cvrp", 6, 2, seed=3)
    (tw,) = _instances("cvrptw", 6, 1, seed=3)
    return [SolveTask("hgs", {}, inst, 0.1, 0) for inst in (cvrp[0], tw, cvrp[1])]


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_task_order_and_failures_as_results(workers: int) -> None:
    pytest.importorskip("hygese")
    tasks = _tasks()
    seen: list[int] = []
    out = run_tasks(
        run_task,
        tasks,
        workers=workers,
        catch=(SolverError,),
        on_result=lambda i, _: seen.append(i),
        preload=("nco.api",),
    )
    assert sorted(seen) == [0, 1, 2]
    assert [o.instance.name for o in (out[0], out[2])] == ["cvrp6-0", "cvrp6-1"]  # type: ignore[union-attr]
    assert all(o.feasible for o in (out[0], out[2]))  # type: ignore[union-attr]
    assert isinstance(out[1], TaskFailure) and out[1].kind == "UnsupportedProblemError"
    assert "does not support problem 'cvrptw'" in str(out[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_an_uncaught_solver_error_keeps_its_class_across_processes(workers: int) -> None:
    pytest.importorskip("hygese")
    with pytest.raises(UnsupportedProblemError, match="cvrptw") as info:
        run_tasks(run_task, _tasks(), workers=workers, preload=("nco.api",))
    assert info.value.solver == "hgs" and info.value.problem == "cvrptw"


def test_bad_executor_or_workers_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="unknown executor 'dask'; expected one of process, ray"):
        Pool(2, "dask")
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_tasks(run_task, _tasks(), workers=0)


def test_nothing_needs_or_starts_ray_unless_asked_for() -> None:
    # torchrl imports ray when it is installed: nco's modules must work without it and start
    # no Ray instance of their own
    code = (
        "import sys\nsys.modules['ray'] = None\n"
        "import nco.api, nco.benchmark, nco.executor, nco.commands.solve, nco.commands.benchmark\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    try:
        import ray
    except ImportError:
        return
    run_tasks(run_task, _tasks()[:1], workers=1, preload=("nco.api",))
    assert not ray.is_initialized()


def test_missing_ray_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r'pip install "nco\[cluster\]"'), Pool(2, "ray"):
        pass


# ----------------------------------------------------------------------------- ray
@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance of two CPUs for this module (the executor uses a session that is
    already initialised as it is)."""
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install 'nco[cluster]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _benchmark(files: list[Path], out: Path, executor: str, log: list[str]) -> list[dict[str, str]]:
    return run_benchmark(
        files,
        ["pyvrp", "neural@cvrp50"],
        [0.5, 2],
        out,
        seed=1,
        workers=2,
        reference="none",
        progress=log.append,
        executor=executor,
    )


def test_benchmark_rows_and_resume_are_the_same_with_ray(local_ray, tmp_path: Path) -> None:
    files = generate_instances("cvrp", 6, 3, 11, tmp_path / "instances")
    log_p: list[str] = []
    log_r: list[str] = []
    by_process = _benchmark(files, tmp_path / "process", "process", log_p)
    by_ray = _benchmark(files, tmp_path / "ray", "ray", log_r)

    def key(r: dict[str, str]) -> tuple[str, str, str]:
        return (r["instance"], r["solver"], r["time_limit"])

    assert len(by_process) == 12 and {key(r) for r in by_process} == {key(r) for r in by_ray}
    ray_rows = {key(r): r for r in by_ray}
    for r in by_process:
        other = ray_rows[key(r)]
        assert r["feasible"] == other["feasible"] == "True"
        # the greedy network is deterministic; PyVRP proves these 6-customer optima quickly
        assert float(r["cost"]) == pytest.approx(float(other["cost"]), rel=1e-9)
        assert r["note"] == other["note"] and r["solution_file"] == other["solution_file"]
    # the time-independent network ran once per instance on both executors
    for log in (log_p, log_r):
        assert sum("neural@cvrp50 without a limit" in line for line in log) == 3
    # a run written by one executor resumes on the other: nothing is solved again
    again: list[str] = []
    rows = _benchmark(files, tmp_path / "process", "ray", again)
    assert any("resuming: 12 of 12" in line for line in again)
    assert not any(line.startswith("[") for line in again)
    assert len(read_results(tmp_path / "process" / "results.csv")) == 12
    assert [r["cost"] for r in rows] == [r["cost"] for r in by_process]


def test_nco_solve_with_the_ray_executor(local_ray, tmp_path: Path, capsys) -> None:
    from nco.commands import solve as solve_cmd

    files = generate_instances("cvrp", 6, 2, 4, tmp_path / "instances")
    argv = [*map(str, files), "--solver", "pyvrp", "--time-limit", "0.2", "--out", str(tmp_path)]
    assert solve_cmd.main([*argv, "--executor", "ray", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("feasible, ") == 2 and out.count("s of 0.2 s") == 2
    for f in files:
        inst = E.load(f)
        sol = E.load_solution(tmp_path / f"{inst.name}.pyvrp.sol", inst)
        assert sol.feasible
