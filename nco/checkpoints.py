"""Self-describing checkpoints: find, describe and rebuild a trained policy from the file alone.

A training checkpoint (Lightning ``.ckpt``) stores in ``hyper_parameters`` everything needed to
rebuild the network: the :class:`~nco.policies.PolicyConfig` dict, problem name, size,
distribution, preset, the training options and ``nco_version`` (built by
:func:`checkpoint_info`). :func:`export_model` writes a slim weights-only file (policy state dict
+ the same info) for shipping in ``data/checkpoints/``; :func:`load_model` reads either.

Everything about checkpoint files lives here: resolving a path, run directory or shipped name
(:func:`resolve_checkpoint`), the shipped ones (:func:`shipped_checkpoints`,
:func:`select_checkpoint`), reading a description without the weights (:func:`read_info`,
cached) and loading the policy (:func:`load_model`, :func:`load_model_cached`).

>>> from nco.checkpoints import load_model, read_info
>>> read_info("cvrp50")["size"]                                                            # doctest: +SKIP
50
>>> policy, info = load_model("runs/cvrp50-pomo/checkpoints/best.ckpt", problem="cvrp")  # doctest: +SKIP
>>> info["problem"], info["size"]                                                          # doctest: +SKIP
('cvrp', 50)
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nco.baselines import SolverError
from nco.data import checkpoints_dir
from nco.envs import get_problem

if TYPE_CHECKING:
    from nco.policies import AttentionPolicy, PolicyConfig
    from nco.train_config import TrainConfig

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "EXPORT_FORMAT",
    "ModelNotFoundError",
    "checkpoint_digest",
    "checkpoint_info",
    "export_model",
    "load_model",
    "load_model_cached",
    "load_raw",
    "read_checkpoint",
    "read_info",
    "resolve_checkpoint",
    "select_checkpoint",
    "shipped_checkpoints",
    "trained_sizes",
]

#: Format tag of files written by :func:`export_model`.
EXPORT_FORMAT = "nco-policy"
EXPORT_VERSION = 1
#: File suffixes of checkpoints (exported ``.pt`` files first: that is what ships), in the order
#: a name without a suffix is tried.
CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth")


class ModelNotFoundError(SolverError, FileNotFoundError):
    """No checkpoint for the request: an unknown name/path, or nothing shipped for a problem."""


# ---------------------------------------------------------------------------------- description
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


def trained_sizes(info: dict[str, Any]) -> tuple[int, int]:
    """(smallest, largest) training size of a checkpoint description (0, 0 when unknown)."""
    size = int(info.get("size") or 0)
    lo, hi = info.get("size_range") or (size, size)
    return int(lo), int(hi)


# ---------------------------------------------------------------------------------- finding files
def shipped_checkpoints() -> list[Path]:
    """Checkpoint files shipped in ``nco/data/checkpoints`` (sorted by name; may be empty)."""
    d = checkpoints_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)


def _shipped_summary() -> str:
    files = shipped_checkpoints()
    if not files:
        return f"no checkpoints are shipped yet (folder {checkpoints_dir()} holds none)"
    return "shipped checkpoints: " + ", ".join(p.stem for p in files)


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A checkpoint file from a path, a run directory (``best.ckpt``, else ``last.ckpt``) or the
    name of a checkpoint shipped in ``nco/data/checkpoints`` (with or without suffix).

    Raises
    ------
    ModelNotFoundError
        (a ``FileNotFoundError``) when nothing matches; the message lists what is shipped.
    """
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
        raise ModelNotFoundError(
            f"{p}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this folder; "
            f"{_shipped_summary()}"
        )
    what = "no such checkpoint file"
    if p.parent == Path("."):
        shipped = checkpoints_dir()
        for cand in [shipped / p.name, *(shipped / f"{p.name}{s}" for s in CHECKPOINT_SUFFIXES)]:
            if cand.is_file():
                return cand
        what += " or shipped checkpoint name"
    raise ModelNotFoundError(f"{path_or_name}: {what}; {_shipped_summary()}")


