package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Argo CD's health status codes (gitops-engine's health.HealthStatusCode).
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// runHealthLua runs a health check the way Argo CD does (util/lua: VM.runLua and ExecuteHealthLua): a fresh
// gopher-lua state, the object as the global `obj`, a one-second deadline, and a table returned. A script set in
// argocd-cm runs without Lua's standard libraries (openLibs false: only package, base and table, plus Argo CD's
// safe subset of os, which this check does not use); a built-in one runs with them.
func runHealthLua(script string, obj *unstructured.Unstructured, openLibs bool) (HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return HealthStatus{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return HealthStatus{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return HealthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	var result HealthStatus
	var problem error
	table.ForEach(func(key, value lua.LValue) {
		text, isString := value.(lua.LString)
		switch {
		case !isString:
			problem = fmt.Errorf("health field %s is a %s, not a string", key, value.Type())
		case key.String() == "status":
			result.Status = string(text)
		case key.String() == "message":
			result.Message = string(text)
		default:
			problem = fmt.Errorf("unexpected health field %q", key.String())
		}
	})
	if problem != nil {
		return HealthStatus{}, problem
	}
	if !validHealth[result.Status] {
		// Argo CD would show "Unknown: Lua returned an invalid health status".
		return HealthStatus{}, fmt.Errorf("invalid health status %q", result.Status)
	}
	return result, nil
}

// decodeValue is Argo CD's util/lua decodeValue: JSON values to Lua values, integers included.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func healthScript(t *testing.T) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(ArgoDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(script)
}

// TestArgoCDHealth runs health.lua over health_test.yaml's testdata (as Argo CD's own TestLuaHealthScript does)
// and over the live captures, both as an argocd-cm customization (no standard libraries) and built in.
func TestArgoCDHealth(t *testing.T) {
	script := healthScript(t)
	t.Run("committed", func(t *testing.T) { checkHealth(t, script, committedHealthCases(t)) })
	if live := liveCases(t); live != nil {
		t.Run("live", func(t *testing.T) {
			checkHealth(t, script, live)
			requireCoverage(t, live, func(c Case) string {
				if c.Health == nil {
					return ""
				}
				return c.Health.Status
			}, "Progressing", "Healthy", "Degraded", "Suspended")
		})
	}
}

func checkHealth(t *testing.T, script string, cases []Case) {
	t.Helper()
	for _, c := range cases {
		if c.Health == nil {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			obj := loadObject(t, c.Path)
			for _, openLibs := range []bool{false, true} {
				got, err := runHealthLua(script, obj, openLibs)
				if err != nil {
					t.Fatalf("%s (openLibs=%v): %v", describe(c), openLibs, err)
				}
				if got.Status != c.Health.Status || !messageMatches(c.Health.Message, got.Message) {
					t.Errorf("%s (openLibs=%v):\n got  %s %q\n want %s %q",
						describe(c), openLibs, got.Status, got.Message, c.Health.Status, c.Health.Message)
				}
			}
		})
	}
}

// TestArgoCDHealthEdgeCases covers what no capture shows: objects Argo CD may see half-written.
func TestArgoCDHealthEdgeCases(t *testing.T) {
	script := healthScript(t)
	base := func() map[string]any {
		return map[string]any{
			"apiVersion": "paiflow-operator.dev/v1alpha1",
			"kind":       "PaiPipelineRun",
			"metadata":   map[string]any{"name": "x", "generation": int64(1)},
			"spec":       map[string]any{"pipelineRunId": "flow-x"},
		}
	}
	for name, tc := range map[string]struct {
		status map[string]any
		want   string
	}{
		"empty status":              {map[string]any{}, "Progressing"},
		"status without conditions": {map[string]any{"runStatus": "Running", "observedGeneration": int64(1)}, "Progressing"},
		"conditions without generation": {map[string]any{"conditions": []any{
			map[string]any{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "PAI run is Succeeded"},
		}}, "Healthy"},
		"condition without message": {map[string]any{"observedGeneration": int64(1), "conditions": []any{
			map[string]any{"type": "Stalled", "status": "True", "reason": "RunNotFound"},
		}}, "Degraded"},
	} {
		t.Run(name, func(t *testing.T) {
			obj := base()
			obj["status"] = tc.status
			got, err := runHealthLua(script, &unstructured.Unstructured{Object: obj}, false)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.want || got.Message == "" {
				t.Errorf("got %s %q, want %s with a message", got.Status, got.Message, tc.want)
			}
		})
	}
}
