"""The run driver: :func:`train`, its loggers and strategy, and the run's :class:`TrainResult`."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tensordict import TensorDict

from nco.checkpoints import load_raw
from nco.train import callbacks as run_callbacks
from nco.train.callbacks import _quiet_lightning, _ResumedEpochProgress, _StopRequested
from nco.train.data import load_reference, load_validation_set
from nco.train.module import REINFORCEModule
from nco.train_config import TrainConfig

__all__ = ["TrainResult", "is_rank_zero", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    run_dir : the run directory.
    status : ``finished``, ``interrupted`` (a signal, or ``stop_after_steps``) or ``time_limit``
        (stopped at ``max_time``; ``last.ckpt`` holds the state, resume with a larger limit).
    global_step, epoch : counters at the end.
    best_val_cost : best ``val/cost`` seen (None before the first validation).
    last_checkpoint, best_checkpoint : paths (best may not exist).
    exit_code : 0 when finished or at the time limit, 128 + signal number when stopped by a
        signal.
    elapsed : wall-clock seconds of the whole run, earlier parts of a resumed run included (what
        ``max_time`` limits).
    """

    run_dir: Path
    status: str
    global_step: int
    epoch: int
    best_val_cost: float | None
    last_checkpoint: Path
    best_checkpoint: Path
    exit_code: int
    elapsed: float = 0.0


def is_rank_zero() -> bool:
    """True in the process of global rank 0 (also before Lightning has started the others)."""
    # Lightning's DDP launcher re-runs the command with these set for the other ranks.
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def _csv_logger(run_dir: Path, resume_step: int | None) -> CSVLogger:
    """CSVLogger writing exactly RUN_DIR/metrics.csv; on resume, keeps the earlier rows."""
    logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=50)
    if not is_rank_zero():
        return logger
    metrics = run_dir / "metrics.csv"
    old_rows: list[dict[str, str]] = []
    header: list[str] = []
    if resume_step is not None and metrics.is_file():
        with metrics.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            # Rows logged after the checkpoint's step are re-logged by the resumed run.
            old_rows = [
                r for r in reader if r.get("step", "").isdigit() and int(r["step"]) < resume_step
            ]
        metrics.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "log directory not empty": it holds config.yaml
        writer = logger.experiment  # creates the writer now (it deletes an existing metrics.csv)
    if old_rows:
        with metrics.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header)
            w.writeheader()
            w.writerows(old_rows)
        writer.metrics_keys = sorted(header)
    return logger


def _loggers(run_dir: Path, resume_step: int | None) -> list[Any]:
    loggers: list[Any] = [_csv_logger(run_dir, resume_step)]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return loggers
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tb", version=""))
    return loggers


def _strategy(config: TrainConfig) -> Any:
    if config.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # MoE experts (and the hierarchical gate's unused branch) may get no gradient in a step.
        has_moe = (
            config.policy_config().moe is not None or config.policy_config().decoder_moe is not None
        )
        return DDPStrategy(
            find_unused_parameters=has_moe,
            process_group_backend="gloo" if config.accelerator == "cpu" else None,
        )
    return config.strategy


