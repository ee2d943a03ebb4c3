package node

import (
	"context"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/access"
	"github.com/capkv/capkv/internal/kverrors"
)

// authorize is the one access check of client requests (internal/access),
// made on every node a request reaches, with the identity of the client
// that sent it: the common name of the connection's certificate, or, when
// that is a node certificate and the request carries one, the identity the
// forwarding node recorded in its header. The check writes the identity
// into the header, so that a forward carries it on (route copies it) and a
// client cannot claim another's. Admin requests a node forwards (hops > 0)
// were checked by the node the client asked and carry no identity.
// Without client certificate auth it checks nothing.
func (n *Node) authorize(ctx context.Context, req any) error {
	if !n.cfg.Security.ClientCertAuth() {
		return nil
	}
	name, isNode, _ := n.cfg.Security.Caller(ctx)
	pol := access.Policy{Enabled: true, Admins: n.cfg.AdminIdentities}
	identity := func(h **api.RequestHeader) string {
		if *h == nil {
			*h = &api.RequestHeader{}
		}
		if !isNode || (*h).Identity == "" {
			(*h).Identity = name
		}
		return (*h).Identity
	}
	var prefix, who string
	var perm access.Perm
	switch r := req.(type) {
	case *api.GetRequest:
		prefix, perm, who = r.GetKey(), access.Read, identity(&r.Header)
	case *api.ScanRequest:
		prefix, perm, who = r.GetPrefix(), access.Read, identity(&r.Header)
	case *api.PutRequest:
		prefix, perm, who = r.GetKey(), access.Write, identity(&r.Header)
	case *api.DeleteRequest:
		prefix, perm, who = r.GetKey(), access.Write, identity(&r.Header)
	case *api.CASRequest:
		prefix, perm, who = r.GetKey(), access.Write, identity(&r.Header)
	case *api.WatchRequest:
		prefix, perm, who = r.GetPrefix(), access.Read, name // served where it arrives, never forwarded
	case *api.CreateKeyspaceRequest:
		if isNode && r.GetHops() > 0 {
			return nil
		}
		return pol.CheckCreate(name, r.GetKeyspace().GetName())
	case *api.DropKeyspaceRequest:
		if isNode && r.GetHops() > 0 {
			return nil
		}
		prefix, perm, who = r.GetName(), access.Admin, name
	case *api.GrantKeyspaceRequest:
		if isNode && r.GetHops() > 0 {
			return nil
		}
		prefix, perm, who = r.GetKeyspace(), access.Admin, name
	default:
		return nil // node-only calls have their own check (dial.Security); the rest reads the map
	}
	ks, err := n.router.Keyspace(ctx, prefix)
	if err != nil {
		return err // what the handler would say (bad key, unknown keyspace)
	}
	return pol.Check(ks, who, perm)
}

// authorizeStream checks a stream's first request (Watch) like authorize.
func (n *Node) authorizeStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !n.cfg.Security.ClientCertAuth() {
		return h(srv, ss)
	}
	return h(srv, &authorizedStream{ServerStream: ss, n: n})
}

type authorizedStream struct {
	grpc.ServerStream
	n *Node
}

func (s *authorizedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return kverrors.ToStatus(s.n.authorize(s.Context(), m))
}
