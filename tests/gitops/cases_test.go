package gitops

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const (
	// EnvCaptures names a directory of objects captured from the real control plane, with expectations.json.
	EnvCaptures = "PAIFLOW_GITOPS_CAPTURES"
	// ArgoDir is the health check, laid out as in Argo CD's own resource_customizations folder.
	ArgoDir = "../../deploy/argocd/resource_customizations/paiflow-operator.dev/PaiPipelineRun"
	// KstatusTestdata says what kstatus makes of each of ArgoDir's testdata objects.
	KstatusTestdata = "testdata/kstatus.yaml"
	// RequestIDPlaceholder in an expected message stands for any PAI RequestId (they differ on every call).
	RequestIDPlaceholder = "{requestId}"
)

// HealthStatus is Argo CD's health.HealthStatus as a Lua health check returns it.
type HealthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Case is one object and what the tools must make of it.
type Case struct {
	Name    string        // subtest name
	Path    string        // the object, YAML or JSON
	Kstatus string        // expected status.Compute(...).Status; empty: not checked
	Health  *HealthStatus // expected Argo CD health; nil: not checked
}

// healthTest is Argo CD's health_test.yaml.
type healthTest struct {
	Tests []struct {
		HealthStatus HealthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

// kstatusTest is testdata/kstatus.yaml, shaped like health_test.yaml.
type kstatusTest struct {
	Tests []struct {
		Status    string `json:"status"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// liveExpectations is expectations.json in the directory named by PAIFLOW_GITOPS_CAPTURES.
type liveExpectations struct {
	Cases []struct {
		Name    string        `json:"name"`
		File    string        `json:"file"`
		Kstatus string        `json:"kstatus"`
		Health  *HealthStatus `json:"health"`
	} `json:"cases"`
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
}

// committedHealthCases are health_test.yaml's tests.
func committedHealthCases(t *testing.T) []Case {
	t.Helper()
	var spec healthTest
	readYAML(t, filepath.Join(ArgoDir, "health_test.yaml"), &spec)
	if len(spec.Tests) == 0 {
		t.Fatalf("%s/health_test.yaml has no tests", ArgoDir)
	}
	cases := make([]Case, 0, len(spec.Tests))
	for _, test := range spec.Tests {
		health := test.HealthStatus
		cases = append(cases, Case{Name: test.InputPath, Path: filepath.Join(ArgoDir, test.InputPath), Health: &health})
	}
	return cases
}

// committedKstatusCases are testdata/kstatus.yaml's tests, on Argo CD's testdata objects.
func committedKstatusCases(t *testing.T) []Case {
	t.Helper()
	var spec kstatusTest
	readYAML(t, KstatusTestdata, &spec)
	if len(spec.Tests) == 0 {
		t.Fatalf("%s has no tests", KstatusTestdata)
	}
	cases := make([]Case, 0, len(spec.Tests))
	for _, test := range spec.Tests {
		cases = append(cases, Case{Name: test.InputPath, Path: filepath.Join(ArgoDir, test.InputPath), Kstatus: test.Status})
	}
	return cases
}

// liveCases are the captures named by PAIFLOW_GITOPS_CAPTURES, or nil when it is unset.
func liveCases(t *testing.T) []Case {
	t.Helper()
	dir := os.Getenv(EnvCaptures)
	if dir == "" {
		t.Logf("%s is unset: checking the committed testdata only (tests/e2e/test_gitops.py sets it)", EnvCaptures)
		return nil
	}
	data, err := os.ReadFile(filepath.Join(dir, "expectations.json"))
	if err != nil {
		t.Fatalf("%s=%s: %v", EnvCaptures, dir, err)
	}
	var spec liveExpectations
	decoder := json.NewDecoder(strings.NewReader(string(data)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&spec); err != nil {
		t.Fatalf("parsing %s/expectations.json: %v", dir, err)
	}
	if len(spec.Cases) == 0 {
		t.Fatalf("%s/expectations.json has no cases", dir)
	}
	cases := make([]Case, 0, len(spec.Cases))
	for _, c := range spec.Cases {
		cases = append(cases, Case{Name: c.Name, Path: filepath.Join(dir, c.File), Kstatus: c.Kstatus, Health: c.Health})
	}
	return cases
}

// loadObject reads a YAML or JSON object as the API machinery does (integers stay int64, as kstatus needs).
func loadObject(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	jsonData, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(jsonData); err != nil {
		t.Fatalf("decoding %s: %v", path, err)
	}
	if obj.GetKind() != "PaiPipelineRun" || obj.GetAPIVersion() != "paiflow-operator.dev/v1alpha1" {
		t.Fatalf("%s holds a %s %s, not a PaiPipelineRun", path, obj.GetAPIVersion(), obj.GetKind())
	}
	return obj
}

var requestIDPattern = regexp.MustCompile(`[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}`)

// messageMatches compares a message exactly, except that RequestIDPlaceholder matches any request id.
func messageMatches(want, got string) bool {
	if !strings.Contains(want, RequestIDPlaceholder) {
		return want == got
	}
	parts := strings.Split(want, RequestIDPlaceholder)
	for i, part := range parts {
		parts[i] = regexp.QuoteMeta(part)
	}
	pattern := "^" + strings.Join(parts, requestIDPattern.String()) + "$"
	return regexp.MustCompile(pattern).MatchString(got)
}

func TestMessageMatches(t *testing.T) {
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"a b", "a b", true},
		{"a b", "a c", false},
		{"x requestId={requestId}", "x requestId=0D013665-8CD0-432C-876E-511E2387DFDB", true},
		{"x requestId={requestId}", "x requestId=", false},
		{"x requestId={requestId}", "y requestId=0D013665-8CD0-432C-876E-511E2387DFDB", false},
		{"(x) requestId={requestId}.", "(x) requestId=0D013665-8CD0-432C-876E-511E2387DFDB.", true},
	} {
		if got := messageMatches(tc.want, tc.got); got != tc.ok {
			t.Errorf("messageMatches(%q, %q) = %v", tc.want, tc.got, got)
		}
	}
}

func describe(c Case) string {
	return fmt.Sprintf("%s (%s)", c.Name, c.Path)
}
