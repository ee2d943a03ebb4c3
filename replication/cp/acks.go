package cp

import (
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Acks records what a leader's transport has seen its followers
// acknowledge: per peer, the highest log index a successful AppendEntries
// response confirmed and the send time of the newest request it confirmed,
// with the term of the requests. hashicorp/raft keeps its followers' match
// indexes and contact times to itself; the transport sees every answer, so
// it can tell a receipt which replicas hold an entry, and a read whether
// the leader holds a lease.
//
// A success for a request of term T with entries up to index I means the
// follower's log matches the leader's up to I (Raft's log matching), so it
// holds every entry up to I. Only acknowledgements of the current term
// count: an index of an older term may name entries a later leader replaced.
type Acks struct {
	mu struct {
		sync.Mutex
		m map[raft.ServerAddress]ackMark
		// maxTerm is the newest request term answered; fenced is a
		// term in which leases are off (a leadership transfer began).
		maxTerm, fenced uint64
	}
}

type ackMark struct {
	term, index uint64
	sent        time.Time // of the newest request of term the peer confirmed
}

// observe records the answer to one AppendEntries request sent at sent.
func (a *Acks) observe(target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, sent time.Time) {
	if req == nil || resp == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.maxTerm = max(a.mu.maxTerm, req.Term)
	if !resp.Success || resp.Term != req.Term {
		return
	}
	idx := req.PrevLogEntry + uint64(len(req.Entries))
	if a.mu.m == nil {
		a.mu.m = make(map[raft.ServerAddress]ackMark)
	}
	cur := a.mu.m[target]
	switch {
	case req.Term > cur.term:
		a.mu.m[target] = ackMark{req.Term, idx, sent}
	case req.Term == cur.term:
		cur.index = max(cur.index, idx)
		if sent.After(cur.sent) {
			cur.sent = sent
		}
		a.mu.m[target] = cur
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

// fence turns leases off in the newest term seen. A TimeoutNow makes its
// target campaign with the leadership-transfer flag, and followers grant
// such votes even while they know this leader: the lease argument no longer
// holds for the rest of the term.
func (a *Acks) fence() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mu.fenced = a.mu.maxTerm
}

// quorumContact is the read lease's base: the latest time t such that
// voters forming a majority of servers, self (counted as now) included,
// confirmed requests of term sent at or after t. always is true when self
// is the only voter. ok is false when no such time exists (too few
// acknowledgements in term, self not a voter, or term fenced).
func (a *Acks) quorumContact(term uint64, self raft.ServerID, servers []raft.Server) (t time.Time, always, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if term == 0 || term <= a.mu.fenced {
		return time.Time{}, false, false
	}
	var buf [8]time.Time
	times := buf[:0]
	voters, selfVoter := 0, false
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == self {
			selfVoter = true
			continue
		}
		if m, found := a.mu.m[s.Address]; found && m.term == term {
			times = append(times, m.sent)
		}
	}
	need := voters / 2 // besides self, of a majority voters/2+1
	switch {
	case !selfVoter:
		return time.Time{}, false, false
	case need == 0:
		return time.Time{}, true, true
	case len(times) < need:
		return time.Time{}, false, false
	}
	slices.SortFunc(times, func(x, y time.Time) int { return y.Compare(x) }) // newest first
	return times[need-1], false, true
}

// ackSource is a transport that records acknowledgements.
type ackSource interface{ Acks() *Acks }
