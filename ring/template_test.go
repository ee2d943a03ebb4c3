package ring

import (
	"errors"
	"strings"
	"testing"

	"github.com/capkv/capkv/internal/kverrors"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in                  string
		keyspace, loc, part string
		rest                bool
	}{
		{"accounts/{region}/{account}/...", "accounts", "region", "account", true},
		{"sessions/...", "sessions", "", "", true},
		{"sessions", "sessions", "", "", false},
		{"users/{id}", "users", "", "id", false},
		{"users/v1/{id}/profile", "users", "", "id", false},
		{"orders/{region}/{customer}/{order}", "orders", "region", "customer", false},
		{"orders/{region}/{customer}/{order:partition}/...", "orders", "region", "order", true},
		{"orders/{dc:locality}/{region}/...", "orders", "dc", "region", true}, // explicit locality demotes {region}
		{"orders/{region:partition}/...", "orders", "", "region", true},
		{"orders/{zone:locality}/...", "orders", "zone", "", true},
		{"orders/{region}/...", "orders", "region", "", true},
		{"a-b_1/{x_2}/lit.with.dots/...", "a-b_1", "", "x_2", true},
	}
	for _, tc := range tests {
		tm, err := ParseTemplate(tc.in)
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tc.in, err)
			continue
		}
		if tm.String() != tc.in || tm.Keyspace() != tc.keyspace || tm.LocalityAttr() != tc.loc ||
			tm.PartitionAttr() != tc.part || tm.rest != tc.rest {
			t.Errorf("ParseTemplate(%q) = string %q keyspace %q locality %q partition %q rest %v, want %q %q %q %v",
				tc.in, tm.String(), tm.Keyspace(), tm.LocalityAttr(), tm.PartitionAttr(), tm.rest,
				tc.keyspace, tc.loc, tc.part, tc.rest)
		}
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty template"},
		{strings.Repeat("a", maxTemplateLen+1), "at most 1024"},
		{"/accounts/{id}", "segment 0 is empty"},
		{"accounts/{id}/", "segment 2 is empty"},
		{"accounts//{id}", "segment 1 is empty"},
		{"Accounts/{id}", `segment 0 "Accounts" must be the keyspace name`},
		{"{region}/{id}", `segment 0 "{region}" must be the keyspace name`},
		{".../x", `segment 0 "..." must be the keyspace name`},
		{"accounts/.../{id}", `segment 1: "..." is only allowed as the last segment`},
		{"accounts/{id", `segment 1 "{id": an attribute must be written`},
		{"accounts/id}", `segment 1 "id}": an attribute must be written`},
		{"accounts/{}", `attribute name "" must match`},
		{"accounts/{Id}", `attribute name "Id" must match`},
		{"accounts/{1d}", `attribute name "1d" must match`},
		{"accounts/{a-b}", `attribute name "a-b" must match`},
		{"accounts/{id}/{id}", `segment 2 "{id}": attribute "id" already used in segment 1`},
		{"accounts/{a:locality}/{b:locality}", "segment 2 \"{b:locality}\": second locality attribute (segment 1"},
		{"accounts/{a:partition}/{b:partition}", "segment 2 \"{b:partition}\": second partition attribute (segment 1"},
		{"accounts/{a:hash}", `unknown attribute kind "hash"`},
		{"accounts/{a:}", `unknown attribute kind ""`},
		{"accounts/a{b", `segment 1 "a{b": a literal must not contain`},
		{"accounts/{a}b}", `attribute name "a}b" must match`},
	}
	for _, tc := range tests {
		_, err := ParseTemplate(tc.in)
		if err == nil {
			t.Errorf("ParseTemplate(%q) succeeded, want error containing %q", tc.in, tc.want)
			continue
		}
		if !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("ParseTemplate(%q) error %v does not wrap ErrInvalidArgument", tc.in, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTemplate(%q) error %q, want it to contain %q", tc.in, err, tc.want)
		}
		if len(tc.in) <= maxTemplateLen && !strings.Contains(err.Error(), "template \""+tc.in+"\"") {
			t.Errorf("ParseTemplate(%q) error %q does not name the template", tc.in, err)
		}
	}
}

