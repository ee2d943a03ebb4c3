package cp

import (
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// Acks records what a leader's transport has seen its followers
// acknowledge: per peer, the highest log index a successful AppendEntries
// response confirmed, with the term of the request. hashicorp/raft keeps
// its followers' match indexes to itself; the transport sees every answer,
// so it can tell a receipt which replicas hold an entry.
//
// A success for a request of term T with entries up to index I means the
// follower's log matches the leader's up to I (Raft's log matching), so it
// holds every entry up to I. Only acknowledgements of the current term
// count: an index of an older term may name entries a later leader replaced.
type Acks struct {
	mu struct {
		sync.Mutex
		m map[raft.ServerAddress]ackMark
	}
}

type ackMark struct{ term, index uint64 }

// observe records the answer to one AppendEntries request.
func (a *Acks) observe(target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if req == nil || resp == nil || !resp.Success || resp.Term != req.Term {
		return
	}
	idx := req.PrevLogEntry + uint64(len(req.Entries))
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mu.m == nil {
		a.mu.m = make(map[raft.ServerAddress]ackMark)
	}
	cur := a.mu.m[target]
	switch {
	case req.Term > cur.term:
		a.mu.m[target] = ackMark{req.Term, idx}
	case req.Term == cur.term && idx > cur.index:
		a.mu.m[target] = ackMark{req.Term, idx}
	}
}

// Reached lists, sorted, the peers whose acknowledgements in term reach
// index.
func (a *Acks) Reached(term, index uint64) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for p, m := range a.mu.m {
		if m.term == term && m.index >= index {
			out = append(out, string(p))
		}
	}
	slices.Sort(out)
	return out
}

// ackSource is a transport that records acknowledgements.
type ackSource interface{ Acks() *Acks }
