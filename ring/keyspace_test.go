package ring

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

func TestWithDefaults(t *testing.T) {
	got := KeyspaceConfig{Name: "sessions", Mode: consistency.AP}.WithDefaults()
	want := KeyspaceConfig{Name: "sessions", Mode: consistency.AP, Replicas: 3, Partitions: 8,
		Template: "sessions/...", DefaultLevel: consistency.Quorum, Resolve: ResolveSiblings}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ap defaults = %+v, want %+v", got, want)
	}
	got = KeyspaceConfig{Name: "accounts", Mode: consistency.CP}.WithDefaults()
	want = KeyspaceConfig{Name: "accounts", Mode: consistency.CP, Replicas: 3, Partitions: 8,
		Template: "accounts/...", DefaultLevel: consistency.Linearizable}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cp defaults = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	// With ranges, the partition count follows the highest range partition.
	rs := []Range{{0, 9, 0}, {10, 19, 4}}
	got = KeyspaceConfig{Name: "ids", Mode: consistency.CP, Template: "ids/{id}", Ranges: rs}.WithDefaults()
	if got.Partitions != 5 {
		t.Errorf("partitions with ranges = %d, want 5", got.Partitions)
	}
	got.Ranges[0].Hi = 99
	if rs[0].Hi != 9 {
		t.Error("WithDefaults shares the Ranges slice with its input")
	}
}

func TestValidateReportsEveryField(t *testing.T) {
	k := KeyspaceConfig{
		Name:         "Bad Name",
		Mode:         "ca",
		Replicas:     0,
		Partitions:   70000,
		Template:     "other/{x}/{x}",
		DefaultLevel: consistency.Quorum,
		Ranges:       []Range{{10, 5, 0}, {0, 100, 1}, {50, 60, 99999}},
		Resolve:      "newest",
		MaxSiblings:  -1,
	}
	err := k.Validate()
	if !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("Validate() = %v, want ErrInvalidArgument", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`name "Bad Name"`,
		`mode "ca"`,
		"replicas = 0",
		"partitions = 70000",
		`attribute "x" already used`,
		"lo 10 > hi 5",
		"partition 99999 out of [0, 70000)",
		"ranges 0-100:1 and 50-60:99999 overlap",
		`resolve "newest"`,
		"max_siblings = -1",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Validate() error lacks %q:\n%s", want, msg)
		}
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 10 {
		t.Errorf("Validate() joined %d errors, want 10:\n%s", n, msg)
	}

	tests := []struct {
		k    KeyspaceConfig
		want string
	}{
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Template: "b/..."}, `template "b/..." starts with "b", want the keyspace name "a"`},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, DefaultLevel: consistency.One}, `default level "one" is not offered by cp`},
		{KeyspaceConfig{Name: "a", Mode: consistency.AP, DefaultLevel: consistency.Linearizable}, `default level "linearizable" is not offered by ap`},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Resolve: ResolveLWW}, `resolve "lww" is set but cp keyspaces`},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Ranges: []Range{{0, 1, 0}}}, "ranges need a partition attribute"},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Partitions: -1}, "partitions = -1"},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Replicas: -2}, "replicas = -2"},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Template: "a/{id}", Ranges: []Range{{0, 1, -1}}}, "partition -1 out of"},
		{KeyspaceConfig{Name: "a", Mode: consistency.CP, Template: "a/{id}", Ranges: []Range{{0, 10, 0}, {10, 20, 1}}}, "overlap"},
	}
	for _, tc := range tests {
		err := tc.k.WithDefaults().Validate()
		if err == nil || !errors.Is(err, kverrors.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want error containing %q", tc.k, err, tc.want)
		}
	}

	good := []KeyspaceConfig{
		{Name: "a", Mode: consistency.AP, Resolve: ResolveLWW, DefaultLevel: consistency.All},
		{Name: "a", Mode: consistency.CP, DefaultLevel: consistency.Stale, Replicas: 5, Partitions: MaxPartitions},
		{Name: "a", Mode: consistency.CP, Template: "a/{id}/...", Ranges: []Range{{10, 20, 1}, {0, 9, 0}, {21, 21, 1}}},
	}
	for _, k := range good {
		if err := k.WithDefaults().Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", k, err)
		}
	}
}