def select_checkpoint(problem: str, size: int) -> Path:
    """The shipped checkpoint for ``problem`` whose training size is nearest to ``size``.

    A checkpoint trained on a size range (``size_range`` in its description) is at distance 0
    from the sizes inside it. Ties go to the larger training size. Raises
    :class:`ModelNotFoundError` naming the problem and what is shipped when none fits.
    """
    cands: list[tuple[int, int, Path]] = []
    for p in shipped_checkpoints():
        info = read_info(p)
        if info.get("problem") == problem:
            lo, hi = trained_sizes(info)
            dist = 0 if lo <= size <= hi else min(abs(size - lo), abs(size - hi))
            cands.append((dist, -hi, p))
    if not cands:
        raise ModelNotFoundError(
            f"neural: no shipped checkpoint for problem {problem!r}; {_shipped_summary()}. "
            "Pass model=PATH (--model PATH), e.g. a run directory or a file from nco train."
        )
    return min(cands)[2]


# ---------------------------------------------------------------------------------- reading files
def load_raw(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """The top-level dict of a checkpoint file, on the CPU.

    ``mmap=True`` maps the tensors from the file instead of reading them (for zip-format files,
    what ``torch.save`` writes), so reading the description or the loop counters of a large
    checkpoint costs its pickled metadata only. The tensors stay valid while they are referenced.
    """
    path = Path(path)
    # torch refuses mmap for the legacy (pre-zip) format; those are read whole
    mapped = mmap and zipfile.is_zipfile(path)
    raw: Any = None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception:
        # Lightning checkpoints hold loop/callback state that the weights-only unpickler may
        # refuse; these are files this package wrote (or that the user chose to load).
        try:
            raw = torch.load(path, map_location="cpu", weights_only=False, mmap=mapped)
        except Exception as err:
            raise ValueError(
                f"{path}: not a readable checkpoint ({type(err).__name__}: {err})"
            ) from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not an nco checkpoint (holds a {type(raw).__name__})")
    return raw


def _describe(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The description of a loaded checkpoint dict (exported or Lightning), with ``source``."""
    if raw.get("format") == EXPORT_FORMAT:
        info = dict(raw["info"])
    elif "state_dict" in raw and "hyper_parameters" in raw:
        info = dict(raw["hyper_parameters"])
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
    return info


def _policy_state(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The policy's state dict of a loaded checkpoint dict (already checked by :func:`_describe`)."""
    if raw.get("format") == EXPORT_FORMAT:
        return dict(raw["state_dict"])
    return {k[len("policy.") :]: v for k, v in raw["state_dict"].items() if k.startswith("policy.")}


_INFO_CACHE: dict[tuple[str, int], dict[str, Any]] = {}
_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


def checkpoint_digest(path: str | Path) -> str:
    """A short content digest of a checkpoint file (the first 16 hex digits of its SHA-256),
    cached per file, size and modification time.

    Records made with a checkpoint keep it, so that a file retrained or replaced under the same
    name is noticed (``nco benchmark`` re-runs such rows on resume).
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGEST_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGEST_CACHE[key] = h.hexdigest()[:16]
    return _DIGEST_CACHE[key]


def read_info(path_or_name: str | Path) -> dict[str, Any]:
    """The self-description of a checkpoint (path, run directory or shipped name) without
    reading its weights (see :func:`load_raw`); cached per file and modification time.

    Returns a fresh dict: the keys of :func:`load_model`'s ``info``.
    """
    p = resolve_checkpoint(path_or_name).resolve()
    key = (str(p), p.stat().st_mtime_ns)
    if key not in _INFO_CACHE:
        _INFO_CACHE[key] = _describe(load_raw(p, mmap=True), p)
    return dict(_INFO_CACHE[key])


def read_checkpoint(
    path_or_name: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(info, policy state dict, resolved path) of a Lightning checkpoint or an exported file."""
    path = resolve_checkpoint(path_or_name)
    raw = load_raw(path)
    info = _describe(raw, path)
    return info, _policy_state(raw), path


# ---------------------------------------------------------------------------------- the policy
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
    from nco.policies import AttentionPolicy, PolicyConfig

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


_MODEL_CACHE: dict[tuple[str, int, str], tuple[AttentionPolicy, dict[str, Any]]] = {}


def load_model_cached(
    path_or_name: str | Path, *, device: str = "cpu"
) -> tuple[AttentionPolicy, dict[str, Any]]:
    """:func:`load_model` with a per-process cache (per file, modification time and device).

    Benchmark workers build a solver per job; the cached policy is shared by every caller, so
    callers must not train or modify it.
    """
    p = resolve_checkpoint(path_or_name).resolve()
    key = (str(p), p.stat().st_mtime_ns, device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(p, device=device)
    return _MODEL_CACHE[key]


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