def _checkpoint_state(path: Path) -> tuple[int, float]:
    """``(global_step, seconds of the run so far)`` of a checkpoint (the seconds from the
    Lightning ``Timer`` state for checkpoints written before ``_GracefulStop`` kept them)."""
    ckpt = load_raw(path, mmap=True)
    states = ckpt.get("callbacks") or {}
    ours = states.get(run_callbacks._GracefulStop.__qualname__) or {}
    if "elapsed" in ours:
        elapsed = float(ours["elapsed"])
    else:
        timer: dict[str, Any] = (
            next((v for k, v in states.items() if str(k).startswith("Timer")), {}) or {}
        )
        elapsed = float((timer.get("time_elapsed") or {}).get("train", 0.0))
    return int(ckpt.get("global_step", 0)), elapsed


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    stop_after_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a policy and write the run directory.

    Parameters
    ----------
    config : training configuration (written resolved to ``RUN_DIR/config.yaml``).
    run_dir : output folder: ``config.yaml``, ``metrics.csv``, ``checkpoints/last.ckpt`` and
        ``checkpoints/best.ckpt`` (by ``val/cost``), ``tb/`` when tensorboard is installed.
    resume : continue from ``RUN_DIR/checkpoints/last.ckpt`` (optimizer, scheduler, baseline,
        counters, the epoch position and the seconds used so far restored).
    progress_bar : show Lightning's progress bar.
    stop_after_steps : behave as if interrupted after this many steps (saves ``last.ckpt`` at
        that step boundary); for tests and time-sliced jobs.
    callbacks : extra Lightning callbacks.

    Returns
    -------
    TrainResult

    Notes
    -----
    ``config.max_time`` limits the whole run, across resumes (see :class:`_GracefulStop`): at
    the limit the run saves ``last.ckpt`` at a step boundary and returns ``status="time_limit"``;
    resuming continues with the time left (none: it stops before its first step; pass a larger
    ``max_time`` to train on). Lightning's hardware summary, tips and the warnings that do not
    apply here (:data:`_QUIET_WARNINGS`) are silenced while it runs.
    """
    # the clock and the stop callback are looked up on their module, where a test replaces them
    started = run_callbacks._clock()
    with _quiet_lightning():
        return _train(config, run_dir, resume, progress_bar, stop_after_steps, callbacks, started)


def _train(
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool,
    progress_bar: bool,
    stop_after_steps: int | None,
    callbacks: Sequence[Callback],
    started: float,
) -> TrainResult:
    import yaml

    cfg = config.resolved()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last, best = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from")
    if not resume and last.is_file() and is_rank_zero():
        raise ValueError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    # Build everything that can reject the input (validation data, --init-from) before the run
    # directory is written, so bad input leaves no partial run behind.
    val = load_validation_set(cfg)
    ref = (
        load_reference(cfg.val_reference, val.batch_size[0])
        if isinstance(val, TensorDict)
        else None
    )
    module = REINFORCEModule(cfg, val_data=val, val_reference=ref)
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "config.yaml").open("w") as fh:
            yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
    resume_step, elapsed = _checkpoint_state(last) if resume else (None, 0.0)
    stopper = run_callbacks._GracefulStop(
        last,
        stop_after_steps=stop_after_steps,
        max_time=cfg.max_time,
        elapsed=elapsed + run_callbacks._clock() - started,
    )
    every = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        every_n_train_steps=cfg.checkpoint_every,
        save_top_k=1,
        enable_version_counter=False,
    )
    best_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/cost",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    extra: list[Callback] = [_ResumedEpochProgress()] if resume and progress_bar else []
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=_strategy(cfg),
        precision=cfg.precision,  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        gradient_clip_val=cfg.grad_clip or None,
        logger=_loggers(run_dir, resume_step),
        callbacks=[every, best_cb, stopper, *extra, *callbacks],
        log_every_n_steps=cfg.log_every,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=False,
        default_root_dir=str(run_dir),
    )
    status, code = "finished", 0
    stopper.install()
    try:
        trainer.fit(module, ckpt_path=str(last) if resume else None)
    except _StopRequested:
        status = "interrupted"
    except SystemExit as err:  # Lightning's SIGTERMException outside a step
        if stopper.signum is None:
            raise
        del err
        status = "interrupted"
    finally:
        stopper.uninstall()
    if status == "finished" and not trainer.interrupted:
        # A finished run's last.ckpt holds the final weights (and can be extended with --epochs).
        trainer.save_checkpoint(last, weights_only=False)
    if stopper.signum is not None:
        code = 128 + int(stopper.signum)
        status = "interrupted"
    elif stopper.time_up and status == "interrupted":
        status = "time_limit"
    score = best_cb.best_model_score
    return TrainResult(
        run_dir=run_dir,
        status=status,
        global_step=int(trainer.global_step),
        epoch=int(trainer.current_epoch),
        best_val_cost=float(score) if score is not None else None,
        last_checkpoint=last,
        best_checkpoint=best,
        exit_code=code,
        elapsed=stopper.elapsed(),
    )
