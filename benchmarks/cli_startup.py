"""Start-up time of the ``nco`` command line against a bare Python interpreter.

Run as ``python benchmarks/cli_startup.py [--repeats 5]``. Each command is started as a fresh
subprocess ``--repeats`` times (after one untimed warm-up run that fills the OS file cache and
Python's bytecode cache) and the median wall time is reported, next to ``python -c pass``
measured in the same run; the ratio column is ``command time / python -c pass time``. The
parser imports only what it needs (``nco --help`` lists the commands from a table; a
subcommand's own parser is built only when that command runs, and ``nco train``'s reads its
defaults from the light ``nco.train_config``), so the help screens stay well under a second
although ``nco train`` itself loads torch and lightning (``nco train --help`` took 5.0 s when its
parser imported ``nco.train``).

The last line is ``RESULT nco_help_s=... nco_solve_help_s=... nco_train_help_s=...
python_pass_s=...``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
#: The console script installed beside this interpreter (``pip install -e .``).
NCO = str(Path(PYTHON).with_name("nco"))

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "nco --help": [NCO, "--help"],
    "nco solve --help": [NCO, "solve", "--help"],
    "nco train --help": [NCO, "train", "--help"],
    "nco --version": [NCO, "--version"],
}


def median_seconds(argv: list[str], repeats: int) -> float:
    """Median wall time of ``repeats`` runs of ``argv`` (output discarded, exit code 0)."""
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)  # warm-up, not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Measure every command, print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (median)")
    args = parser.parse_args(argv)
    if not Path(NCO).is_file():
        print(f"{NCO} not found: install nco into this environment first", file=sys.stderr)
        return 2
    results = {name: median_seconds(cmd, args.repeats) for name, cmd in COMMANDS.items()}
    base = results["python -c pass"]
    print(f"median of {args.repeats} runs each, {PYTHON}")
    print(f"{'command':<20} {'median s':>9} {'x python -c pass':>17}")
    print("-" * 48)
    for name, seconds in results.items():
        print(f"{name:<20} {seconds:>9.3f} {seconds / base:>17.1f}")
    print(
        f"RESULT nco_help_s={results['nco --help']:.3f} "
        f"nco_solve_help_s={results['nco solve --help']:.3f} "
        f"nco_train_help_s={results['nco train --help']:.3f} python_pass_s={base:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
