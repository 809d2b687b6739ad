"""``make docs`` builds the API reference from the docstrings offline (pdoc)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pdoc") is None,
    reason="pdoc is not installed (it is in the test extra: pip install -e '.[test]')",
)

#: page -> names that must be documented on it (the public API of each package)
PAGES = {
    "nco.html": ("solve", "solve_batch", "Instance", "Solution", "NeuralSolver", "HybridSolver"),
    "nco/envs.html": ("Instance", "Solution", "Problem", "get_problem", "load", "write_solution"),
    "nco/policies.html": ("AttentionPolicy", "DecodeConfig", "MoE"),
    "nco/baselines.html": ("Solver", "get_solver", "available_solvers", "UnsupportedProblemError"),
    "nco/kernels.html": (),  # a package page linking its modules
    "nco/kernels/sampling.html": ("masked_sample",),
    "nco/api.html": ("solve", "default_time_limit"),
    "nco/solvers.html": ("NeuralSolver", "HybridSolver"),
}


def test_make_docs_builds_the_api_reference(tmp_path: Path) -> None:
    out = tmp_path / "api"
    # BIN: this interpreter's environment; -o: the install stamp counts as up to date, so the
    # target never reinstalls anything
    subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.nco-installed", "docs",
         f"BIN={Path(sys.executable).parent}", f"API_DIR={out}"],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert (out / "index.html").is_file()
    for page, names in PAGES.items():
        html = (out / page).read_text()
        for name in names:
            assert f'id="{name}"' in html, f"{page}: {name} is not documented"
        # offline: scripts and styles are inline, nothing is fetched when a page is opened
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html), page
