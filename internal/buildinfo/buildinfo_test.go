package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "2abcc11e5f3c0123456789"}, {Key: "vcs.time", Value: "2026-12-03T12:00:00Z"}, {Key: "vcs.modified", Value: "true"}}},
			"v1.2.0 (revision 2abcc11e5f3c, committed 2026-12-03T12:00:00Z, modified, go1.26.0)"},
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}},
			"(devel) (revision abc, clean, go1.26.0)"},
		{debug.BuildInfo{GoVersion: "go1.26.0"}, "(devel) (no VCS revision recorded, go1.26.0)"},
	} {
		if got := format(&c.bi); got != c.want {
			t.Errorf("format(%+v) = %q, want %q", c.bi, got, c.want)
		}
	}
	if v := Version(); !strings.Contains(v, runtime.Version()) {
		t.Errorf("Version() = %q, want the Go version %s in it", v, runtime.Version())
	}
}
