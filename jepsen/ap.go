package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication/ap"
	"github.com/capkv/capkv/ring"
)

// StaleBucket is the stale-read rate for reads a given time after the
// latest write that completed before them (in the spirit of PBS).
type StaleBucket struct {
	SinceWrite string  `json:"since_write"`
	Reads      int     `json:"reads"`
	Stale      int     `json:"stale"`
	Rate       float64 `json:"rate"`
}

// StaleReport counts reads that missed a write that had completed before
// they began (a newer one than the write whose value they returned).
type StaleReport struct {
	Reads   int                    `json:"reads"`
	Stale   int                    `json:"stale"`
	Buckets []StaleBucket          `json:"by_time_since_write"`
	ByLevel map[string]StaleReport `json:"by_level,omitempty"` // when reads used several levels
}

var staleEdges = []struct {
	label string
	below time.Duration
}{{"<10ms", 10 * time.Millisecond}, {"10-100ms", 100 * time.Millisecond}, {"100ms-1s", time.Second}, {">=1s", math.MaxInt64}}

// StaleReads analyses a register history. Values are unique per write, so a
// read names the write it saw; it is stale if some acknowledged write began
// after that write had completed, and itself completed before the read began.
func StaleReads(ops []Op) StaleReport {
	r := staleReads(ops, "")
	levels := map[string]bool{}
	for _, o := range ops {
		if o.Kind == Read {
			levels[o.Level] = true
		}
	}
	if len(levels) > 1 {
		r.ByLevel = map[string]StaleReport{}
		for l := range levels {
			r.ByLevel[l] = staleReads(ops, l)
		}
	}
	return r
}

// staleReads analyses the reads of one level ("" = all reads).
func staleReads(ops []Op, level string) StaleReport {
	type w struct{ call, ret int64 }
	writes := map[string]map[string]w{} // key -> value -> write
	var acked = map[string][]w{}
	for _, o := range ops {
		if o.Kind != Write && o.Kind != CAS {
			continue
		}
		ret := o.Return
		if o.Outcome != OK {
			ret = math.MaxInt64 // unknown: it may have taken effect any time
			if o.Outcome == Fail {
				continue
			}
		}
		if writes[o.Key] == nil {
			writes[o.Key] = map[string]w{}
		}
		writes[o.Key][o.Value] = w{o.Call, ret}
		if o.Outcome == OK {
			acked[o.Key] = append(acked[o.Key], w{o.Call, o.Return})
		}
	}
	r := StaleReport{Buckets: make([]StaleBucket, len(staleEdges))}
	for i, e := range staleEdges {
		r.Buckets[i].SinceWrite = e.label
	}
	for _, o := range ops {
		if o.Kind != Read || o.Outcome != OK || (level != "" && o.Level != level) {
			continue
		}
		// The latest acknowledged write completed before this read began.
		var latest int64 = -1
		for _, a := range acked[o.Key] {
			if a.ret < o.Call && a.ret > latest {
				latest = a.ret
			}
		}
		if latest < 0 {
			continue // nothing was known to be written yet
		}
		// With siblings the read saw several writes; it is only as stale as
		// the freshest of them.
		seen := w{call: -1, ret: -1}
		if o.Found {
			known := false
			for _, v := range append([]string{o.Read}, o.Siblings...) {
				if s, ok := writes[o.Key][v]; ok && (!known || s.ret > seen.ret) {
					seen, known = s, true
				}
			}
			if !known {
				continue // values from outside the history
			}
		}
		stale := false
		for _, a := range acked[o.Key] {
			if a.ret < o.Call && a.call > seen.ret {
				stale = true
				break
			}
		}
		age := time.Duration(o.Call - latest)
		for i, e := range staleEdges {
			if age < e.below {
				r.Buckets[i].Reads++
				if stale {
					r.Buckets[i].Stale++
				}
				break
			}
		}
		r.Reads++
		if stale {
			r.Stale++
		}
	}
	for i := range r.Buckets {
		if r.Buckets[i].Reads > 0 {
			r.Buckets[i].Rate = float64(r.Buckets[i].Stale) / float64(r.Buckets[i].Reads)
		}
	}
	return r
}

// APAvailability is the ap promise checked per side of each partition: a
// request sent to a node whose side still holds a replica of the key's
// partition must be answered (at level one).
type APAvailability struct {
	Checked  int      `json:"checked"`
	Refused  int      `json:"refused"`
	Examples []string `json:"examples,omitempty"`
}

// CheckAPAvailability counts refusals of requests that had a replica on
// their side. replicas returns a key's preference list.
func CheckAPAvailability(ops []Op, windows []Window, addrToID map[string]string, replicas func(key string) []string) APAvailability {
	var a APAvailability
	sidedOps(ops, windows, addrToID, replicas, func(w Window, o Op, _ []string, here int) {
		if here == 0 {
			return
		}
		a.Checked++
		if o.Outcome == Fail && !o.Conflict {
			a.Refused++
			if len(a.Examples) < 3 {
				a.Examples = append(a.Examples, fmt.Sprintf("%s during %q: %s", o, w.Fault, o.Error))
			}
		}
	})
	return a
}

// sidedOps calls fn for every operation that ran inside a partition window
// (past its grace) on a node of one of its sides, with the key's replicas and
// how many of them were on that side. Both per-side checkers judge these.
func sidedOps(ops []Op, windows []Window, addrToID map[string]string, replicas func(key string) []string,
	fn func(w Window, o Op, reps []string, here int)) {
	for _, w := range windows {
		if len(w.Sides) == 0 {
			continue
		}
		for _, o := range ops {
			if o.Call < w.Start+sideGrace || o.Return > w.End {
				continue
			}
			side := w.Sides[addrToID[o.Node]]
			if side == "" {
				continue
			}
			reps := replicas(o.Key)
			here := 0
			for _, id := range reps {
				if w.Sides[id] == side {
					here++
				}
			}
			fn(w, o, reps, here)
		}
	}
}

