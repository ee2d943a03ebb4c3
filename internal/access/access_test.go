package access

import (
	"errors"
	"strings"
	"testing"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

func TestCheck(t *testing.T) {
	accounts := &ring.KeyspaceConfig{Name: "accounts", Grants: []ring.Grant{
		{Identity: "alice", Read: true, Write: true}, {Identity: "carol", Read: true}, {Identity: "ops", Admin: true}}}
	open := &ring.KeyspaceConfig{Name: "sessions"}
	on := Policy{Enabled: true, Admins: []string{"root"}}
	for _, c := range []struct {
		pol      Policy
		ks       *ring.KeyspaceConfig
		identity string
		perm     Perm
		deny     string // "" allowed
	}{
		{on, accounts, "alice", Read, ""},
		{on, accounts, "alice", Write, ""},
		{on, accounts, "alice", Admin, `identity "alice" has no admin grant on keyspace "accounts" (grants: alice=read,write carol=read ops=admin)`},
		{on, accounts, "carol", Read, ""},
		{on, accounts, "carol", Write, `identity "carol" has no write grant on keyspace "accounts"`},
		{on, accounts, "bob", Read, `identity "bob" has no read grant on keyspace "accounts"`},
		{on, accounts, "ops", Admin, ""},
		{on, accounts, "ops", Read, `identity "ops" has no read grant`}, // admin does not imply read
		{on, accounts, "root", Write, ""},                               // cluster admin
		{on, open, "bob", Write, ""},                                    // no grants: open
		{Policy{}, accounts, "bob", Write, ""},                          // no client cert auth: no checks
	} {
		err := c.pol.Check(c.ks, c.identity, c.perm)
		switch {
		case c.deny == "" && err != nil:
			t.Errorf("%s %s on %s: %v, want allowed", c.identity, c.perm, c.ks.Name, err)
		case c.deny != "" && (!errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), c.deny)):
			t.Errorf("%s %s on %s: %v, want permission denied saying %q", c.identity, c.perm, c.ks.Name, err, c.deny)
		}
	}
}

func TestCheckCreate(t *testing.T) {
	if err := (Policy{Enabled: true}).CheckCreate("bob", "x"); err != nil {
		t.Errorf("no cluster admins: create is open, got %v", err)
	}
	pol := Policy{Enabled: true, Admins: []string{"root", "alice"}}
	if err := pol.CheckCreate("alice", "x"); err != nil {
		t.Errorf("admin alice: %v", err)
	}
	err := pol.CheckCreate("bob", "orders")
	if want := `identity "bob" may not create keyspace "orders": only the cluster admin identities may (root, alice)`; !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), want) {
		t.Errorf("bob creates: %v, want %q", err, want)
	}
}

func TestCheckManageable(t *testing.T) {
	readOnly := []ring.Grant{{Identity: "alice", Read: true}}
	if err := CheckManageable("ledger", readOnly, nil); !errors.Is(err, kverrors.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), `keyspace "ledger" would have grants (alice=read) but no identity with admin on it`) {
		t.Errorf("read-only grants, no cluster admins: %v", err)
	}
	for _, ok := range []struct {
		grants []ring.Grant
		admins []string
	}{
		{readOnly, []string{"root"}}, // a cluster admin can still change them
		{append(readOnly, ring.Grant{Identity: "ops", Admin: true}), nil},
		{nil, nil}, // open again
	} {
		if err := CheckManageable("ledger", ok.grants, ok.admins); err != nil {
			t.Errorf("%v with admins %v: %v", ok.grants, ok.admins, err)
		}
	}
}
