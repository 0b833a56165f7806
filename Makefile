# The two commands a new machine needs: `make demo` (the main job) and `make test` (every test).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
export LLMD_CACHE ?= $(HOME)/.cache/llmd-operator

.PHONY: help venv test unit cluster-test gpu-test demo crds bench down clean

help:
	@echo "make demo   local cluster with fake GPU nodes, the operator, example deployments and a live view"
	@echo "make test   unit tests, then cluster tests against a real API server (builds it the first time)"
	@echo "make crds   regenerate crds/, the chart's and kustomize's copies, and docs/reference.md from the API models"
	@echo "make down   stop the local cluster and remove its state"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,profile]'
	touch $@

test: venv
	@e2e/ensure-prometheus.sh >/dev/null
	@KUBECONFIG="$$(e2e/cluster.sh up | tail -n 1)" && export KUBECONFIG && \
	  PATH="$$(e2e/cluster.sh bin-dir):$$PATH" && export PATH && \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider

unit: venv
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit

cluster-test: venv
	@e2e/ensure-prometheus.sh >/dev/null
	@KUBECONFIG="$$(e2e/cluster.sh up | tail -n 1)" && export KUBECONFIG && \
	  PATH="$$(e2e/cluster.sh bin-dir):$$PATH" && export PATH && \
	  $(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/cluster

# the profiler's CUDA kernels and graphs; needs a CUDA GPU and torch, nothing else of the project's dependencies
gpu-test:
	PYTHONPATH=operator $(PYTHON) -m pytest -q -p no:cacheprovider --confcutdir tests/gpu tests/gpu

demo: venv
	e2e/demo.sh

crds: venv
	$(VENV)/bin/llmd-operator crds --out-dir crds
	$(VENV)/bin/llmd-operator reference --out docs/reference.md
	scripts/sync-chart-crds.sh

bench: venv
	$(VENV)/bin/python bench/autoscale.py

down:
	e2e/cluster.sh down

clean: down
	rm -rf $(VENV)
