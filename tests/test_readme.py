"""Every ```python block of README.md runs on its own, as a reader would paste it.

Each block runs in a fresh namespace (so a missing import fails here, not for the reader) in a
temporary working directory where ``data/instances`` is the repository's (the blocks use
relative paths; anything they write stays in the temporary directory). A block is skipped only
when it says so with a ``# doctest: skip (reason)`` comment.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"#\s*doctest:\s*skip\s*\((?P<reason>[^)]*)\)")


def _python_blocks() -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of each ```python block."""
    blocks, start, code = [], None, []
    for i, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if start is None and line.strip() == "```python":
            start, code = i, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            start = None
        elif start is not None:
            code.append(line)
    return blocks


BLOCKS = _python_blocks()


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_block_runs_alone(line, code, tmp_path, monkeypatch):
    skip = SKIP.search(code)
    if skip:
        pytest.skip(f"README.md:{line}: {skip['reason']}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "instances").symlink_to(ROOT / "data" / "instances")
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")  # blocks that plot must not need a display
    import matplotlib.pyplot as plt

    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    finally:
        plt.close("all")
