# Two commands do all set-up on a fresh machine with only Python 3.11:
#   make demo   create .venv, install nco, solve a shipped instance (hybrid: shipped network + PyVRP), plot it
#   make test   create .venv, install nco with test extras, run lint and the test suite
#
# torch is installed first from TORCH_SPEC so that the CPU wheel (torch==2.13.0 on this
# machine kind) is used and pip never pulls the multi-GB CUDA build as a dependency.
# GPU users: make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON     ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV       ?= .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.nco-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[solvers,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nco solve data/instances/X-n101-k25.vrp --solver hybrid --time-limit 2 --out X-n101-k25.hybrid.sol --plot X-n101-k25.png
	$(BIN)/nco evaluate data/instances/X-n101-k25.vrp X-n101-k25.hybrid.sol

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
