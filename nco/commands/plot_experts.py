"""``nco plot-experts``: which experts each problem variant's tokens go to, for a trained
mixture-of-experts checkpoint.

Generates ``--num`` instances of every variant (multi-variant problems; one group otherwise)
at the checkpoint's size, decodes them with POMO multistart greedy and counts, for every MoE
layer, the share of each variant's routed (token, expert) assignments per expert. Writes a
heatmap per layer (``--out``) and, with ``--csv``, the numbers.

Examples::

    nco plot-experts runs/mtvrp50-pomo-moe --out experts.png
    nco plot-experts runs/mtvrp50-pomo-moe --variants CVRP,VRPTW,OVRPBLTW --num 32 --csv load.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco plot-experts"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the plot-experts arguments to a parser."""
    p.add_argument(
        "checkpoint", metavar="CKPT", help="checkpoint file, run directory or shipped model name"
    )
    p.add_argument("--out", type=Path, required=True, metavar="PNG", help="output image")
    p.add_argument("--csv", type=Path, default=None, help="also write the shares as CSV")
    p.add_argument(
        "--variants",
        default="core",
        help="multi-variant problems: 'core' (the 16 of O/B/L/TW), 'all' (48, with M and MD), "
        "'trained' (the checkpoint's training variants) or a comma-separated list (default core)",
    )
    p.add_argument("--num", type=int, default=64, help="instances per variant (default 64)")
    p.add_argument("--size", type=int, default=None, help="customers (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=1234, help="instance seed (default 1234)")


def add_parser(subparsers: Any) -> None:
    """Register ``plot-experts`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "plot-experts",
        help="plot the expert load per variant of a mixture-of-experts checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _variant_list(spec: str, info: dict[str, Any]) -> tuple[str, ...]:
    from nco.envs import mtvrp

    key = spec.strip().lower()
    if key == "core":
        return mtvrp.VARIANT_NAMES
    if key == "all":
        return mtvrp.ALL_VARIANT_NAMES
    if key == "trained":
        trained = (info.get("train") or {}).get("variants")
        if not trained:
            raise ValueError("--variants trained: the checkpoint records no training variants")
        listed = trained.split(",") if isinstance(trained, str) else list(trained)
        return tuple(n.strip() for n in listed)
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    for n in names:
        mtvrp.variant_index(n)  # ValueError naming the unknown variant
    return names


def _run(args: argparse.Namespace) -> int:
    import torch

    import nco.envs as E
    from nco.checkpoints import load_model
    from nco.plotting.experts import expert_load, plot_expert_load, write_expert_load_csv

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    policy, info = load_model(args.checkpoint)
    problem = info["problem"]
    size = args.size if args.size is not None else int(info["size"])
    if size < 1:
        raise ValueError(f"--size must be >= 1, got {size}")
    torch.manual_seed(args.seed)
    if E.get_problem(problem).has_variants:
        from nco.envs import mtvrp

        names = _variant_list(args.variants, info)
        # The same instances as every variant: draw them with all attributes, switch off
        md = any(mtvrp.VARIANTS[v.upper()].multi_depot for v in names)
        full = mtvrp.MTVRPGenerator(size, variants=("MDOVRPBLTW" if md else "OVRPBLTW",))
        data = full(args.num, seed=args.seed)
        td = torch.cat([mtvrp.to_variant(data, v) for v in names])
        groups = mtvrp.variant_names(td)
        env = E.make(problem, generator=full)
    else:
        env = E.make(problem, num_loc=size)
        td = env.generator(args.num, seed=args.seed)
        groups = [problem] * args.num
    load = expert_load(policy, td, env, groups)
    plot_expert_load(
        load, args.out, title=f"Expert load per variant: {Path(str(args.checkpoint)).name}"
    )
    if args.csv is not None:
        write_expert_load_csv(load, args.csv)
    share = load.share
    width = max(len(v) for v in load.variants)
    for li, layer in enumerate(load.layers):
        print(f"{layer}:")
        for vi, v in enumerate(load.variants):
            cells = " ".join(f"{x:5.2f}" for x in share[li, vi, : load.num_experts])
            dense = f"  dense {share[li, vi, -1]:.2f}" if load.has_dense else ""
            print(f"  {v:<{width}}  {cells}{dense}")
    print(f"wrote {args.out}" + (f" and {args.csv}" if args.csv else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the plot-experts command; 0 on success, 2 for bad input."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.plot_experts``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