// Convergence is the result of waiting for ap replicas to become identical.
type Convergence struct {
	Converged  bool     `json:"converged"`
	Seconds    float64  `json:"seconds"`
	Partitions int      `json:"partitions"`
	Differing  []string `json:"differing,omitempty"`
	Repairs    int      `json:"repairs"`
	// KeysCompared counts keys whose clocks were compared byte for byte on
	// every replica once the Merkle roots agreed.
	KeysCompared int `json:"keys_compared"`
}

// Converge runs anti-entropy on keyspace until the Merkle roots of every
// partition's replicas agree, or the deadline passes.
func Converge(ctx context.Context, eps []string, opts []grpc.DialOption, keyspace string, deadline time.Duration) (Convergence, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts})
	if err != nil {
		return Convergence{}, err
	}
	defer c.Close()
	r := c.Ring()
	addr := map[string]string{}
	for _, n := range r.Topology().Nodes {
		addr[n.ID] = n.Addr
	}
	var res Convergence
	for ctx.Err() == nil {
		if admin, err := c.Admin(); err == nil {
			if _, err := admin.Repair(ctx, &api.RepairRequest{Keyspace: keyspace}); err == nil {
				res.Repairs++
			}
		}
		res.Differing, res.Partitions = nil, 0
		for _, p := range r.Partitions(keyspace) {
			if p.Err != "" {
				continue
			}
			res.Partitions++
			roots := map[uint64]bool{}
			for _, id := range p.Replicas {
				root, err := digestRoot(ctx, addr[id], opts, p.ID.String())
				if err != nil {
					roots[uint64(len(roots))+1<<63] = true // unreachable counts as differing
					continue
				}
				roots[root] = true
			}
			if len(roots) != 1 {
				res.Differing = append(res.Differing, p.ID.String())
			}
		}
		if len(res.Differing) == 0 {
			res.Seconds = time.Since(start).Seconds()
			// Roots agree; confirm with the full contents, key by key.
			n, differ, err := compareContents(ctx, r.Partitions(keyspace), addr, opts)
			if err != nil {
				return res, err
			}
			res.KeysCompared, res.Differing = n, differ
			res.Converged = len(differ) == 0
			return res, nil
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	sort.Strings(res.Differing)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func digestRoot(ctx context.Context, addr string, opts []grpc.DialOption, partition string) (uint64, error) {
	cc, err := dial.Conn(addr, opts...)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d, err := api.NewReplicaClient(cc).Digest(dctx, &api.DigestRequest{Partition: partition})
	if err != nil {
		return 0, kverrors.FromStatus(err)
	}
	return ap.Root(d.GetLeaves()), nil
}

// compareContents fetches every leaf of every partition from each replica
// and reports the partitions whose replicas do not hold identical clocks.
func compareContents(ctx context.Context, parts []ring.PartitionInfo, addr map[string]string, opts []grpc.DialOption) (int, []string, error) {
	keys := 0
	var differ []string
	for _, p := range parts {
		if p.Err != "" {
			continue
		}
		var first map[string][]byte
		same := true
		for i, id := range p.Replicas {
			all, err := fetchAll(ctx, addr[id], opts, p.ID.String())
			if err != nil {
				return keys, differ, err
			}
			if i == 0 {
				first = all
				keys += len(all)
				continue
			}
			if len(all) != len(first) {
				same = false
			}
			for k, v := range all {
				if !bytes.Equal(first[k], v) {
					same = false
				}
			}
		}
		if !same {
			differ = append(differ, p.ID.String())
		}
	}
	return keys, differ, nil
}

func fetchAll(ctx context.Context, addr string, opts []grpc.DialOption, partition string) (map[string][]byte, error) {
	cc, err := dial.Conn(addr, opts...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	out := map[string][]byte{}
	for leaf := range uint32(ap.Leaves) {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := api.NewReplicaClient(cc).Leaf(lctx, &api.LeafRequest{Partition: partition, Leaf: leaf})
		cancel()
		if err != nil {
			return nil, kverrors.FromStatus(err)
		}
		for _, e := range resp.GetEntries() {
			out[e.GetKey()] = e.GetClock()
		}
	}
	return out, nil
}

// CPCutOff checks the cp promise per key: a request sent to a node whose
// side of a partition holds no majority of the key's replicas must not
// succeed (its Raft group cannot commit or confirm leadership there). Sides
// are those of the cluster split; a partition's replicas decide.
type CPCutOff struct {
	Checked  int      `json:"checked"`
	Served   int      `json:"served"`
	Examples []string `json:"examples,omitempty"`
}

// CheckCPCutOff counts successes of requests cut off from their key's
// replica majority. replicas returns a key's replica set.
func CheckCPCutOff(ops []Op, windows []Window, addrToID map[string]string, replicas func(key string) []string) CPCutOff {
	var r CPCutOff
	sidedOps(ops, windows, addrToID, replicas, func(w Window, o Op, reps []string, here int) {
		if len(reps) == 0 || here > len(reps)/2 {
			return // this side may serve the key
		}
		r.Checked++
		if o.Outcome == OK {
			r.Served++
			if len(r.Examples) < 3 {
				r.Examples = append(r.Examples, fmt.Sprintf("%s via %s during %q (%d of %d replicas on its side)", o, addrToID[o.Node], w.Fault, here, len(reps)))
			}
		}
	})
	return r
}
