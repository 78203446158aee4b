# The two commands a newcomer needs: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup up test lint bench bench-pg bench-hosts bench-smoke browser prometheus redis namespaces gateway-config

$(BIN)/tenantctl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/tenantctl

setup: $(BIN)/tenantctl

# The console's browser tests drive Debian's Chromium: Playwright cannot download its own here.
# certutil (libnss3-tools) makes the browser trust the platform's local CA for tenants' HTTPS.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/certutil || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium libnss3-tools || { apt-get update -q \
	  && apt-get install -y -q chromium libnss3-tools; }; }

# Debian's Prometheus: promtool checks deploy/prometheus/ (test_prometheus_config.py) and the
# e2e test runs the server on a port of its own. The package would start a daemon on :9090 as it
# installs: a policy-rc.d refusing every start (exit 101) prevents that and is removed afterwards;
# a host's own policy-rc.d (Docker images have one) is left as it is.
prometheus:
	@test -x /usr/bin/promtool -a -x /usr/bin/prometheus || { export DEBIAN_FRONTEND=noninteractive; \
	  policy=/usr/sbin/policy-rc.d; ours=; \
	  if [ ! -e $$policy ]; then ours=1; printf '#!/bin/sh\nexit 101\n' > $$policy; \
	    chmod 755 $$policy; fi; \
	  apt-get install -y -q --no-install-recommends prometheus || { apt-get update -q \
	  && apt-get install -y -q --no-install-recommends prometheus; }; installed=$$?; \
	  if [ -n "$$ours" ]; then rm -f $$policy; fi; exit $$installed; }

# Debian's Redis, the broker of a platform with several hosts (tests/e2e/test_worker_hosts.py):
# started on 127.0.0.1:6379, keeping nothing on disk, unless one answers there already.
redis:
	@command -v redis-server >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends redis-server || { apt-get update -q \
	  && apt-get install -y -q --no-install-recommends redis-server; }; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --bind 127.0.0.1 \
	  --port 6379 --save '' --appendonly no --daemonize yes

# iproute2 (`ip netns`) and util-linux (`unshare`, `nsenter`) for tests/namespaces.
namespaces:
	@command -v ip >/dev/null && command -v unshare >/dev/null && command -v nsenter >/dev/null \
	  || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q iproute2 util-linux \
	  || { apt-get update -q && apt-get install -y -q iproute2 util-linux; }; }

# --init only for the default data directory: a mistyped TENANT_DATA_DIR is refused, not created.
up: setup
	$(BIN)/tenantctl up $(if $(TENANT_DATA_DIR),,--init)

# The production gateway's configuration (deploy/caddy/): generated from deploy/caddy/production.env
# by the code `tenantctl up` starts Caddy with; `make test` checks it is current and that Caddy
# takes it (tests/integration/test_gateway_config.py).
gateway-config: setup
	set -a; . deploy/caddy/production.env; set +a; \
	  $(BIN)/tenantctl gateway-config --edge-port 80 --api-port 8000 > deploy/caddy/production.json

# Style, the layer contracts (import-linter, pyproject.toml) and types (mypy; strict for the domain
# and the saga).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The unit layer runs on its own first: it must load no Dagster (tests/unit/conftest.py). Each run
# ends with its 15 slowest tests, so CI shows where the time goes. tests/namespaces makes network,
# PID and mount namespaces: it needs root, as CI runs.
test: setup browser prometheus redis namespaces lint
	$(BIN)/pytest -q --durations=15 tests/unit
	$(BIN)/pytest -q --durations=15 tests/integration tests/security tests/e2e tests/namespaces

# Full-size benchmarks (figures in README "Performance"); results in bench/results/*.json.
bench: setup
	$(BIN)/python -m bench.api_latency --requests 20 --rounds 3
	$(BIN)/python -m bench.cli_latency --requests 10 --rounds 3
	$(BIN)/python -m bench.burst --requests 50 --plans free --rounds 3
	$(BIN)/python -m bench.burst --requests 200 --plans free,team --enterprise --rounds 3 \
	  --json bench/results/burst-200.json
	$(BIN)/python -m bench.latency --requests 10
	$(BIN)/python -m bench.throughput --requests 50
	$(BIN)/python -m bench.compensation --samples 5
	$(BIN)/python -m bench.feed --tenants 10000
	$(BIN)/python -m bench.unread_streams --streams 500 --calls 50 --rounds 3
	$(BIN)/python -m bench.edge_load --clients 16 --seconds 10 --rounds 3 \
	  --json bench/results/edge_load.json

# The production configuration (deploy/postgres.env) beside the embedded default, their rounds
# interleaved in one run; each PostgreSQL round creates and drops its own databases and roles on
# the server at 127.0.0.1:5432 (bench/postgres.py). Figures in README "Performance".
bench-pg: setup
	$(BIN)/python -m bench.api_latency --requests 20 --rounds 3 --backend sqlite,postgres \
	  --json bench/results/api_latency-pg.json
	$(BIN)/python -m bench.burst --requests 50 --plans free --rounds 3 --backend sqlite,postgres \
	  --json bench/results/burst-50-pg.json
	$(BIN)/python -m bench.burst --requests 200 --plans free,team --enterprise --rounds 3 \
	  --backend sqlite,postgres --json bench/results/burst-200-pg.json

# Two worker hosts beside the control host, and Redis (README "Several hosts").
bench-hosts: setup redis
	$(BIN)/python -m bench.api_latency --requests 20 --rounds 3 --backend hosts,postgres \
	  --json bench/results/api_latency-hosts.json
	$(BIN)/python -m bench.burst --requests 200 --plans free,team --enterprise --rounds 3 \
	  --backend hosts,postgres --json bench/results/burst-200-hosts.json
	$(BIN)/python -m bench.compensation --samples 5 --backend hosts \
	  --json bench/results/compensation-hosts.json

# Tiny sizes, run by CI to keep the scripts working.
bench-smoke: setup redis
	$(BIN)/python -m bench.api_latency --requests 2 --rounds 1 --backend sqlite,postgres,hosts \
	  --json bench/results/smoke-api.json
	$(BIN)/python -m bench.cli_latency --requests 2 --rounds 1 --json bench/results/smoke-cli.json
	$(BIN)/python -m bench.burst --requests 6 --plans free,team --enterprise --rounds 1 \
	  --backend sqlite,postgres --json bench/results/smoke-burst.json
	$(BIN)/python -m bench.latency --requests 2 --json bench/results/smoke-latency.json
	$(BIN)/python -m bench.throughput --requests 4 --json bench/results/smoke-throughput.json
	$(BIN)/python -m bench.compensation --samples 1 --json bench/results/smoke-compensation.json
	$(BIN)/python -m bench.feed --tenants 50 --queries 20 --json bench/results/smoke-feed.json
	$(BIN)/python -m bench.call_chain --json bench/results/smoke-call-chain.json
	$(BIN)/python -m bench.bulk_retry --requests 4 --rounds 1 --json bench/results/smoke-bulk-retry.json
	$(BIN)/python -m bench.unread_streams --streams 20 --calls 5 --rounds 1 \
	  --json bench/results/smoke-unread-streams.json
	$(BIN)/python -m bench.edge_load --clients 2 --seconds 1 --rounds 1 \
	  --json bench/results/smoke-edge-load.json
