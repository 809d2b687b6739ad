# Two commands do all set-up on a fresh machine with only Python 3.11:
#   make demo   create .venv, install nco, solve a shipped instance (hybrid: shipped network + PyVRP), plot it
#   make test   create .venv, install nco with test extras, run lint, the type check and the tests
#   (make typecheck and make docs run one part: mypy, and the API reference in build/api/)
#
# torch is installed first from TORCH_SPEC so that the CPU wheel (torch==2.13.0 on this
# machine kind) is used and pip never pulls the multi-GB CUDA build as a dependency.
# GPU users: make demo TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON     ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV       ?= .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.nco-installed

.PHONY: demo test typecheck docs install clean

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
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -q

# mypy follows neither setuptools' package-dir mapping (envs/ installs as nco.envs, ...) nor the
# editable install's import hook, so it checks the package as installed: a tree of links under
# build/typecheck/nco holding every entry of nco/ and each mapped folder under its subpackage
# name (read from pyproject.toml, so a new subpackage needs no change here). Messages are
# mapped back to the real paths (build/typecheck/nco/envs/x.py -> envs/x.py).
TYPECHECK := build/typecheck
SUBPACKAGES = $(shell $(PYTHON) -c 'import tomllib; m = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]; print(*(k[4:] + ":" + v for k, v in m.items() if k.count(".") == 1 and k.startswith("nco.")))')

typecheck: $(STAMP)
	@rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/nco
	@for p in nco/*; do ln -s "$(CURDIR)/$$p" $(TYPECHECK)/nco/; done
	@for p in $(SUBPACKAGES); do ln -s "$(CURDIR)/$${p#*:}" "$(TYPECHECK)/nco/$${p%%:*}"; done
	@cd $(TYPECHECK) && "$(CURDIR)/$(BIN)/python" -m mypy --config-file "$(CURDIR)/pyproject.toml" \
		--cache-dir "$(CURDIR)/.mypy_cache" -p nco > mypy.txt; rc=$$?; \
		sed -E $(foreach p,$(SUBPACKAGES),-e 's#^nco/$(firstword $(subst :, ,$(p)))/#$(lastword $(subst :, ,$(p)))/#') mypy.txt; \
		exit $$rc

# The API reference from the docstrings (pdoc, no network): $(API_DIR)/index.html. Pages: the
# package with its re-exports, its user-facing modules, the four subpackages (and the modules
# of those that do not list their own __all__, e.g. nco.kernels).
API_DIR     ?= build/api
API_MODULES := nco nco.api nco.solvers nco.checkpoints nco.plotting nco.envs nco.policies nco.baselines nco.kernels

docs: $(STAMP)
	rm -rf "$(API_DIR)"
	$(BIN)/python -m pdoc --docformat numpy --output-directory "$(API_DIR)" $(API_MODULES)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
