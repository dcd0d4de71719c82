# Quick start: `make run` (the whole system) and `make test` (lint, types, tests).
# Each creates .venv and installs the project on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-unit servers lint typecheck pytest bench load profile chaos dr-drill clean audit security

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded,bench]'
	touch $(STAMP)

run: install
	$(BIN)/aioshop up --demo 1000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	bash scripts/deptry.sh

typecheck: install
	$(BIN)/mypy

# Starts PostgreSQL, Redis, RabbitMQ and memcached where they are not running (see the script).
servers:
	bash scripts/servers.sh

# Every test, with coverage; the floor is [tool.coverage.report] fail_under in pyproject.toml.
# `coverage run` rather than pytest-cov: it starts before pytest loads its plugins, and the
# plugin core.testing imports most of core (pytest-cov would miss those modules' top lines).
# The processes the tests start are measured too (pyproject.toml: patch = subprocess), each in
# a data file of its own: combined before the report.
pytest: install servers
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	@$(BIN)/coverage combine -q
	@echo "coverage, % of lines:"
	@$(BIN)/coverage report --format=total

# Pure-logic tests only, with no server reachable; well under 30 s.
test-unit: install
	bash scripts/test-unit.sh

# With CI=true (.ci/run), `make compose-test` runs beside `make pytest` (scripts/test-suite.sh).
test: lint typecheck test-unit
	bash scripts/test-suite.sh

# One table, one run (perf/suite): the system as `aioshop up` runs it and its peers, loaded by wrk
# (installed here when the package manager allows; else a Python generator, and the table says
# so). BENCH_ARGS passes options, e.g. BENCH_ARGS='--seconds 8 --only reads'. The per-part
# benchmarks behind some rows run alone too: python -m perf.bench_cache (bus, orders, ...).
BENCH_ARGS ?=

bench: install
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || true; }
	bash scripts/servers.sh
	$(BIN)/python -m perf.suite $(BENCH_ARGS)

# A Locust load of the running system (`make run` in another terminal) through the gateway: the
# scenarios of perf/locustfile.py, headless, for LOAD_TIME with LOAD_USERS users; HTML and CSV
# reports in perf/reports/. Start the system with the rate limits raised (README, Benchmarks).
LOAD_USERS ?= 50
LOAD_SPAWN_RATE ?= 10
LOAD_TIME ?= 60s
LOAD_HOST ?= http://127.0.0.1:8000

load: install
	@$(BIN)/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=5)' '$(LOAD_HOST)' >/dev/null 2>&1 \
		|| { echo "no gateway answers $(LOAD_HOST)/healthz: start the system with \`make run\` in another terminal (README, Benchmarks: the variables a load test needs)"; exit 1; }
	@mkdir -p perf/reports
	$(BIN)/locust -f perf/locustfile.py --headless --only-summary \
		--users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --run-time $(LOAD_TIME) \
		--host $(LOAD_HOST) --html perf/reports/load.html --csv perf/reports/load; \
		status=$$?; echo "reports: perf/reports/load.html, perf/reports/load_*.csv"; exit $$status

# A flame graph of one service of the running system (`make run` in another terminal, limits
# raised as for `make load`) under the Locust load: py-spy SVG in perf/reports/, top 15 printed.
SERVICE ?= products
PROFILE_TIME ?= 20
PROFILE_USERS ?= 20

profile: install
	$(BIN)/python -m perf.profile --service $(SERVICE) --duration $(PROFILE_TIME) \
		--users $(PROFILE_USERS) --host $(LOAD_HOST) --out perf/reports/

# The fault-injection suite (ops/chaos): the system under a Locust load while faults are
# injected one after another; one table of requests, errors, recovery times and invariant
# violations. CHAOS_ARGS passes options, e.g. CHAOS_ARGS='--profile short'.
CHAOS_ARGS ?=

chaos: install
	bash scripts/servers.sh
	$(BIN)/python -m ops.chaos $(CHAOS_ARGS)

# The disaster-recovery drill (ops/drill.py): orders placed, a backup, the orders database
# destroyed and restored, its read model rebuilt, the invariants checked; prints RTO and RPO.
dr-drill: install
	bash scripts/servers.sh
	$(BIN)/python -m ops.drill

# Static security checks (pytest runs them too, in tests/security/test_tooling.py).
security: install
	$(BIN)/bandit -q -c pyproject.toml -r core services gateway web migrations ops perf -ll
	$(BIN)/hadolint Dockerfile

# Known vulnerabilities of the installed dependencies; fails (never passes silently) when the
# vulnerability service cannot be reached.
audit: install
	bash scripts/audit.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# --- The whole system in containers (README, Containers) ---
# The engine, Compose and every image, on a machine with or without a registry: official images
# when they can be pulled, else stand-ins built from Debian's packages (deploy/images/kit.py
# prints what it did, each step's time and the image sizes; a second run reuses everything).
COMPOSE ?= docker compose
# The images the kit chose (deploy/images/images.env), when it ran; variables of the shell win.
COMPOSE_ENV = $$(test -f deploy/images/images.env && echo --env-file deploy/images/images.env)

.PHONY: images compose-up compose-down compose-test

images:
	DOCKER_BUILDKIT=0 python3 deploy/images/kit.py

# Ready when it returns: every container healthy (or its one-shot job done); the gateway on
# https://127.0.0.1:8000 (curl --cacert deploy/secrets/gateway_tls_cert).
# (deploy/gen-secrets.sh first; the kit times `docker compose up -d --wait --no-build`.)
compose-up: images
	python3 deploy/images/kit.py --compose-up

# Containers and volumes (every order, account and key) removed.
compose-down:
	$(COMPOSE) $(COMPOSE_ENV) down -v --remove-orphans

# The system test in containers (ops/compose_test.py) on what compose-up starts: a table of
# figures, also written to docs/containers.md. The system stays up afterwards (compose-down).
compose-test: install compose-up
	$(BIN)/python -m ops.compose_test
