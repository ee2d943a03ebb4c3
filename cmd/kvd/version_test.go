package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func TestVersionFlag(t *testing.T) {
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "kvd ") || !strings.Contains(got, runtime.Version()) {
		t.Errorf("kvd --version printed %q; want the build info with %s", got, runtime.Version())
	}
}
