# Sluice developer targets. Everything runs inside .venv, installed from constraints.txt.

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SEEDS ?= 2000
JOBS ?= 2
SOAK_SEEDS ?= 200000

.PHONY: run lint unit sim test soak bench fmt clean

run: $(STAMP)
	$(VENV)/bin/sluice serve

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV_PY) -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# tests/sim is included once it exists.
unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit $(wildcard tests/sim) -m "not slow"

sim: $(STAMP)
	$(VENV_PY) -m tests.sim.run --seeds $(SEEDS) --jobs $(JOBS)

test: lint
	$(VENV)/bin/pytest
	@$(MAKE) --no-print-directory sim SEEDS=5000

soak: $(STAMP)
	$(VENV_PY) -m tests.sim.run --seeds $(SOAK_SEEDS) --jobs $(JOBS)

bench: $(STAMP)
	$(VENV_PY) -m tests.bench.raft_bench
	$(VENV_PY) -m tests.bench.store_bench

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis data build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
