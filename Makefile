# The two quick-start commands are `make demo` and `make test`; each installs what
# it needs first. Everything else here is a building block of those two.
SHELL := /bin/bash
VENV := .venv/bin
PYTEST := $(VENV)/python -m pytest -p no:cacheprovider

.PHONY: demo test bootstrap bootstrap-all lint typecheck unit integration e2e pods hostile k8s-binaries images bench

demo: bootstrap ## Install the Python package and run `steadfast dev` on an embedded Temporal
	$(VENV)/steadfast dev

# The Kubernetes binaries and images build in the background (niced) while lint, types
# and integration run, which need neither; unit (helm), e2e and pods wait for them.
test: ## Install everything and run every tier
	scripts/bootstrap --all --no-builds
	scripts/background-builds start
	$(MAKE) lint typecheck integration
	scripts/background-builds wait
	$(MAKE) unit e2e pods

bootstrap:
	scripts/bootstrap

bootstrap-all:
	scripts/bootstrap --all

# hack/ holds extension-less Python scripts that ruff would skip in a directory walk.
LINT_PATHS := contract worker operator dev cli tests bench hack/k8s-binaries hack/k8s_pins.py hack/cluster

lint:
	$(VENV)/ruff check $(LINT_PATHS)
	$(VENV)/ruff format --check $(LINT_PATHS)
	$(VENV)/lint-imports

typecheck:
	$(VENV)/mypy

unit:
	$(PYTEST) -m unit tests/unit

# Two steps so that a Postgres that fails to start stops here, with its own error.
# The tier waits on timers and servers far more than it computes (about a third of
# two cores), so it runs in INTEGRATION_WORKERS pytest-xdist processes, each with its
# own dev server, simulator and SMTP server; the tests keep apart by task queue, topic,
# run id and database schema. INTEGRATION_WORKERS=0 runs it in this one process.
INTEGRATION_WORKERS ?= 2
integration:
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m integration \
		-n $(INTEGRATION_WORKERS) --durations=15 tests/integration

# The agents' reports go to Postgres (an agent without a durable store gets no worker).
# Its tests wait on controllers far more than they compute (nine tenths of two cores
# idle), so E2E_WORKERS xdist processes run them, each with its own control plane.
E2E_WORKERS ?= 2
e2e:
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m e2e \
		-n $(E2E_WORKERS) --durations=15 tests/e2e

# Real pods on a real kubelet (containerd, runc, a CNI bridge) from the images of
# hack/build-images; needs root, and Postgres for the reports the worker pods save.
pods:
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m pods tests/pods

# The tests that try to break a promise (budget, secrets, re-runs, approval, ownership,
# bad names, deletion during an outage), alone; each also runs in its own tier.
hostile: bootstrap-all
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m hostile tests/integration
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m hostile tests/e2e
	dsn=$$(scripts/start-postgres) && STEADFAST_TEST_POSTGRES_DSN=$$dsn $(PYTEST) -m hostile tests/pods

k8s-binaries:
	hack/k8s-binaries

images:
	hack/build-images

bench: bootstrap-all ## the operator benchmarks need the Kubernetes binaries
	$(VENV)/python bench/run_all.py
