#!/usr/bin/env bash
# Builds the image from the shipped Dockerfile, as it is, for the image tests (tests/e2e/test_image.py), once
# per set of inputs.
#
#   tests/image/build.sh CACHE_DIR     # prints the image name (localhost/paiflow-operator:test-KEY)
#
# The test machines reach no container registry and reach PyPI only through a TLS-intercepting proxy whose CA
# is in the host's bundle. So:
# - the base is the stand-in made by base.sh (BASE build argument), cached in CACHE_DIR;
# - the wheels the Dockerfile installs (uv, the build backend, uv.lock's runtime dependencies) are fetched
#   beforehand by pip in a container of that base, with the host's CA bundle, every one checked against the
#   pinned hashes, into CACHE_DIR/image-wheels-KEY; the build's RUN steps see them at /wheels, with pip and
#   uv configured to install from there only (pip.conf, uv.toml beside this script), and have no network at
#   all: a step that reached for an index would fail. --require-hashes checks each wheel again;
# - KEY hashes every input (the build context, the base, the wheels): an unchanged tree is not rebuilt.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 CACHE_DIR" >&2
    exit 2
fi
cache=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
uv=${PAIFLOW_UV:-uv}
command -v "$uv" >/dev/null 2>&1 || { echo "build.sh: no uv (run through make, which exports PAIFLOW_UV)" >&2; exit 1; }
ca_bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}

# One build at a time on a machine (worktrees share the cache and podman's storage).
mkdir -p "$cache"
exec 9>"$cache/image-build.lock"
flock 9

base=$("$here/base.sh" "$cache")
base_id=$(podman image inspect --format '{{.Id}}' "$base")

# ---- the wheels -------------------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/requirements"
cp "$repo/hack/uv-requirements.txt" "$repo/hack/build-requirements.txt" "$work/requirements/"
# The runtime dependencies exactly as the Dockerfile exports them from uv.lock.
"$uv" export --quiet --project "$repo" --frozen --no-dev --no-emit-project --no-header --format requirements-txt \
    -o "$work/requirements/runtime-requirements.txt" >/dev/null
wheels_key=$( (echo "$base_id"; cat "$work"/requirements/*) | sha256sum | cut -c1-12)
wheels=$cache/image-wheels-$wheels_key
if [[ ! -f $wheels/.complete ]]; then
    rm -rf "$wheels"
    mkdir -p "$wheels"
    start=$(date +%s)
    echo "build.sh: fetching the image's wheels into $wheels" >&2
    # Separate pip runs: the files may pin the same package at different versions (the build backend's
    # `packaging` and the runtime's are installed into different venvs).
    podman run --rm --network host --user 0 \
        -v "$ca_bundle:/tmp/host-ca.crt:ro" -v "$work/requirements:/requirements:ro" -v "$wheels:/wheels" \
        "$base" sh -euc '
            python3 -m venv /tmp/pip
            for file in /requirements/*.txt; do
                /tmp/pip/bin/pip download --quiet --disable-pip-version-check --cert /tmp/host-ca.crt \
                    --no-deps --require-hashes --prefer-binary --dest /wheels -r "$file"
            done
            # A dependency published as source only (alibabacloud-tea) is built by uv in the image build with
            # the build backend it declares, which the Dockerfile leaves unpinned (fetched from PyPI there).
            /tmp/pip/bin/pip download --quiet --disable-pip-version-check --cert /tmp/host-ca.crt \
                --only-binary=:all: --dest /wheels setuptools wheel'
    touch "$wheels/.complete"
    echo "build.sh: $(find "$wheels" -name '*.whl' -o -name '*.tar.gz' | wc -l) files fetched in $(($(date +%s) - start)) s" >&2
fi

# ---- the image ----------------------------------------------------------------------------------------------
# Everything the build sees: the context .dockerignore lets through, the Dockerfile, the base and the wheels.
context_files=$(cd "$repo" && find Dockerfile .dockerignore hack/uv-requirements.txt hack/build-requirements.txt \
    pyproject.toml uv.lock README.md operator -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort)
key=$( (cd "$repo" && echo "$base_id $wheels_key" && sha256sum $context_files) | sha256sum | cut -c1-12)
image=localhost/paiflow-operator:test-$key

if ! podman image exists "$image"; then
    start=$(date +%s)
    echo "build.sh: building $image from $base" >&2
    if ! podman build --network none --pull=never --build-arg "BASE=$base" \
        -v "$wheels:/wheels:ro" -v "$here/pip.conf:/etc/pip.conf:ro" -v "$here/uv.toml:/etc/uv/uv.toml:ro" \
        --tag "$image" "$repo" >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        echo "build.sh: the image build failed (above: the end of podman build's output)" >&2
        exit 1
    fi
    echo "build.sh: built $image in $(($(date +%s) - start)) s," \
        "$(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MiB", $1 / 1048576}')" >&2
    # Test images of earlier trees (a day old or more) go, but none a container uses; the intermediate layers
    # they alone used go with them.
    podman image ls --quiet --filter 'reference=localhost/paiflow-operator:test-*' --filter until=24h \
        | xargs --no-run-if-empty podman image rm >/dev/null 2>&1 || true
fi
echo "$image"
