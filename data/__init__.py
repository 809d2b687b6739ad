"""Data shipped inside the nco wheel: small benchmark instances and pretrained checkpoints."""

from importlib.resources import files
from pathlib import Path


def instances_dir() -> Path:
    """Folder of the shipped instance files (``X-n101-k25.vrp``, ``kroA100.tsp``, ``C101.txt``, ...)."""
    return Path(str(files(__name__) / "instances"))


def checkpoints_dir() -> Path:
    """Folder of the shipped pretrained checkpoints and their model cards."""
    return Path(str(files(__name__) / "checkpoints"))
