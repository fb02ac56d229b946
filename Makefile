# paiflow-operator. `make demo` shows it working; `make test` runs every test. Both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Tools are built or installed once per version, outside the repository, and reused by every later run.
CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/paiflow-operator
K8S_VERSION := v1.37.2
K8S_CACHE ?= $(CACHE)/k8s-$(K8S_VERSION)
K8S_BIN := $(K8S_CACHE)/bin
export PAIFLOW_K8S_BIN := $(K8S_BIN)

# helm, promtool and actionlint: the versions are those pinned in tests/tools/TOOL/go.mod.
tool_version = $(shell sed -n 's/^require [^ ]* \(v[^ ]*\)$$/\1/p' tests/tools/$(1)/go.mod)
HELM := $(CACHE)/helm-$(call tool_version,helm)/bin/helm
PROMTOOL := $(CACHE)/promtool-$(call tool_version,promtool)/bin/promtool
ACTIONLINT := $(CACHE)/actionlint-$(call tool_version,actionlint)/bin/actionlint
export PAIFLOW_HELM := $(HELM)
export PAIFLOW_PROMTOOL := $(PROMTOOL)
export PAIFLOW_ACTIONLINT := $(ACTIONLINT)
export PAIFLOW_CACHE := $(CACHE)

# One image name from build to deploy: `make image deploy IMAGE=registry.example.com/paiflow-operator:0.1.0`.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/paiflow-operator/paiflow-operator:$(VERSION)
OVERLAY ?= base

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# uv: the one on PATH if there is one (a standalone binary, pipx, ...), else uv pinned by hash in a private
# venv in the cache (hack/bootstrap-uv.sh). The system Python is never pip-installed into: Debian 12 and
# Ubuntu 24.04 refuse that (PEP 668, externally-managed-environment).
UV_VERSION := $(shell sed -n 's/^uv==\([^ ]*\) .*/\1/p' hack/uv-requirements.txt)
UV_VENV := $(CACHE)/uv-$(UV_VERSION)
UV ?= $(or $(shell command -v uv 2>/dev/null),$(UV_VENV)/bin/uv)
export PAIFLOW_UV := $(UV)

$(UV_VENV)/bin/uv: hack/uv-requirements.txt hack/bootstrap-uv.sh
	hack/bootstrap-uv.sh "$(PYTHON)" "$(UV_VENV)"

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (this project's CI machines), every operator start in
# the tests and the benchmark compiled its libraries again (2.2 s to import the operator, 1.2 s with bytecode).
$(BIN)/python: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --compile-bytecode --python $(PYTHON)
	@touch $@

.PHONY: install
install: $(BIN)/python ## Create .venv with the operator and the dev tools (locked versions)

K8S_BINARIES := $(addprefix $(K8S_BIN)/,kube-apiserver kube-controller-manager kubectl etcd)

$(K8S_BINARIES) &: tests/k8s/go.mod tests/k8s/go.sum tests/k8s/tools.go tests/k8s/build.sh
	tests/k8s/build.sh "$(K8S_BIN)"

.PHONY: k8s-bin
k8s-bin: $(K8S_BINARIES) ## Build kube-apiserver, kube-controller-manager, kubectl and etcd into the cache (first time: long)

$(HELM): tests/tools/helm/go.mod tests/tools/helm/go.sum tests/tools/build.sh
	tests/tools/build.sh helm "$(@D)"
$(PROMTOOL): tests/tools/promtool/go.mod tests/tools/promtool/go.sum tests/tools/build.sh
	tests/tools/build.sh promtool "$(@D)"
$(ACTIONLINT): tests/tools/actionlint/go.mod tests/tools/actionlint/go.sum tests/tools/build.sh
	tests/tools/build.sh actionlint "$(@D)"

.PHONY: tools-bin
tools-bin: $(HELM) $(PROMTOOL) $(ACTIONLINT) ## Build helm, promtool and actionlint into the cache (first time: minutes)

.PHONY: lint
lint: install ## ruff, and the layout's import contracts (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/lint-imports --no-cache

.PHONY: typecheck
typecheck: install ## mypy (strict)
	$(BIN)/mypy

.PHONY: crds
crds: install ## Regenerate crds/ (and the chart's copy and settings schema) from the pydantic models
	$(BIN)/python -m paiflow_operator.crdgen --output crds/
	$(BIN)/python -m paiflow_operator.crdgen --output charts/paiflow-operator/crds/
	$(BIN)/python hack/chart_schema.py

.PHONY: test
test: install k8s-bin tools-bin ## Every test: lint, types, unit, integration and end-to-end against a real API server
	$(MAKE) lint typecheck
	@# The image first, where there is podman (else its tests skip, saying why): a broken image stops here.
	if command -v podman >/dev/null 2>&1; then tests/image/build.sh "$(CACHE)"; fi
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

# podman where there is one, else docker: `make image CONTAINER_ENGINE=docker` to choose.
CONTAINER_ENGINE ?= $(if $(shell command -v podman 2>/dev/null),podman,docker)

.PHONY: image
image: ## Build the container image IMAGE from the Dockerfile (podman, or docker)
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

.PHONY: image-push
image-push: ## Push IMAGE
	$(CONTAINER_ENGINE) push $(IMAGE)

# The names these targets had before podman.
.PHONY: docker-build docker-push
docker-build: image
docker-push: image-push

# The image the tests run (tests/e2e/test_image.py builds it the same way when it is not there yet): the
# Dockerfile as it is, from a stand-in base of Debian's packages, with wheels fetched beforehand, once per tree.
.PHONY: test-image
test-image: install ## Build the image for the image tests (needs podman and mmdebstrap; no registry)
	tests/image/build.sh "$(CACHE)"

.PHONY: deploy
deploy: ## Apply deploy/OVERLAY (base, overlays/rrsa, ...) with IMAGE to the current kubeconfig's cluster
	kubectl apply -f crds/
	hack/kustomize-with-image.sh "deploy/$(OVERLAY)" "$(IMAGE)" | kubectl apply -f -
