//go:build tools

// Package tools pins actionlint, which lints the GitHub Actions workflows, so `go mod tidy` keeps its dependencies.
package tools

import (
	_ "github.com/rhysd/actionlint/cmd/actionlint"
)
