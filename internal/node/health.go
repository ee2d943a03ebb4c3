package node

import (
	"context"
	"fmt"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// dropPeer closes the connection to a node the detector found silent, so
// the next call dials afresh (see dial.Pool.Drop).
func (n *Node) dropPeer(id string) {
	if n.fd.Down(id) { // no answer arrived since the detector decided
		n.peers.Drop(id)
	}
}

// down returns an Unavailable error when the detector holds node id down.
func (n *Node) down(id string) error { return n.fd.Unreachable(id, n.cfg.ID) }

// upReplicas are the replicas the failure detector does not hold down (this
// node included).
func (n *Node) upReplicas(replicas []string) []string { return n.fd.Reachable(replicas, n.cfg.ID) }
