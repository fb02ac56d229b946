#!/usr/bin/env bash
# Renders a kustomization of deploy/ with the operator image set to IMAGE, as `kustomize edit set image` would,
# without editing the tracked files or needing the kustomize binary (kubectl's built-in kustomize does it).
#
#   hack/kustomize-with-image.sh deploy/overlays/rrsa registry.example.com/paiflow-operator:0.1.0 | kubectl apply -f -
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 KUSTOMIZATION_DIR IMAGE" >&2
    exit 2
fi
dir=$(cd "$1" && pwd)
image=$2
kubectl=${KUBECTL:-kubectl}

# Split IMAGE into name and tag or digest; a registry port (host:5000/name) is not a tag.
if [[ $image == *@* ]]; then
    name=${image%@*} field="digest: ${image#*@}"
elif [[ ${image##*/} == *:* ]]; then
    name=${image%:*} field="newTag: ${image##*:}"
else
    name=$image field=""
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# kustomize takes a directory outside the kustomization's own as a resource only by a relative path.
dir=$(realpath --relative-to="$tmp" "$dir")
cat >"$tmp/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $dir
images:
  - name: ghcr.io/paiflow-operator/paiflow-operator
    newName: $name
    ${field}
YAML
"$kubectl" kustomize "$tmp"
