"""Checking a requested torch device before a model or tensor is moved to it.

Without the check a CPU-only torch build answers ``device="cuda"`` with a bare
``AssertionError: Torch not compiled with CUDA enabled`` from deep inside ``Module.to``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceError", "resolve_device"]

#: How to get a CUDA build of torch (the Makefile's TORCH_SPEC takes the same argument).
CUDA_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cu124"


class DeviceError(ValueError):
    """A requested device this machine or torch build cannot use; says what to do instead."""


def resolve_device(device: str | torch.device | None) -> str:
    """The device to run on: CUDA when available for None, else ``device`` once checked.

    Parameters
    ----------
    device : ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, a ``torch.device`` or None.

    Returns
    -------
    str
        The device as a string (``device`` unchanged when given).

    Raises
    ------
    DeviceError
        For a string torch does not understand, a CUDA device on a torch build without CUDA or
        on a machine where no GPU is visible, a CUDA index beyond the visible GPUs, or MPS where
        it is not available.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"device {device!r}: not a torch device; expected e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'"
        ) from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise DeviceError(
                f"device {device!r}: this torch build ({torch.__version__}) has no CUDA support; "
                f"use device='cpu' (or None), or install a CUDA build: {CUDA_INSTALL}"
            )
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r}: no CUDA GPU is visible (check the driver and "
                "CUDA_VISIBLE_DEVICES); use device='cpu' (or None)"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"device {device!r}: only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available on this machine; use device='cpu'")
    return str(device)
