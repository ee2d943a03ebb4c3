package ap

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

// A hint for a node the partition has moved away from goes to the
// partition's current replicas (and joining nodes), not to the old node,
// which would only hand it over again (or, once it has dropped the
// partition, keep it where nobody reads it).
func TestHintTargetsFollowAMove(t *testing.T) {
	rg, err := ring.New(ring.Topology{Epoch: 5,
		Nodes:       []ring.Node{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}, {ID: "e"}},
		Keyspaces:   []ring.KeyspaceConfig{{Name: "sessions", Mode: consistency.AP, Partitions: 1}},
		Assignments: map[string][]string{"sessions/*/0": {"a", "b", "c"}},
		Joining:     map[string][]string{"sessions/*/0": {"e"}},
	}, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := &runner{r: &Replicator{cfg: Config{Ring: func() *ring.Ring { return rg }}}}
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"a", []string{"a"}},                // still a replica
		{"e", []string{"e"}},                // joining: it takes writes
		{"d", []string{"a", "b", "c", "e"}}, // moved away
	} {
		got := u.hintTargets(Hint{Target: tc.target, Partition: "sessions/*/0", Key: "sessions/x"})
		if !slices.Equal(got, tc.want) {
			t.Errorf("hint for %s goes to %v, want %v", tc.target, got, tc.want)
		}
	}
	if got := u.hintTargets(Hint{Target: "d", Partition: "gone/*/0"}); !slices.Equal(got, []string{"d"}) {
		t.Errorf("hint of an unknown keyspace goes to %v, want its own target", got)
	}
}

// A node stores a replica write only for partitions it replicates or
// receives; once a partition moved away, a coordinator still on the old
// map is refused (and keeps a hint instead). Hints it is asked to keep for
// others, and partitions it cannot judge, are accepted.
func TestReplicaStoreRefusedAfterAMove(t *testing.T) {
	rg, err := ring.New(ring.Topology{Epoch: 5,
		Nodes:       []ring.Node{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}},
		Keyspaces:   []ring.KeyspaceConfig{{Name: "sessions", Mode: consistency.AP, Partitions: 1}},
		Assignments: map[string][]string{"sessions/*/0": {"a", "b", "c"}},
	}, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	r := New(Config{Self: "d", Store: st, Clock: consistency.NewClock(nil, 0), Ring: func() *ring.Ring { return rg }})
	v := consistency.DVV{}
	req := func(hintFor string, partition string) *api.ReplicaStoreRequest {
		return &api.ReplicaStoreRequest{Partition: partition, Key: "sessions/x", Clock: v.Encode(nil), HintFor: hintFor}
	}
	if _, err := r.Server().Store(context.Background(), req("", "sessions/*/0")); !errors.Is(err, kverrors.ErrStaleEpoch) {
		t.Fatalf("store on a node that no longer replicates the partition: %v, want stale epoch", err)
	}
	if _, err := r.Server().Store(context.Background(), req("a", "sessions/*/0")); err != nil {
		t.Fatalf("a hint kept for a replica: %v", err)
	}
	if _, err := r.Server().Store(context.Background(), req("", "other/*/0")); err != nil {
		t.Fatalf("a partition of a keyspace this node does not know: %v", err)
	}
}
