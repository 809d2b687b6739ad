"""Callbacks and log filters of a training run: the graceful stop (signals, step limit,
``max_time``), the progress bar of a resumed epoch, and the filters of Lightning's noise.

:func:`_clock` is the run clock of all of them and of :func:`nco.train.train` (a test replaces
it here to run on a fake clock).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint, RichProgressBar, TQDMProgressBar


def _clock() -> float:
    """Seconds of the run clock (``time.monotonic``; a test replaces it to run on a fake clock)."""
    return time.monotonic()


class _StopRequested(Exception):
    """Raised at a step boundary after ``last.ckpt`` was saved on a signal (or a step limit)."""


class _GracefulStop(Checkpoint):
    """On SIGINT/SIGTERM or at the time limit: save ``last.ckpt`` at the next step boundary, then
    stop the run.

    The signal handler only sets a flag (saving inside a handler could catch the optimizer
    between updates); the save happens in ``on_train_batch_end``, the same point at which
    ``ModelCheckpoint(every_n_train_steps)`` saves, so the checkpoint resumes exactly. A second
    Ctrl-C interrupts immediately. Also used by tests to stop after a given number of steps.

    ``max_time`` (seconds) is a limit on the whole run: the wall-clock time of every
    :func:`train` call of the run (set-up, training steps, validation, checkpointing), summed
    over resumes through the checkpoints (``elapsed`` = the seconds used before this call). It
    is checked at every step boundary; once reached, the run stops there as on a signal, without
    a final validation. A validation that would not finish within the limit (the previous one
    took longer than the time left) is skipped; the first one always runs.
    """

    def __init__(
        self,
        last_path: Path,
        *,
        stop_after_steps: int | None = None,
        max_time: float | None = None,
        elapsed: float = 0.0,
    ) -> None:
        self.last_path = last_path
        self.stop_after_steps = stop_after_steps
        self.max_time = max_time
        self.signum: int | None = None
        self.time_up = False
        self.saved = False
        self.pending = False
        self._old: dict[int, Any] = {}
        self._offset = float(elapsed)
        self._start = _clock()
        self._val_started: float | None = None
        self._val_seconds: float | None = None
        self._limit_val: Any = None
        self._started = False

    # -- the clock
    def elapsed(self) -> float:
        """Seconds of the whole run so far (earlier parts included)."""
        return self._offset + _clock() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def _decide(self, trainer: L.Trainer, flag: bool) -> bool:
        """The same decision on every rank (any rank's True)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
        return flag

    def _time_left(self) -> float:
        assert self.max_time is not None
        return self.max_time - self.elapsed()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_started = _clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None:
            self._val_seconds = _clock() - self._val_started

    # -- signals
    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum
        print(
            f"\nnco train: received {signal.Signals(signum).name}; saving {self.last_path} at the end of this step",
            file=sys.stderr,
            flush=True,
        )

    # -- hooks
    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self.saved = True

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self.signum is not None or (
            self.stop_after_steps is not None and trainer.global_step >= self.stop_after_steps
        )
        if self.max_time is not None:
            left = self._time_left()
            last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
            # the last step of the run ends it anyway (as finished, without a late validation)
            end_of_run = last_of_epoch and trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
            self.time_up = self._decide(trainer, left <= 0) and not end_of_run
            stop = stop or self.time_up
            if last_of_epoch:
                # the epoch-end validation runs next: skip it when it cannot end in time
                late = left <= 0 or (self._val_seconds is not None and self._val_seconds > left)
                if self._limit_val is None:
                    self._limit_val = trainer.limit_val_batches
                trainer.limit_val_batches = 0 if self._decide(trainer, late) else self._limit_val
        stop = self._decide(trainer, stop)
        if not stop or self.saved:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # Last batch of the epoch: let validation and the epoch-end updates (rollout
            # baseline test) run and save in on_train_epoch_end instead.
            self.pending = True
            return
        self._save(trainer)
        # The stop itself waits for the next hook, so Lightning first logs this step's metrics.

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.saved:
            raise _StopRequested
        if self.max_time is not None and not self._started:
            # a resumed run that has used its time already: stop before its first step (its
            # checkpoint is the run's state, nothing to save)
            self._started = True
            self.time_up = self._decide(trainer, self._time_left() <= 0)
            if self.time_up:
                raise _StopRequested

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # As a Checkpoint subclass this runs after the module's on_train_epoch_end (baseline update).
        if self.pending and not self.saved:
            self._save(trainer)
        if self.saved:
            raise _StopRequested

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved:
            raise _StopRequested

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A signal that arrived outside a training step (validation, epoch end) makes Lightning
        # raise SIGTERMException at the epoch boundary: save there (rank 0 writes directly; the
        # other ranks may already be gone, so no collective save).
        if self.signum is None or self.saved or isinstance(exception, _StopRequested):
            return
        if trainer.global_rank == 0:
            ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            trainer.strategy.checkpoint_io.save_checkpoint(ckpt, self.last_path)
            self.saved = True


class _ResumedEpochProgress(Callback):
    """The progress bar of an epoch resumed in the middle: total, position, rate and ETA.

    Lightning does not call ``on_train_epoch_start`` when it restarts mid-epoch, so the bar of
    the resumed epoch was never given its total (tqdm showed ``75/?`` and no ETA) and counted
    the batches done before the interruption as done in the first second (an inflated rate). At
    the first batch of a resumed epoch this starts the bar as an epoch start would, at the
    resumed position, with the rate measured from there.
    """

    def __init__(self) -> None:
        self._seen = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._seen:
            return
        self._seen = True
        bar = trainer.progress_bar_callback
        # is_disabled is defined by the concrete bars (TQDM, Rich), not by ProgressBar itself
        if batch_idx == 0 or bar is None or getattr(bar, "is_disabled", True):
            return
        bar.on_train_epoch_start(trainer, pl_module)
        if isinstance(bar, TQDMProgressBar):
            tq = bar.train_progress_bar
            tq.n = tq.last_print_n = tq.initial = batch_idx  # the rate counts from here
            tq.refresh()
        elif isinstance(bar, RichProgressBar):
            if bar.progress is not None and bar.train_progress_bar_id is not None:
                bar.progress.reset(
                    bar.train_progress_bar_id, total=bar.total_train_batches, completed=batch_idx
                )
                bar.refresh()


#: Lightning's info lines that tell a user of ``nco train`` nothing (the hardware summary, tips
#: for Lightning's cloud products, restoring from the checkpoint and the stop reason, which the
#: CLI reports itself). :func:`train` drops them while it runs; every other line is kept.
_QUIET_INFO = re.compile(
    r"(GPU|TPU|HPU|IPU) available: "
    r"|LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: "
    r"|💡 Tip: "
    r"|`Trainer\.fit` stopped: "
    r"|Restoring states from the checkpoint path at "
    r"|Restored all states from the checkpoint at "
)
#: Loggers of those lines (``rank_zero_info`` logs to one of the first two).
_QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)
#: Lightning warnings that do not apply to nco's training (regexes matched at the start of the
#: message), ignored while :func:`train` runs; every other warning is shown.
_QUIET_WARNINGS = (
    # steps are counted over the whole run, so rows are logged even with short epochs
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # a resumed run writes into its own checkpoint directory
    r"Checkpoint directory .* exists and is not empty",
    # batches are generated in the training step; there is no loading to parallelise
    r"The '\w+' does not have many workers",
    # a deprecation inside Lightning's own code, nothing a user can change
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # a resumed run whose first validation was skipped at --max-time has no val/cost yet
    r"`ModelCheckpoint\(monitor='val/cost'\)` could not find the monitored key",
)


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET_INFO.match(record.getMessage())


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Drop :data:`_QUIET_INFO` lines and ignore :data:`_QUIET_WARNINGS` inside the block."""
    loggers = {logging.getLogger(name) for name in _QUIET_LOGGERS}
    from lightning_utilities.core import rank_zero

    loggers.add(rank_zero.log)  # the logger rank_zero_info uses, whichever package set it
    drop = _DropInfo()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
