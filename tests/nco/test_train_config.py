"""The light training configuration module and the ``nco train`` parser built on it."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

from nco.commands import train as train_cmd


def test_train_help_imports_neither_torch_nor_lightning():
    """``nco train --help`` shows every default without loading the trainer (start-up time:
    benchmarks/cli_startup.py)."""
    code = (
        "import sys\nfrom nco.cli import main\n"
        "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'torchrl', 'numpy') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]"), proc.stdout[-300:]
    assert "--max-time" in proc.stdout and "(default 6400)" in proc.stdout
    assert "{cvrp,cvrptw,mtvrp,tsp}" in proc.stdout


def test_parser_choices_are_the_library_s():
    """The choices repeated in nco.commands.train (so that the parser needs no torch) are the
    registries' own."""
    from nco.envs import available, get_problem
    from nco.policies import PRESETS

    choices = train_cmd._choices()
    assert choices["problem"] == tuple(available())
    assert choices["preset"] == tuple(PRESETS)
    union = {d for p in available() for d in get_problem(p).distributions}
    assert set(choices["distribution"]) == union
    assert len(choices["distribution"]) == len(union)


def test_train_reexports_the_config():
    import nco.train
    import nco.train_config

    assert nco.train.TrainConfig is nco.train_config.TrainConfig
    assert nco.train.batch_seed is nco.train_config.batch_seed
    for name in ("BASELINES", "LR_SCHEDULES", "MOE_ROUTERS", "PRECISIONS", "REWARD_NORMS"):
        assert getattr(nco.train, name) == getattr(nco.train_config, name)
    # the parser shows the dataclass defaults
    defaults = {f.name: f.default for f in dataclasses.fields(nco.train.TrainConfig)}
    parser = argparse.ArgumentParser()
    train_cmd.configure(parser)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["epochs"].endswith(f"(default {defaults['epochs']})")
    assert helps["lr"].endswith(f"(default {defaults['lr']})")
