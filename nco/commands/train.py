"""``nco train``: train a policy with REINFORCE (rollout, exponential, shared or no baseline).

Writes RUN_DIR/config.yaml (resolved options), RUN_DIR/metrics.csv, RUN_DIR/checkpoints/last.ckpt
(every --checkpoint-every steps, at the end, at --max-time and on Ctrl-C/SIGTERM) and
checkpoints/best.ckpt (lowest validation cost). --max-time counts the whole run: validation and
the earlier parts of a resumed run too; a validation that would not end within it is skipped.
Options come from the defaults, then --config FILE (YAML or TOML with the option names, e.g.
``batch-size: 128``; a ``policy:`` mapping sets PolicyConfig fields), then the command line.

Examples::

    nco train --problem tsp --size 20 --preset am --epochs 20 --out runs/tsp20-am
    nco train --problem cvrp --size 50 --preset pomo-moe --moe-experts 8 --out runs/cvrp50-moe
    nco train --problem cvrp --size 50:500 --preset pomo --train-starts 32 --out runs/cvrp50-500
    nco train --resume runs/tsp20-am --epochs 40          # continue (and extend) a run
    nco train --config run.yaml --devices 2 --strategy ddp --accelerator cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "build_config", "configure", "main", "run"]

PROG = "nco train"

#: (flag, TrainConfig field, type, help) for the options that map 1:1 onto TrainConfig.
_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--problem", "problem", str, "problem: tsp, cvrp, cvrptw, mtvrp"),
    (
        "--size",
        "size",
        str,
        "customers (VRPs) or cities (TSP): N, or a range LO:HI (each batch draws its size "
        "uniformly from LO..HI; batch-size is the batch at LO, scaled down for larger sizes)",
    ),
    (
        "--distribution",
        "distribution",
        str,
        "instance distribution: uniform, clustered, mixed; cvrp also uchoa (X-like), cvrptw also "
        "solomon (the six Solomon classes), mtvrp also vrpb (X-like VRPB) and mdvrptw "
        "(Cordeau/Vidal-like multi-depot VRPTW)",
    ),
    ("--preset", "preset", str, "policy preset: am, pomo, pomo-moe, rf-transformer, pomo-dist"),
    ("--moe-router", "moe_router", str, "MoE router: topk, loss_free, expert_choice, hierarchical"),
    (
        "--moe-experts",
        "moe_experts",
        int,
        "MoE experts (adds an encoder MoE to presets without one)",
    ),
    ("--moe-k", "moe_k", int, "experts per token of the MoE routers"),
    (
        "--baseline",
        "baseline",
        str,
        "REINFORCE baseline: rollout, exponential, shared, none (default: rollout for am, shared for POMO presets)",
    ),
    (
        "--decoding",
        "decoding",
        str,
        "training decoding: sampling or multistart_sampling (default: the preset's)",
    ),
    ("--batch-size", "batch_size", int, "instances per step and device (at the smallest size)"),
    (
        "--batch-power",
        "batch_power",
        float,
        "size range: the batch at size n is max(1, round(batch-size * (LO/n)^P)) "
        "(default: 2, or 3 for POMO over every customer)",
    ),
    ("--instances-per-epoch", "instances_per_epoch", int, "instances per epoch (all devices)"),
    ("--epochs", "epochs", int, "epochs"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--weight-decay", "weight_decay", float, "Adam weight decay"),
    (
        "--lr-schedule",
        "lr_schedule",
        str,
        "none, multistep (x0.1 at 80%% and 95%% of the epochs) or cosine",
    ),
    ("--grad-clip", "grad_clip", float, "gradient-norm clip, 0 = off"),
    ("--precision", "precision", str, "Lightning precision: 32, 16-mixed, bf16-mixed, ..."),
    ("--num-starts", "num_starts", int, "POMO starts (default: every customer/city)"),
    (
        "--train-starts",
        "train_starts",
        int,
        "POMO training over K random starts per instance (cost linear in the size; default: every customer/city)",
    ),
    (
        "--num-samples",
        "num_samples",
        int,
        "samples per instance (sampling) or per start (multistart)",
    ),
    ("--augment", "augment", int, "1 or 8 (dihedral augmentation of the training batch)"),
    ("--aux-loss-weight", "aux_loss_weight", float, "weight of the MoE balance + z losses"),
    (
        "--reward-norm",
        "reward_norm",
        str,
        "advantage normalisation: none, std, mean_abs (default: std per variant for mtvrp, else none)",
    ),
    ("--accelerator", "accelerator", str, "Lightning accelerator: auto, cpu, gpu"),
    ("--devices", "devices", str, "number of devices or 'auto'"),
    ("--strategy", "strategy", str, "Lightning strategy: auto, ddp, ..."),
    ("--num-nodes", "num_nodes", int, "machines of a multi-node ddp run (torchrun / SLURM)"),
    ("--seed", "seed", int, "seed of the initial weights and of every training batch"),
    ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints/last.ckpt saves"),
    ("--log-every", "log_every", int, "steps between metrics.csv rows"),
    ("--val-size", "val_size", int, "generated validation instances (per validation size)"),
    (
        "--val-sizes",
        "val_sizes",
        str,
        "sizes of the generated validation sets, e.g. 100,500 (default: LO,HI of a --size range); "
        "logs val/cost and val/cost_nSIZE",
    ),
    ("--val-seed", "val_seed", int, "seed of the generated validation set"),
    (
        "--val-data",
        "val_data",
        str,
        "validation .pt file written by nco generate (instead of --val-size)",
    ),
    (
        "--val-reference",
        "val_reference",
        str,
        "reference costs for val/gap: CSV file or comma-separated numbers",
    ),
    (
        "--max-time",
        "max_time",
        float,
        "wall-clock limit in seconds of the whole run (validation and earlier parts of a resumed "
        "run included); the run stops at a step boundary, saving last.ckpt",
    ),
    (
        "--variants",
        "variants",
        str,
        "multi-variant problems: comma-separated variants to mix, e.g. CVRP,OVRP,VRPB,VRPL,VRPTW,OVRPTW",
    ),
    (
        "--init-from",
        "init_from",
        str,
        "start from this checkpoint's weights (path, run dir or shipped name), e.g. to fine-tune on a larger size",
    ),
)


_METAVARS = {"size": "N|LO:HI", "val_sizes": "N,N,...", "train_starts": "K", "batch_power": "P"}


def configure(p: argparse.ArgumentParser) -> None:
    """Add the train arguments to a parser (every option defaults to None = not given).

    Imports neither torch nor lightning (``nco train --help`` starts in well under a second; see
    ``benchmarks/cli_startup.py``): the defaults come from the light :mod:`nco.train_config`, the
    choices from :func:`_choices`.
    """
    from nco.train_config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    choices = _choices()
    for flag, name, typ, help_text in _OPTIONS:
        default = defaults.get(name)
        shown = "" if default is None else f" (default {default})"
        p.add_argument(
            flag,
            dest=name,
            type=typ,
            default=None,
            choices=choices.get(name),
            metavar=None
            if name in choices
            else _METAVARS.get(name) or {int: "N", float: "X"}.get(typ, "VALUE"),
            help=help_text + shown,
        )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML or TOML file with option names as keys; flags override it",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="run directory (default runs/PROBLEMSIZE-PRESET-TIME)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.ckpt",
    )
    p.add_argument(
        "--d-model",
        dest="d_model",
        type=int,
        default=None,
        help="policy width (PolicyConfig.d_model)",
    )
    p.add_argument(
        "--num-layers",
        dest="num_layers",
        type=int,
        default=None,
        help="encoder layers (PolicyConfig.num_layers)",
    )
    p.add_argument(
        "--num-heads",
        dest="num_heads",
        type=int,
        default=None,
        help="attention heads (PolicyConfig.num_heads)",
    )
    p.add_argument(
        "--d-ff", dest="d_ff", type=int, default=None, help="feed-forward width (PolicyConfig.d_ff)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


#: Choices whose source of truth lives in torch-importing packages (the problem registry
#: ``nco.envs.available()``, each problem's ``distributions``, ``nco.policies.PRESETS``),
#: repeated here so that building the parser imports neither torch nor lightning; a test keeps
#: them equal to the library's.
_PROBLEMS = ("cvrp", "cvrptw", "mtvrp", "tsp")
_DISTRIBUTIONS = ("uniform", "clustered", "mixed", "uchoa", "solomon", "vrpb", "mdvrptw")  # every problem's
_PRESETS = ("am", "pomo", "pomo-moe", "rf-transformer", "pomo-dist")


def _choices() -> dict[str, tuple[str, ...]]:
    from nco.train_config import BASELINES, LR_SCHEDULES, MOE_ROUTERS, REWARD_NORMS

    return {
        "problem": _PROBLEMS,
        "distribution": _DISTRIBUTIONS,
        "preset": _PRESETS,
        "moe_router": MOE_ROUTERS,
        "baseline": BASELINES,
        "lr_schedule": LR_SCHEDULES,
        "reward_norm": REWARD_NORMS,
    }


def add_parser(subparsers: Any) -> None:
    """Register ``train`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "train",
        help="train a policy with REINFORCE",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # yaml/toml parse errors have their own classes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--config {path}: cannot parse ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Any:
    """TrainConfig from ``base`` (a config file or a run's config.yaml) overridden by the flags given."""
    from nco.train_config import TrainConfig

    data = dict(base or {})
    for _, name, _, _ in _OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            data[name] = v
    policy = dict(data.get("policy") or {})
    for name in ("d_model", "num_layers", "num_heads", "d_ff"):
        if name in data:  # allowed at the top level of a config file too
            policy[name] = data.pop(name)
        v = getattr(args, name, None)
        if v is not None:
            policy[name] = v
    if policy:
        data["policy"] = policy
    for key in ("out", "resume", "config"):
        data.pop(key, None)
    if isinstance(data.get("devices"), str) and data["devices"].isdigit():
        data["devices"] = int(data["devices"])
    try:
        return TrainConfig.from_dict(data)
    except TypeError as err:
        raise ValueError(str(err)) from None


def _print_config(cfg: Any, run_dir: Path, resume: bool) -> None:
    import yaml

    pcfg = cfg.policy_config()
    print(f"{'resuming' if resume else 'training'} run {run_dir}")
    print("resolved configuration:")
    for line in yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip().splitlines():
        print(f"  {line}")
    print("policy:")
    for line in yaml.safe_dump(pcfg.to_dict(), sort_keys=False).rstrip().splitlines():
        print(f"  {line}")
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    import yaml

    from nco.train import train
    from nco.train.run import is_rank_zero

    resume = args.resume is not None
    if resume:
        run_dir = args.resume
        if args.out is not None and args.out.resolve() != run_dir.resolve():
            raise ValueError("--out and --resume name different run directories")
        cfg_file = run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no config.yaml in this folder")
        base = yaml.safe_load(cfg_file.read_text()) or {}
        if args.config is not None:
            raise ValueError(
                "--config cannot be combined with --resume (the run's config.yaml is used)"
            )
        cfg = build_config(args, base)
        fixed = (
            "problem",
            "size",
            "preset",
            "policy",
            "moe_router",
            "moe_experts",
            "moe_k",
            "baseline",
            "decoding",
            "augment",
            "num_starts",
            "train_starts",
            "num_samples",
        )
        old = build_config(argparse.Namespace(), base).resolved()
        changed = [n for n in fixed if getattr(cfg.resolved(), n) != getattr(old, n)]
        if changed:
            raise ValueError(
                f"--resume: cannot change {', '.join(n.replace('_', '-') for n in changed)} of an existing run"
            )
    else:
        base = _read_config_file(args.config) if args.config is not None else {}
        cfg = build_config(args, base)
        run_dir = (
            args.out
            or Path("runs")
            / f"{cfg.problem}{cfg.size_label}-{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if (run_dir / "checkpoints" / "last.ckpt").is_file() and is_rank_zero():
            raise ValueError(
                f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
            )
    cfg = cfg.resolved()
    if is_rank_zero():
        _print_config(cfg, run_dir, resume)
    result = train(cfg, run_dir, resume=resume, progress_bar=not args.no_progress)
    if is_rank_zero():
        best = (
            f", best val/cost {result.best_val_cost:.4f}"
            if result.best_val_cost is not None
            else ""
        )
        if result.status == "interrupted":
            print(
                f"interrupted at step {result.global_step}; saved {result.last_checkpoint}; continue with: nco train --resume {run_dir}"
            )
        elif result.status == "time_limit":
            limit = float(cfg.max_time or 0)
            print(
                f"stopped at the time limit ({result.elapsed:.0f} s used of --max-time {limit:g}) "
                f"at step {result.global_step}{best}; saved {result.last_checkpoint}; to train "
                f"on: nco train --resume {run_dir} --max-time {2 * limit:g}"
            )
        else:
            steps = f"{result.global_step} step{'s' if result.global_step != 1 else ''}"
            epochs = f"{result.epoch} epoch{'s' if result.epoch != 1 else ''}"
            print(f"finished: {steps}, {epochs}{best}")
            if resume and result.epoch >= cfg.epochs:
                print(
                    f"the run has done its {cfg.epochs} epoch(s); to train on: nco train --resume "
                    f"{run_dir} --epochs {cfg.epochs + max(1, cfg.epochs // 2)}"
                )
            print(
                f"checkpoints: {result.last_checkpoint}"
                + (f", {result.best_checkpoint}" if result.best_checkpoint.is_file() else "")
            )
    return result.exit_code


def run(args: argparse.Namespace) -> int:
    """Run the train command: 0 when finished, 128+signal when stopped by SIGINT/SIGTERM (after
    saving last.ckpt), 2 for bad input."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return guarded(PROG, _run, args)
    except MisconfigurationException as err:  # e.g. a precision or accelerator this machine lacks
        print(f"{PROG}: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.train``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
