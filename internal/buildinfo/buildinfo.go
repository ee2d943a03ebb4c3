// Package buildinfo describes the running binary from what the Go toolchain
// recorded in it (runtime/debug.ReadBuildInfo): module version, VCS
// revision and whether the work tree had uncommitted changes, Go version.
// The binaries' --version flags print it.
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Version is the running binary's version line, e.g.
// "v1.2.0 (revision 2abcc11e5f3c, modified, go1.26.0)".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information in the binary)"
	}
	return format(bi)
}

// format is Version for given build information.
func format(bi *debug.BuildInfo) string {
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, modified, at string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			at = s.Value
		}
	}
	var parts []string
	if rev != "" {
		parts = append(parts, "revision "+rev[:min(len(rev), 12)])
		if at != "" {
			parts = append(parts, "committed "+at)
		}
		switch modified {
		case "true":
			parts = append(parts, "modified")
		case "false":
			parts = append(parts, "clean")
		}
	} else {
		parts = append(parts, "no VCS revision recorded")
	}
	parts = append(parts, bi.GoVersion)
	return fmt.Sprintf("%s (%s)", version, strings.Join(parts, ", "))
}
