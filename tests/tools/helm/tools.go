//go:build tools

// Package tools pins helm, the tool users install the chart with, so `go mod tidy` keeps its dependencies.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
