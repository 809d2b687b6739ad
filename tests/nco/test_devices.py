"""nco.devices: a device this machine cannot use is a clear nco error, not a torch assertion."""

from __future__ import annotations

import pytest
import torch

import nco
from nco.devices import DeviceError, resolve_device


@pytest.fixture
def cpu_only_torch(monkeypatch):
    """A CPU build of torch, whatever this machine has."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_on_a_cpu_build_names_the_fix(cpu_only_torch, instances_dir):
    with pytest.raises(DeviceError, match="no CUDA support; use device='cpu'.*pip install torch"):
        resolve_device("cuda")
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu"
    # The public entry points check before loading a model.
    with pytest.raises(DeviceError, match="device 'cuda'"):
        nco.solve(instances_dir / "E-n22-k4.vrp", device="cuda")
    with pytest.raises(DeviceError, match="device 'cuda:0'"):
        nco.solve_batch([instances_dir / "E-n22-k4.vrp"], device="cuda:0")


def test_visible_gpus_and_bad_strings(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0" and resolve_device(None) == "cuda"
    with pytest.raises(DeviceError, match=r"only 1 CUDA device\(s\)"):
        resolve_device("cuda:3")
    with pytest.raises(DeviceError, match="not a torch device"):
        resolve_device("gpu")
    assert issubclass(DeviceError, ValueError)  # the CLI reports ValueErrors as one line
