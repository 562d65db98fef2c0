# Quickstart: `make demo` runs a realistic batch through the pipeline, `make test` runs the tests.
# Both set up everything themselves (Python env, Kafka jars, Kafka, PostgreSQL, services).
PY := .venv/bin/python
export REFUND_RUN_DIR ?= $(CURDIR)/.run/dev

.PHONY: setup up down status demo bench test test-unit test-deploy lint clean

.venv/.synced: pyproject.toml uv.lock scripts/bootstrap.sh
	scripts/bootstrap.sh

setup: .venv/.synced

up: setup
	$(PY) -m devstack up

down: setup
	$(PY) -m devstack down

status: setup
	$(PY) -m devstack status

demo: setup
	$(PY) -m tools.demo $(DEMO_ARGS)

# Open-loop rate steps through the pipeline plus a raw Kafka 5-hop relay on the same broker (issue 14);
# e.g. make bench BENCH_ARGS="--rates 20,40 --duration 10 --skip-relay".
bench: setup
	$(PY) -m tools.bench $(BENCH_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Render and validate the Kubernetes overlays and the compose file (no cluster, no Docker).
test-deploy: setup
	$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

clean: down
	rm -rf .run