func TestParseRanges(t *testing.T) {
	got, err := ParseRanges("0-999999:0, 1000000-1999999:1,2000000-18446744073709551615:2")
	want := []Range{{0, 999999, 0}, {1000000, 1999999, 1}, {2000000, 1<<64 - 1, 2}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseRanges = %v, %v; want %v", got, err, want)
	}
	if s := FormatRanges(got); s != "0-999999:0,1000000-1999999:1,2000000-18446744073709551615:2" {
		t.Errorf("FormatRanges = %q", s)
	}
	if got, err := ParseRanges("  "); got != nil || err != nil {
		t.Errorf("ParseRanges(blank) = %v, %v; want nil, nil", got, err)
	}
	bad := []struct{ in, want string }{
		{"0-9", "missing ':partition'"},
		{"0:1", "missing '-'"},
		{"a-9:0", `lo "a"`},
		{"0-9x:0", `hi "9x"`},
		{"-1-9:0", `lo ""`},
		{"0-18446744073709551616:0", `hi "18446744073709551616"`},
		{"0-9:-1", `partition "-1"`},
		{"0-9:p1", `partition "p1"`},
		{"9-0:0", "lo 9 > hi 0"},
		{"0-9:0,", `item 1 ""`},
		{"0-9:0,,10-19:1", "item 1"},
	}
	for _, tc := range bad {
		_, err := ParseRanges(tc.in)
		if err == nil || !errors.Is(err, kverrors.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRanges(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestCheckPlacement(t *testing.T) {
	three := []Node{{ID: "n1", Region: "eu"}, {ID: "n2", Region: "eu"}, {ID: "n3", Region: "us"}}
	for _, tc := range []struct {
		name     string
		ks       KeyspaceConfig
		wantErr  bool
		contains []string
	}{
		{"global fits", KeyspaceConfig{Name: "o1", Mode: consistency.CP, Replicas: 3}, false, nil},
		{"global too many", KeyspaceConfig{Name: "o1", Mode: consistency.CP, Replicas: 5}, true, []string{"replicas = 5", "has 3 node(s)"}},
		{"region fits in eu", KeyspaceConfig{Name: "o1", Mode: consistency.AP, Replicas: 2, Template: "o1/{region}/{id}/..."}, false, nil},
		{"no region large enough", KeyspaceConfig{Name: "o1", Mode: consistency.AP, Replicas: 3, Template: "o1/{region}/{id}/..."}, true,
			[]string{"replicas = 3", "eu: 2", "us: 1"}},
	} {
		err := tc.ks.WithDefaults().CheckPlacement(three)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if err != nil && !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("%s: %v does not wrap ErrInvalidArgument", tc.name, err)
		}
		for _, s := range tc.contains {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not name %q", tc.name, err, s)
			}
		}
	}
}

func TestApplyGrant(t *testing.T) {
	var gs []Grant
	steps := []struct {
		g       Grant
		revoke  bool
		want    string
		changed bool
	}{
		{Grant{Identity: "carol", Read: true}, false, "carol=read", true},
		{Grant{Identity: "alice", Write: true}, false, "alice=write carol=read", true},
		{Grant{Identity: "alice", Read: true}, false, "alice=read,write carol=read", true}, // added to what it has
		{Grant{Identity: "alice", Read: true}, false, "alice=read,write carol=read", false},
		{Grant{Identity: "bob"}, true, "alice=read,write carol=read", false},
		{Grant{Identity: "carol"}, true, "alice=read,write", true},
	}
	for i, s := range steps {
		before := slices.Clone(gs)
		out, changed := ApplyGrant(gs, s.g, s.revoke)
		var strs []string
		for _, g := range out {
			strs = append(strs, g.String())
		}
		if got := strings.Join(strs, " "); got != s.want || changed != s.changed {
			t.Fatalf("step %d: %q changed=%v, want %q changed=%v", i, got, changed, s.want, s.changed)
		}
		if !slices.Equal(gs, before) {
			t.Fatalf("step %d modified its input", i)
		}
		gs = out
	}
}
