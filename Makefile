# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CONFIG ?= config.example.toml
STAMP  := $(VENV)/.installed
# The independent OCPI peer used by the tests pins pydantic 1: it gets its own venv.
PEER_VENV  ?= .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed
# The browser tests drive Debian's Chromium through Playwright, which must never download one.
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

# The suite runs on SQLite and on PostgreSQL (Debian's server, a throwaway cluster per run:
# tests/pg.py; or the server CSMS_TEST_POSTGRES_URL names).
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: run test test-sqlite test-postgresql lint format bench clean chromium postgresql

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(PEER_STAMP): tests/ocpi_peer/requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet -r tests/ocpi_peer/requirements.txt
	@touch $@

# installed only when missing (Debian 12: the chromium package)
chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; }

# installed only when missing (Debian 12: the postgresql package; only its binaries are used)
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y postgresql; }

run: $(STAMP)
	$(VENV)/bin/csms run --config $(CONFIG)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Both engines' passes at once, PostgreSQL's (the slower) in two processes that share its
# test files (TEST_SHARD, tests/conftest.py): three pytest processes, each with its own
# temporary directory and database server; each pass's summary is printed, its whole
# output when it failed, and the target fails when any did.
PASSES := sqlite postgresql-1 postgresql-2
test: lint $(STAMP) $(PEER_STAMP) chromium postgresql
	@runs=$$(mktemp -d); \
	echo "running the suite on sqlite and on postgresql (logs: $$runs)"; \
	CSMS_TEST_DATABASE=sqlite $(PYTEST) --basetemp=$$runs/sqlite >$$runs/sqlite.log 2>&1 & \
	p0=$$!; \
	CSMS_TEST_DATABASE=postgresql TEST_SHARD=1/2 $(PYTEST) --basetemp=$$runs/postgresql-1 \
	  >$$runs/postgresql-1.log 2>&1 & \
	p1=$$!; \
	CSMS_TEST_DATABASE=postgresql TEST_SHARD=2/2 $(PYTEST) --basetemp=$$runs/postgresql-2 \
	  >$$runs/postgresql-2.log 2>&1 & \
	p2=$$!; \
	wait $$p0; rc0=$$?; wait $$p1; rc1=$$?; wait $$p2; rc2=$$?; \
	set -- $$rc0 $$rc1 $$rc2; failed=0; \
	for pass in $(PASSES); do \
	  if [ $$1 -ne 0 ]; then failed=1; echo "======== $$pass: output"; cat $$runs/$$pass.log; fi; \
	  shift; \
	done; \
	echo "======== summary"; \
	set -- $$rc0 $$rc1 $$rc2; \
	for pass in $(PASSES); do \
	  printf '%-13s %s (exit %s)\n' "$$pass:" "$$(tail -n 1 $$runs/$$pass.log)" $$1; shift; \
	done; \
	if [ $$failed -eq 0 ]; then rm -rf $$runs; exit 0; fi; \
	echo "logs kept in $$runs"; exit 1

test-sqlite: $(STAMP) $(PEER_STAMP) chromium
	CSMS_TEST_DATABASE=sqlite $(PYTEST)

test-postgresql: $(STAMP) $(PEER_STAMP) chromium postgresql
	CSMS_TEST_DATABASE=postgresql $(PYTEST)

# The benchmark (README, "Performance"): by default MOBI.E's day for 1,000 stations ten times
# faster (the traffic of 10,000), a few minutes. The published figures come from e.g.
#   make bench BENCH_ARGS="--scenario day --stations 10000 --duration 120 --warmup 120"
BENCH_ARGS ?= --scenario day --stations 1000 --compression 10 --duration 60
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(PEER_VENV) build *.egg-info .pytest_cache .ruff_cache
