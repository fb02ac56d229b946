// Package gitops holds the tests that prove a PaiPipelineRun's health reads correctly in GitOps tools, with
// the tools' own code: kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, what Flux and kubectl-based tooling
// use) and Argo CD's Lua health check, run in gopher-lua as Argo CD runs it.
//
// `go test ./...` alone checks the committed testdata (the Argo CD testdata/*.yaml, health_test.yaml and
// testdata/kstatus.yaml). tests/e2e/test_gitops.py runs the same tests on objects it has just captured from
// the real control plane, named by PAIFLOW_GITOPS_CAPTURES.
package gitops
