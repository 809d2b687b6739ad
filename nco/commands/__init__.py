"""Sub-commands of the ``nco`` command line: each module has ``add_parser(subparsers)`` and
``run(args) -> int``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["USER_ERRORS", "guarded", "standalone_main"]

#: Exceptions that mean bad input or a missing optional package (InstanceError, BenchmarkError,
#: UnsupportedProblemError are ValueErrors; SolverUnavailableError is an ImportError): reported
#: as one line on stderr with exit code 2, never as a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    ImportError,
)


def guarded(prog: str, fn: Callable[[Any], int], args: Any) -> int:
    """Run ``fn(args)``; turn user errors into ``prog: error: message`` on stderr and exit code 2."""
    try:
        return fn(args)
    except USER_ERRORS as err:
        msg = str(err).strip() or type(err).__name__
        print(f"{prog}: error: {msg.splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def standalone_main(
    prog: str,
    doc: str | None,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse ``argv`` with one command's arguments and run it (``python -m nco.commands.X``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure(parser)
    return run(parser.parse_args(argv))
