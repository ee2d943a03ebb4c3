package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/kverrors"
)

// detectLoop runs the failure detector until the node closes.
func (n *Node) detectLoop() {
	defer n.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-n.stop; cancel() }()
	n.fd.Run(ctx)
}

// probe asks a node's health service whether it serves.
func (n *Node) probe(ctx context.Context, id string) error {
	c, err := n.peer(id)
	if err != nil {
		return err
	}
	resp, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s answers %s (shutting down)", id, resp.GetStatus())
	}
	return nil
}

// otherNodes are the nodes of the cluster map but this one.
func (n *Node) otherNodes() []string {
	var ids []string
	for _, nd := range n.r().Topology().Nodes {
		if nd.ID != n.cfg.ID {
			ids = append(ids, nd.ID)
		}
	}
	return ids
}

// dropPeer closes the connection to a node the detector found silent. A
// partition that drops packets leaves TCP connections open but mute, and
// TCP's retransmission backoff would keep them mute for seconds after the
// heal; the next call dials a fresh connection instead.
func (n *Node) dropPeer(id string) {
	if !n.fd.Down(id) {
		return // an answer arrived since the detector decided
	}
	n.mu.Lock()
	c := n.mu.peers[id]
	if c != nil {
		delete(n.mu.peers, id)
	}
	n.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// heardInterceptor tells the detector about every answer from node id: a
// success or an error the node's own code returned proves the path works; a
// transport failure, a timeout, or an error made on this side (the fault
// hooks') does not. Health checks are left to the probe, which also reads
// their status (a node shutting down answers NOT_SERVING).
func (n *Node) heardInterceptor(id string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return err
		}
		if err == nil {
			n.fd.Heard(id)
			return nil
		}
		if st, ok := status.FromError(err); ok {
			switch st.Code() {
			case codes.NotFound, codes.AlreadyExists, codes.InvalidArgument, codes.FailedPrecondition,
				codes.Aborted, codes.OutOfRange, codes.ResourceExhausted, codes.Unimplemented, codes.PermissionDenied:
				n.fd.Heard(id)
			}
		}
		return err
	}
}

// down returns an Unavailable error when the detector holds node id down:
// callers then skip it instead of waiting on it.
func (n *Node) down(id string) error {
	st, ok := n.fd.State(id)
	if !ok || st.Up {
		return nil
	}
	silent := "never answered"
	if !st.LastSeen.IsZero() {
		silent = "silent for " + time.Since(st.LastSeen).Round(time.Millisecond).String()
	}
	return fmt.Errorf("%w: node %s is down as seen from %s (%s)", kverrors.ErrUnavailable, id, n.cfg.ID, silent)
}

// upReplicas are the replicas the failure detector does not hold down (this
// node included).
func (n *Node) upReplicas(replicas []string) []string {
	out := make([]string, 0, len(replicas))
	for _, r := range replicas {
		if r == n.cfg.ID || !n.fd.Down(r) {
			out = append(out, r)
		}
	}
	return out
}