func TestExtract(t *testing.T) {
	tests := []struct {
		tmpl, key, loc, part string
	}{
		{"accounts/{region}/{account}/...", "accounts/eu/42", "eu", "42"},
		{"accounts/{region}/{account}/...", "accounts/eu/42/balance", "eu", "42"},
		{"accounts/{region}/{account}/...", "accounts/us/7/a/b/c", "us", "7"},
		{"sessions/...", "sessions", "", ""},
		{"sessions/...", "sessions/abc", "", "abc"},
		{"sessions/...", "sessions/abc/def", "", "abc/def"},
		{"sessions", "sessions", "", ""},
		{"users/v1/{id}/profile", "users/v1/9/profile", "", "9"},
		{"orders/{region}/...", "orders/eu/1/2", "eu", "eu/1/2"}, // no partition attribute: hash the rest
		{"orders/{dc:locality}/{region}/...", "orders/fra/eu/x", "fra", "eu"},
		{"orders/{region}/{customer}/{order:partition}", "orders/eu/c/o", "eu", "o"},
	}
	for _, tc := range tests {
		tm, err := ParseTemplate(tc.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		loc, part, err := tm.Extract(tc.key)
		if err != nil || loc != tc.loc || part != tc.part {
			t.Errorf("%q.Extract(%q) = %q, %q, %v; want %q, %q", tc.tmpl, tc.key, loc, part, err, tc.loc, tc.part)
		}
	}
}

func TestExtractErrors(t *testing.T) {
	tests := []struct{ tmpl, key, want string }{
		{"accounts/{region}/{account}/...", "accounts/eu", "key has 2 segment(s), template needs at least 3"},
		{"accounts/{region}/{account}/...", "accounts", "key has 1 segment(s), template needs at least 3"},
		{"accounts/{region}/{account}/...", "other/eu/1", `segment 0 is "other", want "accounts"`},
		{"accounts/{region}/{account}/...", "accounts//1", "segment 1 is empty"},
		{"accounts/{region}/{account}/...", "accounts/eu/1/", "segment 3 is empty"},
		{"accounts/{region}/{account}/...", "accounts/eu/1//x", "segment 3 is empty"},
		{"accounts/{region}/{account}/...", "accounts/eu/", "segment 2 is empty"},
		{"users/{id}", "users/1/x", "key has 3 segment(s), template needs exactly 2"},
		{"users/{id}", "users/1/", "trailing '/'"},
		{"users/{id}", "users", "key has 1 segment(s), template needs exactly 2"},
		{"users/v1/{id}", "users/v2/1", `segment 1 is "v2", want "v1"`},
		{"sessions", "sessions/x", "key has 2 segment(s), template needs exactly 1"},
		{"sessions/...", "sessions/", "segment 1 is empty"},
		{"sessions/...", "/sessions", "segment 0 is empty"},
		{"sessions/...", "", "segment 0 is empty"},
	}
	for _, tc := range tests {
		tm, err := ParseTemplate(tc.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tm.Extract(tc.key)
		if err == nil {
			t.Errorf("%q.Extract(%q) succeeded, want error containing %q", tc.tmpl, tc.key, tc.want)
			continue
		}
		if !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("%q.Extract(%q) error %v does not wrap ErrInvalidArgument", tc.tmpl, tc.key, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, `key "`+tc.key+`"`) || !strings.Contains(msg, `template "`+tc.tmpl+`"`) {
			t.Errorf("%q.Extract(%q) error %q, want it to contain %q and name key and template", tc.tmpl, tc.key, msg, tc.want)
		}
	}
}

func TestExtractDoesNotAllocate(t *testing.T) {
	tm, err := ParseTemplate("accounts/{region}/{account}/...")
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := tm.Extract("accounts/eu/42/balance/x"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Extract allocates %v times per call, want 0", allocs)
	}
}

func TestSplitKeyspace(t *testing.T) {
	good := map[string]string{
		"accounts/eu/42": "accounts",
		"accounts":       "accounts",
		"accounts/":      "accounts", // the template rejects the empty segment later
		"a//b":           "a",
	}
	for key, want := range good {
		if got, err := SplitKeyspace(key); err != nil || got != want {
			t.Errorf("SplitKeyspace(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, key := range []string{"", "/", "/accounts", "//x"} {
		_, err := SplitKeyspace(key)
		if !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("SplitKeyspace(%q) error = %v, want ErrInvalidArgument", key, err)
		}
	}
}
