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
        pytest.skip(f"benchmark pack not found at {SHARED_DATA} (set NCO_SHARED_DATA to its folder)")
    return SHARED_DATA
