package ap

import (
	"slices"
	"testing"

	"github.com/capkv/capkv/consistency"
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
