package ring

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/capkv/capkv/internal/kverrors"
)

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"accounts/{region}/{account}/...", "s/...", "s", "o/{dc:locality}/{region}/{x:partition}", "a/{b", "a/.../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplate(s)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInvalidArgument) {
				t.Fatalf("ParseTemplate(%q) error %v does not wrap ErrInvalidArgument", s, err)
			}
			return
		}
		again, err := ParseTemplate(tm.String())
		if err != nil || !reflect.DeepEqual(tm, again) {
			t.Fatalf("ParseTemplate(%q) does not round-trip: %+v vs %+v, %v", s, tm, again, err)
		}
		if !strings.HasPrefix(s, tm.Keyspace()) || !validKeyspaceName(tm.Keyspace()) {
			t.Fatalf("ParseTemplate(%q): keyspace %q", s, tm.Keyspace())
		}
		if tm.LocalityAttr() != "" && tm.LocalityAttr() == tm.PartitionAttr() {
			t.Fatalf("ParseTemplate(%q): %q is both locality and partition", s, tm.LocalityAttr())
		}
	})
}

func FuzzExtract(f *testing.F) {
	f.Add("accounts/{region}/{account}/...", "accounts/eu/42/balance")
	f.Add("accounts/{region}/{account}/...", "accounts/eu/")
	f.Add("s/...", "s/a/b")
	f.Add("u/v1/{id}", "u/v1/7")
	f.Add("u/{id}", "u/7/")
	f.Fuzz(func(t *testing.T, tmpl, key string) {
		tm, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		loc, part, err := tm.Extract(key)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInvalidArgument) {
				t.Fatalf("Extract(%q) error %v does not wrap ErrInvalidArgument", key, err)
			}
			return
		}
		if !strings.Contains(key, part) {
			t.Fatalf("%q.Extract(%q): partition key %q is not a substring", tmpl, key, part)
		}
		if (loc == "") != (tm.LocalityAttr() == "") {
			t.Fatalf("%q.Extract(%q): locality %q", tmpl, key, loc)
		}
		segs := strings.Split(key, "/")
		if loc != "" && !contains(segs[1:], loc) {
			t.Fatalf("%q.Extract(%q): locality %q is not a segment", tmpl, key, loc)
		}
		if contains(segs, "") {
			t.Fatalf("%q.Extract(%q) accepted an empty segment", tmpl, key)
		}
		if tm.PartitionAttr() != "" && (part == "" || strings.Contains(part, "/")) {
			t.Fatalf("%q.Extract(%q): partition attribute value %q", tmpl, key, part)
		}
		if ks, err := SplitKeyspace(key); err != nil || ks != tm.Keyspace() {
			t.Fatalf("%q.Extract(%q) matched but SplitKeyspace = %q, %v", tmpl, key, ks, err)
		}
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func FuzzSplitKeyspace(f *testing.F) {
	for _, s := range []string{"accounts/eu/1", "a", "/a", "", "a//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		ks, err := SplitKeyspace(key)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInvalidArgument) {
				t.Fatalf("SplitKeyspace(%q) error %v does not wrap ErrInvalidArgument", key, err)
			}
			if key != "" && key[0] != '/' {
				t.Fatalf("SplitKeyspace(%q) refused a key with a first segment: %v", key, err)
			}
			return
		}
		if ks == "" || strings.Contains(ks, "/") || !strings.HasPrefix(key, ks) || (len(key) > len(ks) && key[len(ks)] != '/') {
			t.Fatalf("SplitKeyspace(%q) = %q", key, ks)
		}
	})
}

func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{"0-999999:0,1000000-1999999:1", " 1-2:3 ", "", "9-0:0", "0-18446744073709551615:7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRanges(s)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInvalidArgument) {
				t.Fatalf("ParseRanges(%q) error %v does not wrap ErrInvalidArgument", s, err)
			}
			return
		}
		for _, r := range rs {
			if r.Lo > r.Hi || r.Partition < 0 {
				t.Fatalf("ParseRanges(%q) accepted %+v", s, r)
			}
		}
		again, err := ParseRanges(FormatRanges(rs))
		if err != nil || !reflect.DeepEqual(rs, again) {
			t.Fatalf("ParseRanges(%q) = %v does not round-trip through %q: %v, %v", s, rs, FormatRanges(rs), again, err)
		}
	})
}

func FuzzParsePartitionID(f *testing.F) {
	for _, s := range []string{"accounts/eu/3", "sessions/*/0", "a/b/65535", "a/b/03", "a//1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParsePartitionID(s)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInvalidArgument) {
				t.Fatalf("ParsePartitionID(%q) error %v does not wrap ErrInvalidArgument", s, err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParsePartitionID(%q) = %+v, prints as %q", s, id, id.String())
		}
		if again, err := ParsePartitionID(id.String()); err != nil || again != id {
			t.Fatalf("ParsePartitionID(%q) does not round-trip: %+v, %v", s, again, err)
		}
	})
}
