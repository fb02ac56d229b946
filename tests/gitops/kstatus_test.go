package gitops

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// TestKstatus computes each object's status with kstatus itself, as Flux's health checks and `kstatus`-based
// tools do: InProgress while running (and until a spec change is observed), Current when succeeded, Failed when
// the run ended without success or the sync is stalled.
func TestKstatus(t *testing.T) {
	t.Run("committed", func(t *testing.T) { checkKstatus(t, committedKstatusCases(t)) })
	if live := liveCases(t); live != nil {
		t.Run("live", func(t *testing.T) {
			checkKstatus(t, live)
			requireCoverage(t, live, func(c Case) string { return c.Kstatus },
				string(status.InProgressStatus), string(status.CurrentStatus), string(status.FailedStatus))
		})
	}
}

func checkKstatus(t *testing.T, cases []Case) {
	t.Helper()
	for _, c := range cases {
		if c.Kstatus == "" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			obj := loadObject(t, c.Path)
			result, err := status.Compute(obj)
			if err != nil {
				t.Fatalf("%s: status.Compute: %v", describe(c), err)
			}
			if string(result.Status) != c.Kstatus {
				t.Errorf("%s: kstatus is %s (%q), want %s", describe(c), result.Status, result.Message, c.Kstatus)
			}
		})
	}
}

// requireCoverage fails unless the cases expect every one of the given values: a capture run that lost a
// state must not pass quietly.
func requireCoverage(t *testing.T, cases []Case, value func(Case) string, want ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		seen[value(c)] = true
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no case expects %s", w)
		}
	}
}

// TestCommittedTestdataIsAllChecked: every testdata object has an Argo CD and a kstatus expectation, and every
// expectation has its object.
func TestCommittedTestdataIsAllChecked(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(ArgoDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no %s/testdata/*.yaml", ArgoDir)
	}
	for name, cases := range map[string][]Case{
		"health_test.yaml": committedHealthCases(t),
		KstatusTestdata:    committedKstatusCases(t),
	} {
		listed := map[string]bool{}
		for _, c := range cases {
			if _, err := os.Stat(c.Path); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			listed[filepath.Clean(c.Path)] = true
		}
		var missing []string
		for _, f := range files {
			if !listed[filepath.Clean(f)] {
				missing = append(missing, filepath.Base(f))
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s has no test for %v", name, missing)
		}
	}
}
