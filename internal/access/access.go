// Package access decides whether a client identity may do an operation on
// a keyspace: the pure check behind the per-keyspace grants, which a node
// makes once per request (internal/node) with the identity of the client
// certificate, or the identity a forwarding node carried in the request.
//
// The rules, with --client-cert-auth (without it every client may do
// everything):
//   - a cluster admin identity (kvd --admin-identities) may do everything;
//   - a keyspace without grants is open to every authenticated identity;
//   - a keyspace with grants allows each identity exactly the permissions
//     granted to it: read (Get, Scan, Watch), write (Put, Delete, CAS),
//     admin (grant, revoke, drop). admin does not imply read or write;
//   - creating a keyspace needs a cluster admin when any are configured,
//     and is open otherwise.
package access

import (
	"fmt"
	"slices"
	"strings"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

// Perm is one permission a grant gives.
type Perm string

const (
	Read  Perm = "read"
	Write Perm = "write"
	Admin Perm = "admin"
)

// Policy is a node's access policy.
type Policy struct {
	// Enabled is --client-cert-auth: every client has an identity.
	Enabled bool
	// Admins are the cluster admin identities.
	Admins []string
}

func (p Policy) admin(identity string) bool { return slices.Contains(p.Admins, identity) }

// Check returns nil when identity may use perm on ks, and otherwise
// kverrors.ErrPermissionDenied naming the identity, the permission, the
// keyspace and its grants.
func (p Policy) Check(ks *ring.KeyspaceConfig, identity string, perm Perm) error {
	if !p.Enabled || p.admin(identity) || len(ks.Grants) == 0 {
		return nil
	}
	i := slices.IndexFunc(ks.Grants, func(g ring.Grant) bool { return g.Identity == identity })
	if i >= 0 && has(ks.Grants[i], perm) {
		return nil
	}
	gs := make([]string, len(ks.Grants))
	for i, g := range ks.Grants {
		gs[i] = g.String()
	}
	return fmt.Errorf("%w: identity %q has no %s grant on keyspace %q (grants: %s)",
		kverrors.ErrPermissionDenied, identity, perm, ks.Name, strings.Join(gs, " "))
}

// CheckCreate returns nil when identity may create keyspaces.
func (p Policy) CheckCreate(identity, keyspace string) error {
	if !p.Enabled || len(p.Admins) == 0 || p.admin(identity) {
		return nil
	}
	return fmt.Errorf("%w: identity %q may not create keyspace %q: only the cluster admin identities may (%s)",
		kverrors.ErrPermissionDenied, identity, keyspace, strings.Join(p.Admins, ", "))
}

// CheckManageable refuses grants that nobody could change again: some
// grants, none of them admin, and no cluster admin identities.
func CheckManageable(keyspace string, grants []ring.Grant, admins []string) error {
	if len(admins) > 0 || len(grants) == 0 || slices.ContainsFunc(grants, func(g ring.Grant) bool { return g.Admin }) {
		return nil
	}
	gs := make([]string, len(grants))
	for i, g := range grants {
		gs[i] = g.String()
	}
	return fmt.Errorf("%w: keyspace %q would have grants (%s) but no identity with admin on it, and the cluster has no admin identities (kvd --admin-identities): "+
		"nobody could change its grants again; grant --admin to an identity first, or with this change", kverrors.ErrInvalidArgument, keyspace, strings.Join(gs, " "))
}

func has(g ring.Grant, perm Perm) bool {
	switch perm {
	case Read:
		return g.Read
	case Write:
		return g.Write
	case Admin:
		return g.Admin
	}
	return false
}
