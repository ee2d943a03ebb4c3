package metrics

import (
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/ring"
)

const kvMethodPrefix = "/capkv.v1.KV/"

// ObserveRPC records a KV request served through gRPC: its keyspace and
// mode come from the receipt when there is one, else from the key (mode
// looks a keyspace's mode up). err is the status the caller gets.
func (m *Metrics) ObserveRPC(method string, req, resp any, err error, took time.Duration, mode func(keyspace string) (string, bool)) {
	op, ok := strings.CutPrefix(method, kvMethodPrefix)
	if !ok {
		return
	}
	r := Request{Op: op, Seconds: took.Seconds(), Code: status.Code(err).String()}
	var rc *api.Receipt
	if x, ok := resp.(interface{ GetReceipt() *api.Receipt }); ok && err == nil {
		rc = x.GetReceipt()
	}
	if rc != nil {
		r.Keyspace, r.Mode, r.Level = rc.GetKeyspace(), rc.GetMode(), rc.GetLevel()
		r.Forwarded, r.Hinted, r.Sloppy, r.Siblings = rc.GetForwarded(), rc.GetHinted(), rc.GetSloppyQuorum(), int(rc.GetSiblings())
	} else {
		var key string
		switch x := req.(type) {
		case interface{ GetKey() string }:
			key = x.GetKey()
		case interface{ GetPrefix() string }:
			key = x.GetPrefix()
		}
		if name, err := ring.SplitKeyspace(key); err == nil {
			if md, ok := mode(name); ok {
				r.Keyspace, r.Mode = name, md
			}
		}
		if x, ok := req.(interface{ GetHeader() *api.RequestHeader }); ok {
			r.Level = x.GetHeader().GetConsistency()
		}
	}
	if x, ok := req.(interface{ GetHeader() *api.RequestHeader }); ok && x.GetHeader().GetHops() > 0 {
		r.FromNode = true
	}
	if r.Keyspace == "" {
		r.Keyspace = "unknown" // bounded: unknown keyspaces share one series
	}
	m.Observe(r)
}
