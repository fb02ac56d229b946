#!/usr/bin/env bash
# Builds one of the tools users run against our files (helm, promtool, actionlint) from the version pinned in
# tests/tools/TOOL/go.mod, stamped with that version.
#
#   tests/tools/build.sh TOOL BIN_DIR
#
# Like tests/k8s/build.sh: only the Go module proxy is reachable, the Go module and build caches live outside
# the repository (first build: minutes; later: a relink), and the binary is renamed into place only once
# complete, so an interrupted build never leaves a file make would take as up to date.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 helm|promtool|actionlint BIN_DIR" >&2
    exit 2
fi
tool=$1
bin_dir=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod_dir=$here/$tool
[[ -f $mod_dir/go.mod ]] || { echo "build.sh: unknown tool '$tool' (no $mod_dir/go.mod)" >&2; exit 2; }
command -v go >/dev/null 2>&1 || { echo "build.sh: 'go' is not on PATH (Go >= $(sed -n 's/^go //p' "$mod_dir/go.mod") needed)" >&2; exit 1; }

tags=
case $tool in
    helm)
        module=helm.sh/helm/v4
        pkg=helm.sh/helm/v4/cmd/helm
        # A plain build reports "v4.3" only; charts' kubeVersion/helm version checks want the full version.
        stamp_var=helm.sh/helm/v4/internal/version.version
        ;;
    promtool)
        module=github.com/prometheus/prometheus
        pkg=github.com/prometheus/prometheus/cmd/promtool
        stamp_var=github.com/prometheus/common/version.Version
        # Rule checks and unit tests need no service discovery: leaving Prometheus' SD plugins (AWS, Azure,
        # GCE, Kubernetes, ...) out drops 18% of the packages to compile.
        tags=remove_all_sd
        ;;
    actionlint)
        module=github.com/rhysd/actionlint
        pkg=github.com/rhysd/actionlint/cmd/actionlint
        stamp_var=github.com/rhysd/actionlint.version
        ;;
    *) echo "build.sh: unknown tool '$tool'" >&2; exit 2 ;;
esac

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
echo "building $tool into $bin_dir (first build: minutes; later ones: cached)" >&2
(
    cd "$mod_dir"
    version=$(go list -m -f '{{.Version}}' "$module")
    ldflags="-s -w -X $stamp_var=$version"
    go build -trimpath -buildvcs=false "-tags=$tags" "-ldflags=$ldflags" -o "$tmp/$tool" "$pkg"
)
mv -f "$tmp/$tool" "$bin_dir/$tool"
echo "built $tool in $(($(date +%s) - start))s: $bin_dir/$tool" >&2
