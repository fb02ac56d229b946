# paiflow-operator. `make demo` shows it working; `make test` runs every test. Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
K8S_VERSION := v1.37.2
# Built once per version, outside the repository, and reused by every later run.
K8S_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/paiflow-operator/k8s-$(K8S_VERSION)
K8S_BIN := $(K8S_CACHE)/bin
export PAIFLOW_K8S_BIN := $(K8S_BIN)

IMAGE ?= paiflow-operator:dev

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# uv itself comes from PyPI into the user's Python; `python -m uv` works whatever PATH says.
UV := $(PYTHON) -m uv

$(BIN)/python: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	@touch $@

.PHONY: install
install: $(BIN)/python ## Create .venv with the operator and the dev tools (locked versions)

K8S_BINARIES := $(addprefix $(K8S_BIN)/,kube-apiserver kube-controller-manager kubectl etcd)

$(K8S_BINARIES) &: tests/k8s/go.mod tests/k8s/go.sum tests/k8s/tools.go tests/k8s/build.sh
	tests/k8s/build.sh "$(K8S_BIN)"

.PHONY: k8s-bin
k8s-bin: $(K8S_BINARIES) ## Build kube-apiserver, kube-controller-manager, kubectl and etcd into the cache (first time: long)

.PHONY: lint
lint: install ## ruff
	$(BIN)/ruff check
	$(BIN)/ruff format --check

.PHONY: typecheck
typecheck: install ## mypy (strict)
	$(BIN)/mypy

.PHONY: crds
crds: install ## Regenerate crds/ from the pydantic models
	$(BIN)/python -m paiflow_operator.crdgen --output crds/

.PHONY: test
test: install k8s-bin ## Every test: lint, types, unit, integration and end-to-end against a real API server
	$(MAKE) lint typecheck
	$(BIN)/pytest -ra

.PHONY: run
run: install ## Run the operator against the current kubeconfig
	$(BIN)/paiflow-operator

.PHONY: demo
demo: install k8s-bin ## Local control plane + PAI emulator + operator; watch runs move to the end
	$(BIN)/python -m tests.support.demo

.PHONY: bench
bench: install k8s-bin ## Scale benchmark (not part of the tests); writes bench/results/
	$(BIN)/python -m bench.run

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine)
	docker build -t $(IMAGE) .

.PHONY: deploy
deploy: ## Install CRDs and the operator into the current kubeconfig's cluster
	kubectl apply -f crds/
	kubectl apply -k deploy/base
