# syntax=docker/dockerfile:1
# Multi-stage: resolve and install the locked dependencies in a builder, ship only the virtualenv.
#
# Everything fetched is pinned: the base image by digest (the same image in both stages, so the venv's
# interpreter links match), uv and the wheel build backend by version and hash (hack/*-requirements.txt),
# the operator's dependencies by uv.lock's hashes. The digest below is the multi-arch index of Docker Hub's
# python:3.11-slim-bookworm (linux/amd64 and linux/arm64); the release workflow checks that it resolves for
# both platforms before it builds, and Dependabot (.github/dependabot.yml) proposes updates. It is spelt out on
# a FROM line of its own because Dependabot reads FROM lines, not ARGs.
#
# Both stages use the image BASE names (the same one in both: a test checks), by default that one. The image
# tests build from a stand-in made of Debian's packages (tests/image/base.sh; no registry is reachable there):
#   podman build --build-arg BASE=localhost/paiflow-operator-base:KEY .
ARG BASE=official-base
FROM python:3.11-slim-bookworm@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS official-base

FROM ${BASE} AS build
WORKDIR /src
COPY hack/uv-requirements.txt hack/build-requirements.txt /tmp/
# uv into a throw-away venv; from here on uv does the work, so no pip ever reaches /opt/venv.
RUN python -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r /tmp/uv-requirements.txt
# Bytecode compiled at build: the running image cannot write it (read-only root, PYTHONDONTWRITEBYTECODE), and
# without it every start compiled the operator and its libraries again (1.65 s of CPU to import, 0.57 s with it).
ENV UV=/opt/uv/bin/uv UV_NO_CACHE=1 UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1
COPY pyproject.toml uv.lock README.md ./
# uv.lock pins every version and hash; --no-emit-project leaves the operator itself to the wheel below. An sdist
# among them is built with the backend pinned (with hashes) in build-requirements.txt, never an unpinned one.
RUN $UV export --frozen --no-dev --no-emit-project --format requirements-txt -o /tmp/requirements.txt \
 && $UV venv --python /usr/local/bin/python3 /opt/venv \
 && $UV pip install --python /opt/venv/bin/python --require-hashes --no-deps -r /tmp/requirements.txt \
      --build-constraint /tmp/build-requirements.txt \
 && $UV venv --python /usr/local/bin/python3 /opt/build \
 && $UV pip install --python /opt/build/bin/python --require-hashes -r /tmp/build-requirements.txt
COPY operator ./operator
# The wheel holds paiflow_operator only (the PAI emulator is a test tool: see pyproject's hatch config).
# hatchling builds an empty wheel without complaint if the sources are missing: the build fails unless the
# installed entry point runs.
RUN /opt/build/bin/python -m hatchling build --target wheel --directory /tmp/dist \
 && $UV pip install --python /opt/venv/bin/python --no-deps /tmp/dist/*.whl \
 && /opt/venv/bin/paiflow-operator --version

FROM ${BASE}
# The base image's own pip (and setuptools/wheel where present) is dead weight and an installer an
# attacker could use: the runtime never installs anything.
RUN rm -rf /usr/local/bin/pip* /usr/local/lib/python3.*/site-packages/pip \
      /usr/local/lib/python3.*/site-packages/pip-*.dist-info \
      /usr/local/lib/python3.*/site-packages/setuptools* /usr/local/lib/python3.*/site-packages/_distutils_hack \
      /usr/local/lib/python3.*/site-packages/distutils-precedence.pth \
      /usr/local/lib/python3.*/site-packages/wheel /usr/local/lib/python3.*/site-packages/wheel-*.dist-info \
      /usr/local/lib/python3.*/ensurepip
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root; the Deployment also sets readOnlyRootFilesystem and drops every capability.
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["paiflow-operator"]
