// Package replication is the contract between a node and the replication
// modes: a Replicator runs reads, writes, scans, watches and repairs of one
// keyspace mode on this node's replicas, and the node chooses it once per
// request, from the key's keyspace (see internal/node's route).
//
// The modes own their whole protocol, wire included: replication/cp (a
// hashicorp/raft group per partition) and replication/ap (leaderless quorums
// with hints, read repair and anti-entropy). The node only routes, forwards a
// request this node cannot serve to one that can, and turns results into API
// responses. What a mode needs from the node (peer connections, the failure
// detector's view, the cluster map) it declares itself.
//
// Errors follow internal/kverrors: ErrUnavailable means the operation did not
// happen; ErrIndeterminate that it may have; a Redirect names the node that
// can serve (a cp follower knows its leader).
package replication

import (
	"context"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/ring"
)

// Target is where one request runs: the placement of its key (keyspace,
// partition, preference list) and its effective consistency level.
type Target struct {
	Placement ring.Placement
	Level     consistency.Level
	// RequestID makes a retried write apply once (cp); every write has one.
	RequestID string
}

// Partition is the partition id of the target.
func (t Target) Partition() string { return t.Placement.Partition.String() }

// Op is the kind of a write.
type Op int

// The writes a replicator may offer (CAS only in cp).
const (
	OpPut Op = iota + 1
	OpDelete
	OpCAS
)

// Write is one put, delete or compare-and-set.
type Write struct {
	Op    Op
	Key   string
	Value []byte
	// Context is the causal context (an encoded consistency.VV) an ap write
	// supersedes; cp ignores it.
	Context []byte
	// CAS expectations: a value, a version (0: the key is absent), or both.
	ExpectValue      []byte
	HasExpectValue   bool
	ExpectVersion    uint64
	HasExpectVersion bool
}

// Receipt is what the trade-off cost a request, as far as the mode knows it;
// the node adds where the request was routed.
type Receipt struct {
	AckedBy           []string // replicas (and hint holders) that acknowledged
	Hinted            bool     // a fallback node holds the write for a replica
	Sloppy            bool     // hinted acknowledgements counted towards the level
	Siblings          int      // concurrent values present (ap)
	AppliedIndex      uint64   // cp: the log index served or written
	StalenessMs       int64    // cp stale reads: since the replica heard its leader (-1: never)
	MajorityReachable bool
	Level             consistency.Level // set when the mode served another level than asked (ap scans read one replica)
}

// Item is one key's current value.
type Item struct {
	Key       string
	Value     []byte
	Version   uint64
	Timestamp uint64
}

// Sibling is one of several concurrent ap values.
type Sibling struct {
	Value     []byte
	Timestamp uint64
	Dot       string
}

// ReadResult is a Get's answer. Found is false when the key does not exist
// (the replicator then returns kverrors.ErrNotFound, with the result's receipt).
type ReadResult struct {
	Item     Item
	Siblings []Sibling // ap: every live concurrent value
	// Context is the causal context a following ap write names to supersede
	// what this read saw.
	Context             []byte
	DeletedConcurrently bool
	Receipt             Receipt
}

// WriteResult is a write's answer.
type WriteResult struct {
	Version   uint64
	Timestamp uint64
	Existed   bool // delete: something was there to delete
	Receipt   Receipt
}

// ScanResult is one partition's page of a scan.
type ScanResult struct {
	Items   []Item
	More    bool // the page was cut at the limit
	Receipt Receipt
}

// RepairResult counts what an anti-entropy round exchanged.
type RepairResult struct {
	LeavesDiffering, Pulled, Pushed, Purged int
}

// Forwarding is how the node forwards a request this node cannot serve.
type Forwarding struct {
	// WaitForLeader: requests needing the leader (writes, linearizable
	// reads) retry until shortly before the deadline, since an election may
	// end, and are refused at once on a side without a majority of the
	// partition's replicas (cp). Without it, the node tries each replica once,
	// giving each live one a share of the time left (ap: any replica serves).
	WaitForLeader bool
}

// Redirect is an error naming the node that can serve the request (a cp
// follower names its leader; "" when it knows none).
type Redirect interface {
	error
	RedirectTo() string
}

// Replicator runs one mode's operations on this node.
type Replicator interface {
	// Forwarding is the mode's forwarding policy.
	Forwarding() Forwarding
	// Serves reports whether this node can run requests of t itself (it
	// holds a running replica of the partition).
	Serves(t Target) bool
	Get(ctx context.Context, t Target, key string) (ReadResult, error)
	Write(ctx context.Context, t Target, w Write) (WriteResult, error)
	Scan(ctx context.Context, t Target, prefix, after string, limit int) (ScanResult, error)
	// Watch subscribes to what this replica applies for keys with prefix.
	Watch(t Target, prefix string) (*watch.Sub, error)
	// Repair runs anti-entropy for t's partition from this replica.
	Repair(ctx context.Context, t Target) (RepairResult, error)
	// Adopt is told every newer cluster map (cp starts the Raft replicas the
	// map assigns to this node).
	Adopt(r *ring.Ring) error
	// Move runs this node's part of moving t's partition to m.To
	// (rebalancing: internal/meta/rebalance.go).
	Move(ctx context.Context, t Target, m Moving) (MoveResult, error)
	// Status says how far this node's replica of t's partition is.
	Status(t Target) ReplicaStatus
}

// Moving is the data step of one partition's move.
type Moving struct {
	To, Joining []string // the new replica set; its nodes that are new
	// Applied asks a node how far its replica of the partition is (a cp
	// learner is promoted once it holds what was committed).
	Applied func(ctx context.Context, node string) (uint64, error)
}

// MoveResult is what a Move did.
type MoveResult struct {
	// NotLeader: this replica does not lead the partition (cp); Leader is
	// the one to ask ("" unknown).
	NotLeader bool
	Leader    string
	// Keys and Bytes count what was streamed (ap) or what the partition
	// holds once Raft has caught the new replicas up (cp: live records,
	// key and value bytes).
	Keys, Bytes int64
}

// ReplicaStatus is one replica's progress.
type ReplicaStatus struct {
	Running      bool
	AppliedIndex uint64 // cp
	Leader       bool   // cp
}

// InnerDeadline leaves a margin before the caller's deadline so that a
// request that cannot be served gets a definite Unavailable answer instead
// of the caller's own timeout.
func InnerDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(time.Until(dl)/10, 200*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}
