#!/usr/bin/env bash
# Makes the stand-in for the Dockerfile's base image (python:3.11-slim-bookworm) from Debian's own packages, for
# the image tests: no container registry is reachable from the test machines, Debian's package mirror is.
#
#   tests/image/base.sh CACHE_DIR     # prints the image name (localhost/paiflow-operator-base:KEY)
#
# The root filesystem (mmdebstrap, a minimal bookworm with python3 and python3-venv: Python 3.11 as in the
# official image) is kept in CACHE_DIR/image-base-KEY/ (KEY: this script's hash), outside the repository like
# the Go tools, and imported into podman's storage when that lacks it. It is laid out as the official image is
# where the Dockerfile relies on it: python3 and python at /usr/local/bin, and the wheels venv's pip comes from
# (Debian: /usr/share/python-wheels) under /usr/local/lib/python3.11/ensurepip, which the runtime stage removes.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 CACHE_DIR" >&2
    exit 2
fi
cache=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
image=localhost/paiflow-operator-base:$key
dir=$cache/image-base-$key

if [[ ! -f $dir/rootfs.tar ]]; then
    command -v mmdebstrap >/dev/null 2>&1 || { echo "base.sh: no mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
    mkdir -p "$dir"
    tmp=$(mktemp "$dir/.rootfs.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    start=$(date +%s)
    echo "base.sh: building the stand-in base image's root filesystem into $dir (once; about a minute)" >&2
    # Documentation, manual pages and translations are left out, as Debian's slim images do.
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv --format=tar \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='test -x "$1/usr/bin/python3.11"' \
        --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python3"' \
        --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python"' \
        --customize-hook='mkdir -p "$1/usr/local/lib/python3.11"' \
        --customize-hook='mv "$1/usr/share/python-wheels" "$1/usr/local/lib/python3.11/ensurepip"' \
        --customize-hook='ln -s /usr/local/lib/python3.11/ensurepip "$1/usr/share/python-wheels"' \
        bookworm "$tmp" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    mv "$tmp" "$dir/rootfs.tar"
    trap - EXIT
    echo "base.sh: root filesystem built in $(($(date +%s) - start)) s ($(du -m "$dir/rootfs.tar" | cut -f1) MiB)" >&2
fi

if ! podman image exists "$image"; then
    # The official image's environment, as far as the Dockerfile uses it.
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$dir/rootfs.tar" "$image" >/dev/null
fi
echo "$image"
