// Package wire converts between capkv's Go types (ring topology, keyspace
// configs, placements) and their protobuf forms in package api. Servers and
// the client use the same conversions, so both build byte-identical rings from
// one cluster map.
package wire

import (
	"fmt"
	"sort"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/ring"
)

// KeyspaceToProto converts a keyspace config.
func KeyspaceToProto(k *ring.KeyspaceConfig) *api.Keyspace {
	out := &api.Keyspace{
		Name:         k.Name,
		Mode:         string(k.Mode),
		Replicas:     uint32(k.Replicas),
		Partitions:   uint32(k.Partitions),
		Template:     k.Template,
		DefaultLevel: string(k.DefaultLevel),
		Resolve:      k.Resolve,
		MaxSiblings:  uint32(max(k.MaxSiblings, 0)),
	}
	for _, r := range k.Ranges {
		out.Ranges = append(out.Ranges, &api.Range{Lo: r.Lo, Hi: r.Hi, Partition: uint32(r.Partition)})
	}
	for _, g := range k.Grants {
		out.Grants = append(out.Grants, GrantToProto(g))
	}
	return out
}

// KeyspaceFromProto converts a keyspace config; it does not validate (ring.New does).
func KeyspaceFromProto(k *api.Keyspace) ring.KeyspaceConfig {
	out := ring.KeyspaceConfig{
		Name:         k.GetName(),
		Mode:         consistency.Mode(k.GetMode()),
		Replicas:     int(k.GetReplicas()),
		Partitions:   int(k.GetPartitions()),
		Template:     k.GetTemplate(),
		DefaultLevel: consistency.Level(k.GetDefaultLevel()),
		Resolve:      k.GetResolve(),
		MaxSiblings:  int(k.GetMaxSiblings()),
	}
	for _, r := range k.GetRanges() {
		out.Ranges = append(out.Ranges, ring.Range{Lo: r.GetLo(), Hi: r.GetHi(), Partition: int(r.GetPartition())})
	}
	for _, g := range k.GetGrants() {
		out.Grants = append(out.Grants, GrantFromProto(g))
	}
	return out
}

// GrantToProto converts a grant.
func GrantToProto(g ring.Grant) *api.Grant {
	return &api.Grant{Identity: g.Identity, Read: g.Read, Write: g.Write, Admin: g.Admin}
}

// GrantFromProto converts a grant.
func GrantFromProto(g *api.Grant) ring.Grant {
	return ring.Grant{Identity: g.GetIdentity(), Read: g.GetRead(), Write: g.GetWrite(), Admin: g.GetAdmin()}
}

// NodeToProto converts a node.
func NodeToProto(n ring.Node) *api.Node {
	return &api.Node{Id: n.ID, Addr: n.Addr, Region: n.Region, Incarnation: n.Incarnation}
}

// MapToProto converts a ring's topology to the cluster map clients fetch.
func MapToProto(t ring.Topology, vnodes int, meta []string) *api.ClusterMap {
	m := &api.ClusterMap{Epoch: t.Epoch, Vnodes: uint32(vnodes), Meta: meta, Leaving: t.Leaving, MetaJoining: t.MetaJoining}
	ids := make([]string, 0, len(t.Assignments))
	for id := range t.Assignments {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m.Assignments = append(m.Assignments, &api.Assignment{Partition: id, Replicas: t.Assignments[id]})
	}
	ids = ids[:0]
	for id := range t.Joining {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m.Joining = append(m.Joining, &api.Assignment{Partition: id, Replicas: t.Joining[id]})
	}
	for _, n := range t.Nodes {
		m.Nodes = append(m.Nodes, NodeToProto(n))
	}
	for i := range t.Keyspaces {
		m.Keyspaces = append(m.Keyspaces, KeyspaceToProto(&t.Keyspaces[i]))
	}
	return m
}

// TopologyFromProto converts a cluster map back to a ring topology.
func TopologyFromProto(m *api.ClusterMap) ring.Topology {
	t := ring.Topology{Epoch: m.GetEpoch(), Leaving: m.GetLeaving(), MetaJoining: m.GetMetaJoining()}
	if len(m.GetAssignments()) > 0 {
		t.Assignments = make(map[string][]string, len(m.GetAssignments()))
		for _, a := range m.GetAssignments() {
			t.Assignments[a.GetPartition()] = a.GetReplicas()
		}
	}
	if len(m.GetJoining()) > 0 {
		t.Joining = make(map[string][]string, len(m.GetJoining()))
		for _, a := range m.GetJoining() {
			t.Joining[a.GetPartition()] = a.GetReplicas()
		}
	}
	for _, n := range m.GetNodes() {
		t.Nodes = append(t.Nodes, ring.Node{ID: n.GetId(), Addr: n.GetAddr(), Region: n.GetRegion(), Incarnation: n.GetIncarnation()})
	}
	for _, k := range m.GetKeyspaces() {
		t.Keyspaces = append(t.Keyspaces, KeyspaceFromProto(k))
	}
	return t
}

// RingFromProto builds the ring described by a cluster map.
func RingFromProto(m *api.ClusterMap) (*ring.Ring, error) {
	if m == nil {
		return nil, fmt.Errorf("empty cluster map")
	}
	return ring.New(TopologyFromProto(m), ring.Options{VNodes: int(m.GetVnodes())})
}
