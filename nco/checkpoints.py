"""Self-describing checkpoints: rebuild a trained policy from the file alone.

A training checkpoint (Lightning ``.ckpt``) stores in ``hyper_parameters`` everything needed to
rebuild the network: the :class:`~nco.policies.PolicyConfig` dict, problem name, size,
distribution, preset, the training options and ``nco_version``. :func:`export_model` writes a slim
weights-only file (policy state dict + the same info) for shipping in ``data/checkpoints/``;
:func:`load_model` reads either.

>>> from nco.checkpoints import load_model
>>> policy, info = load_model("runs/cvrp50-pomo/checkpoints/best.ckpt", problem="cvrp")  # doctest: +SKIP
>>> info["problem"], info["size"]                                                          # doctest: +SKIP
('cvrp', 50)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nco.envs import get_problem
from nco.policies import AttentionPolicy, PolicyConfig

if TYPE_CHECKING:
    from nco.train import TrainConfig

__all__ = [
    "EXPORT_FORMAT",
    "checkpoint_info",
    "export_model",
    "load_model",
    "read_checkpoint",
    "resolve_checkpoint",
]

#: Format tag of files written by :func:`export_model`.
EXPORT_FORMAT = "nco-policy"
EXPORT_VERSION = 1
_SUFFIXES = (".ckpt", ".pt", ".pth")


def checkpoint_info(policy_config: PolicyConfig, train_config: TrainConfig) -> dict[str, Any]:
    """The self-description stored in a checkpoint's ``hyper_parameters``.

    ``size`` is always an int: the (largest) training size. A run trained on a size range
    (``nco train --size 50:500``) also stores ``size_range: [lo, hi]`` (and ``train["size"]`` is
    the same list).
    """
    from nco import __version__

    info: dict[str, Any] = {
        "nco_version": __version__,
        "problem": train_config.problem,
        "size": train_config.max_size,
        "distribution": train_config.distribution,
        "preset": train_config.preset,
        "policy": policy_config.to_dict(),
        "train": train_config.to_dict(),
    }
    if train_config.multi_size:
        info["size_range"] = list(train_config.size_bounds)
    return info


def _packaged_dir() -> Path | None:
    try:
        from importlib.resources import files

        return Path(str(files("nco.data") / "checkpoints"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return None


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint file from a path, a run directory (``best.ckpt``, else ``last.ckpt``) or the
    name of a checkpoint shipped in ``nco/data/checkpoints`` (with or without extension)."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    if p.is_dir():
        for cand in (
            p / "checkpoints" / "best.ckpt",
            p / "checkpoints" / "last.ckpt",
            p / "best.ckpt",
            p / "last.ckpt",
        ):
            if cand.is_file():
                return cand
        raise FileNotFoundError(
            f"{p}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this folder"
        )
    shipped = _packaged_dir()
    if shipped is not None and shipped.is_dir() and p.parent == Path("."):
        for cand in [shipped / p.name, *(shipped / f"{p.name}{s}" for s in _SUFFIXES)]:
            if cand.is_file():
                return cand
        names = sorted(f.stem for f in shipped.iterdir() if f.suffix in _SUFFIXES)
        hint = f"; shipped checkpoints: {', '.join(names)}" if names else ""
        raise FileNotFoundError(
            f"{path_or_name}: no such checkpoint file or shipped checkpoint name{hint}"
        )
    raise FileNotFoundError(f"{path_or_name}: no such checkpoint file")


def _torch_load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        pass
    # Lightning checkpoints hold loop/callback state that the weights-only unpickler may refuse;
    # these are files this package wrote (or that the user chose to load).
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err


def read_checkpoint(
    path_or_name: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(info, policy state dict, resolved path) of a Lightning checkpoint or an exported file."""
    path = resolve_checkpoint(path_or_name)
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not an nco checkpoint")
    if raw.get("format") == EXPORT_FORMAT:
        info = dict(raw["info"])
        state = dict(raw["state_dict"])
    elif "state_dict" in raw and "hyper_parameters" in raw:
        info = dict(raw["hyper_parameters"])
        state = {
            k[len("policy.") :]: v for k, v in raw["state_dict"].items() if k.startswith("policy.")
        }
        info["global_step"] = int(raw.get("global_step", 0))
        info["epoch"] = int(raw.get("epoch", 0))
    else:
        raise ValueError(
            f"{path}: not an nco checkpoint (neither a Lightning checkpoint nor an exported policy)"
        )
    missing = [k for k in ("problem", "policy") if k not in info]
    if missing:
        raise ValueError(
            f"{path}: checkpoint lacks {', '.join(missing)} in its description; was it written by nco train?"
        )
    info["source"] = str(path)
    return info, state, path


def load_model(
    path_or_name: str | Path, *, problem: str | None = None, device: str | torch.device = "cpu"
) -> tuple[AttentionPolicy, dict[str, Any]]:
    """Rebuild a trained policy from a checkpoint alone (no training configuration needed).

    Parameters
    ----------
    path_or_name : Lightning ``.ckpt``, a file written by :func:`export_model`, a run directory,
        or the name of a checkpoint shipped in ``nco/data/checkpoints``.
    problem : expected problem name; a mismatch raises ValueError naming both.
    device : where to put the policy.

    Returns
    -------
    (policy, info)
        The policy in eval mode, and the checkpoint's description (``problem``, ``size`` (int,
        the largest trained size), ``size_range`` ([lo, hi], runs on a size range only),
        ``distribution``, ``preset``, ``policy`` config dict, ``train`` options, ``nco_version``,
        ``global_step``, ``epoch`` when known, ``source``).
    """
    info, state, path = read_checkpoint(path_or_name)
    if problem is not None and problem != info["problem"]:
        raise ValueError(
            f"checkpoint {path} was trained on problem {info['problem']!r}, but problem {problem!r} was requested"
        )
    try:
        cfg = PolicyConfig.from_dict(info["policy"])
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: its policy configuration does not match this nco version ({err})"
        ) from err
    policy = AttentionPolicy(cfg, get_problem(info["problem"]))
    try:
        policy.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the stored configuration ({first})") from err
    policy.to(device).eval()
    return policy, info


def export_model(ckpt: str | Path, out_path: str | Path) -> Path:
    """Write a slim weights-only copy of a checkpoint (policy state dict + info, float32 on CPU).

    The result loads with ``torch.load(weights_only=True)`` and with :func:`load_model`.
    """
    from nco.envs.io import atomic_write

    info, state, _ = read_checkpoint(ckpt)
    info = {k: v for k, v in info.items() if k != "source"}
    payload = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "info": info,
        "state_dict": {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in state.items()
        },
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as fh:
        torch.save(payload, fh)
    return out
