# Sluice developer targets. Everything runs inside .venv, installed from constraints.txt.

PYTHON ?= $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
VENV := .venv
VENV_PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SEEDS ?= 2000
JOBS ?= 2
SOAK_SEEDS ?= 200000
# The cluster simulator (whole brokers and clients): seeds of the five default profiles,
# CLUSTER_SEEDS/5 more with wiped-disk restarts (WIPE=0 switches those off), GROUP_SEEDS of
# the consumer-group profile (tests/sim/cluster_groups.py), TXN_SEEDS of the transaction
# profile (tests/sim/cluster_txn.py) and REASSIGN_SEEDS of the partition-reassignment profile
# (tests/sim/cluster_reassign.py).
CLUSTER_SEEDS ?= 1000
GROUP_SEEDS ?= 1000
TXN_SEEDS ?= 1000
REASSIGN_SEEDS ?= 1000
CLUSTER_SOAK_SEEDS ?= 20000
WIPE ?= 1
# Frames the live fuzzer sends to a broker process in `make soak` (both ports together).
FUZZ_SOAK_FRAMES ?= 1000000

.PHONY: run lint tools unit sim sim-cluster test soak bench bench-peers fmt clean

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

# Debian's prometheus (with promtool) and chromium, which the observability tests drive.
tools:
	scripts/install-debian-tools

# tests/sim is included once it exists.
unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit $(wildcard tests/sim) -m "not slow"

sim: $(STAMP)
	$(VENV_PY) -m tests.sim.run --seeds $(SEEDS) --jobs $(JOBS)

sim-cluster: $(STAMP)
	$(VENV_PY) -m tests.sim.cluster_run --seeds $(CLUSTER_SEEDS) --jobs $(JOBS)
	@if [ "$(WIPE)" != 0 ]; then \
		$(VENV_PY) -m tests.sim.cluster_run --seeds $$(( $(CLUSTER_SEEDS) / 5 )) --jobs $(JOBS) --profile wipe; \
	fi
	$(VENV_PY) -m tests.sim.cluster_run --seeds $(GROUP_SEEDS) --jobs $(JOBS) --profile groups
	$(VENV_PY) -m tests.sim.cluster_run --seeds $(TXN_SEEDS) --jobs $(JOBS) --profile txn
	$(VENV_PY) -m tests.sim.cluster_run --seeds $(REASSIGN_SEEDS) --jobs $(JOBS) --profile reassign

# pytest includes the cluster simulator's seeds: 140 of the five profiles, 20 wiped-disk and 60
# quiescence ones (tests/sim/test_cluster_sim.py), 140 of the consumer-group profile
# (tests/sim/test_group_sim.py), 140 of the transaction profile (tests/sim/test_txn_sim.py), 60 of
# the reassignment profile (tests/sim/test_reassign_sim.py). The 40 slowest tests are listed at
# the end, to keep the run's budget in view.
test: lint tools
	$(VENV)/bin/pytest --durations=40
	@$(MAKE) --no-print-directory sim SEEDS=1500

soak: $(STAMP)
	$(VENV_PY) -m tests.sim.run --seeds $(SOAK_SEEDS) --jobs $(JOBS)
	@$(MAKE) --no-print-directory sim-cluster CLUSTER_SEEDS=$(CLUSTER_SOAK_SEEDS) GROUP_SEEDS=$(CLUSTER_SOAK_SEEDS) TXN_SEEDS=$(CLUSTER_SOAK_SEEDS) \
		REASSIGN_SEEDS=$(CLUSTER_SOAK_SEEDS)
	SLUICE_STEADY_S=60 $(VENV)/bin/pytest -q tests/integration/test_cluster_faults.py -k steady
	$(VENV_PY) -m tests.fuzz.live --frames $(FUZZ_SOAK_FRAMES)
	$(VENV_PY) -m tests.model.txn_model --soak

bench: $(STAMP)
	$(VENV_PY) -m tests.bench.raft_bench
	$(VENV_PY) -m tests.bench.store_bench
	$(VENV_PY) -m tests.bench.cluster_bench
	$(VENV_PY) -m tests.bench.group_bench
	$(VENV_PY) -m tests.bench.txn_bench
	$(VENV_PY) -m tests.bench.tracing_bench
	$(VENV_PY) -m tests.bench.trip_bench
	$(VENV_PY) -m tests.bench.idle_bench
	$(VENV_PY) -m tests.bench.large_bench
	$(VENV_PY) -m tests.bench.reassign_bench --gib 0.25

# Sluice beside NATS JetStream (R1, R3) and Redis Streams (appendfsync always), all on this
# machine: installs Debian's nats-server and redis-server, then prints one table of figures and
# ratios. A benchmark, not a test. PEERS_ARGS passes flags, e.g. "--records 50000 --rounds 1".
PEERS_ARGS ?=
bench-peers: $(STAMP)
	scripts/install-peer-brokers
	$(VENV_PY) -m tests.bench.peers_bench $(PEERS_ARGS)

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis data data-cluster build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
