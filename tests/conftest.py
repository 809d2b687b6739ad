"""Shared fixtures: shipped instances and the optional benchmark pack beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NCO_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def instances_dir() -> Path:
    """Instances shipped with the package (data/instances)."""
    return ROOT / "data" / "instances"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark pack at ../shared/data (CVRPLib, TSPLIB, Solomon with best-known values)."""
    if not (SHARED_DATA / "bks.csv").is_file():
        pytest.skip(
            f"benchmark pack not found at {SHARED_DATA} (set NCO_SHARED_DATA to its folder)"
        )
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (the test suite shares the cores; several modules'
    timing and learning tests assume it), then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny_mtvrp(run: Path, preset: str, size: int = 8) -> Path:
    """A few seconds of ``nco train`` on mtvrp (CVRP + VRPTW) with a tiny network; returns the
    run directory (a real, self-describing checkpoint for command tests)."""
    import torch

    from nco.train import TrainConfig, train

    torch.set_num_threads(1)
    cfg = TrainConfig(
        problem="mtvrp",
        size=size,
        preset=preset,
        policy={"d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32},
        variants="CVRP,VRPTW",
        batch_size=8,
        instances_per_epoch=8,
        epochs=1,
        val_size=8,
        accelerator="cpu",
    )
    assert train(cfg, run, progress_bar=False).status == "finished"
    return run
