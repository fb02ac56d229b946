#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the versions pinned in go.mod beside this script.
#
#   tests/k8s/build.sh BIN_DIR
#
# Only the module proxy is reachable (no release tarballs), so the control plane is compiled from source.
# The normal Go module and build caches ($(go env GOMODCACHE), $(go env GOCACHE)) are used, both outside
# the repository: the first build takes a long time, a rebuild with warm caches only relinks.
# The binaries are built into a temporary directory on the same filesystem and then renamed into
# BIN_DIR, so an interrupted build never leaves a half-written binary that make would take as up to date.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BIN_DIR" >&2
    exit 2
fi
bin_dir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

command -v go >/dev/null 2>&1 || { echo "build.sh: 'go' is not on PATH (Go >= $(sed -n 's/^go //p' "$here/go.mod") needed)" >&2; exit 1; }

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
echo "building kube-apiserver, kube-controller-manager, kubectl, etcd into $bin_dir (first build: long; later ones: cached)" >&2
# Packages are listed explicitly: `go build -o DIR` names each binary after the last path element of its
# package, which for etcd is "v3" (go.etcd.io/etcd/server/v3), so etcd is built on its own with -o FILE.
# CGO is left at Go's default (on where a C compiler exists): these binaries only run on the machine
# that built them, and changing it would invalidate every cached package compiled so far.
(
    cd "$here"
    # Stamp the release version the way Kubernetes' own build (hack/lib/version.sh) does; a plain
    # `go build` reports v0.0.0-master, which makes `kubectl version` and skew checks misleading.
    k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
    IFS=. read -r major minor _ <<<"${k8s_version#v}"
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean"
    done
    flags=(-trimpath -buildvcs=false "-ldflags=$ldflags")
    # kube-controller-manager: garbage collection (ownerReferences) and namespace deletion are real.
    go build "${flags[@]}" -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
        k8s.io/kubernetes/cmd/kube-controller-manager
    go build "${flags[@]}" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
)
for name in kube-apiserver kube-controller-manager kubectl etcd; do
    mv -f "$tmp/$name" "$bin_dir/$name"
done
elapsed=$(($(date +%s) - start))

echo "built in ${elapsed}s:" >&2
ls -la "$bin_dir/kube-apiserver" "$bin_dir/kube-controller-manager" "$bin_dir/kubectl" "$bin_dir/etcd" >&2
"$bin_dir/kube-apiserver" --version >&2
"$bin_dir/etcd" --version >&2
