#!/usr/bin/env bash
# Installs uv (version and hashes from hack/uv-requirements.txt) into a private venv, for `make` on a machine
# that has no uv on PATH. The system Python is never modified: on Debian 12 / Ubuntu 24.04 it is "externally
# managed" (PEP 668) and refuses `pip install` outside a venv, which is why this uses a venv of its own.
#
#   hack/bootstrap-uv.sh PYTHON VENV_DIR     # then VENV_DIR/bin/uv
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 PYTHON VENV_DIR" >&2
    exit 2
fi
python=$1
venv=$2
requirements=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/uv-requirements.txt

if ! command -v "$python" >/dev/null 2>&1; then
    echo "bootstrap-uv: no Python at '$python' (set PYTHON=/path/to/python3, >= 3.11)" >&2
    exit 1
fi
# Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package, python3-venv, which a stock
# system lacks (and pip with it). Then uv's wheel is fetched and unpacked with the standard library alone,
# checked against the same pinned hashes (hack/fetch_uv.py).
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "bootstrap-uv: $python has no venv/ensurepip (python3-venv); fetching uv's wheel from PyPI instead" >&2
    rm -rf "$venv.tmp"
    if ! "$python" "$(dirname "$requirements")/fetch_uv.py" "$requirements" "$venv.tmp"; then
        cat >&2 <<MSG
bootstrap-uv: could not get uv. Either install Python's venv module: sudo apt-get install python3-venv
(Debian/Ubuntu), or put a uv binary on PATH (https://docs.astral.sh/uv/getting-started/installation/),
and run make again. Nothing was installed.
MSG
        rm -rf "$venv.tmp"
        exit 1
    fi
    rm -rf "$venv"
    mv "$venv.tmp" "$venv"
    "$venv/bin/uv" --version
    exit 0
fi

rm -rf "$venv.tmp"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv.tmp"
"$venv.tmp/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir --require-hashes \
    -r "$requirements"
# Renamed into place only when complete: an interrupted bootstrap is redone, never half-used.
rm -rf "$venv"
mv "$venv.tmp" "$venv"
# The venv's scripts name the venv's path in their shebang; uv itself is a binary and does not care.
"$venv/bin/uv" --version
