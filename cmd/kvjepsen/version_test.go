package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func TestVersionFlag(t *testing.T) {
	cmd := rootCmd(new(int))
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "kvjepsen ") || !strings.Contains(got, runtime.Version()) {
		t.Errorf("kvjepsen --version printed %q; want the build info with %s", got, runtime.Version())
	}
}
