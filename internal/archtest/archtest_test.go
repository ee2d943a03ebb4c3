package archtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCheckFindsPlantedViolations runs the checker on a fake module whose
// violations are known, so a checker that silently stopped seeing them (a
// bad walk, a missed import form) fails here rather than passing on the real
// repository. It also holds what must not be reported: test files of a pure
// core, time used for types, a shadowed package name, shard's own Badger
// imports, and the directories the go tool ignores.
func TestCheckFindsPlantedViolations(t *testing.T) {
	got, err := Check(filepath.Join("testdata", "fakemod"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"consistency/clock.go:6: pure-core: uses time.Now as a function value: consistency is a pure core and must not read the clock; take a clock (func() time.Time) from the caller",
		"consistency/clock.go:8: pure-core: calls time.Since: consistency is a pure core and must not read the clock; take a clock (func() time.Time) from the caller",
		"consistency/dot.go:3: pure-core: dot-imports time: clock reads could not be checked; import it by name",
		"consistency/shadow.go:4: pure-core: imports os/exec: consistency is a pure core (no network, OS or process access); let the caller do the I/O",
		"consistency/shadow.go:7: pure-core: imports google.golang.org/grpc/codes: consistency is a pure core (no network, OS or process access); let the caller do the I/O",
		"replication/cp/log.go:8: badger-only-in-shard: imports github.com/dgraph-io/badger/v4: only package shard may use Badger; go through shard's API",
		"replication/cp/log_test.go:3: badger-only-in-shard: imports github.com/dgraph-io/badger/v4/options: only package shard may use Badger; go through shard's API",
		"ring/ring.go:5: pure-core: imports os: ring is a pure core (no network, OS or process access); let the caller do the I/O",
		"ring/ring.go:16: pure-core: calls time.Now: ring is a pure core and must not read the clock; take a clock (func() time.Time) from the caller",
	}
	if s := strs(got); !slices.Equal(s, want) {
		t.Errorf("violations in the fixture:\n\t%s\nwant:\n\t%s", strings.Join(s, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// known are violations of the repository that are reported to their owners
// and not yet fixed. Each entry must still occur (the test fails once it is
// fixed, so the entry gets deleted); lines are not compared, so unrelated
// edits above it do not break the test.
var known = []Violation{}

func TestRepositoryFollowsTheRules(t *testing.T) {
	root := filepath.Join("..", "..")
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module github.com/capkv/capkv\n") {
		t.Fatalf("%s is not the capkv module root: %v", root, err)
	}
	got, err := Check(root)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, len(known))
	for _, v := range got {
		i := slices.IndexFunc(known, func(k Violation) bool { return k.File == v.File && k.Rule == v.Rule && k.Msg == v.Msg })
		if i < 0 {
			t.Errorf("%s", v)
			continue
		}
		seen[i] = true
	}
	for i, k := range known {
		if !seen[i] {
			t.Errorf("known violation is gone, delete it from known: %s: %s: %s", k.File, k.Rule, k.Msg)
		}
	}
}

func strs(vs []Violation) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}
