package cp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/watch"
)

type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "test" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// Applied entries are published in log order with their index as revision;
// a snapshot install ends the partition's watches (their clients must know
// they missed what the snapshot skipped).
func TestFSMPublishesAndSnapshotEndsWatches(t *testing.T) {
	cmd := func(k string) []byte {
		return EncodeCommand(nil, Command{Op: OpPut, Key: k, Value: []byte("v"), Timestamp: consistency.Timestamp(1)})
	}
	leader, err := NewFSM(newMemStorage())
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		leader.ApplyBatch([]*raft.Log{{Index: i, Type: raft.LogCommand, Data: cmd(fmt.Sprintf("ks/k%d", i))}})
	}
	hub := watch.NewHub(0)
	f, err := NewFSM(newMemStorage())
	if err != nil {
		t.Fatal(err)
	}
	f.watch, f.partition = hub, "p"
	sub, err := hub.Subscribe("p", "ks/")
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: cmd("ks/k1")}})
	if b := <-sub.Events(); len(b) != 1 || b[0].Key != "ks/k1" || b[0].Revision != 1 {
		t.Fatalf("first event %+v", b)
	}
	snap, err := leader.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s bufSink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(&s.Buffer)); err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{{Index: 6, Type: raft.LogCommand, Data: cmd("ks/k6")}})
	select {
	case <-sub.Done():
		if !errors.Is(sub.Err(), watch.ErrReset) {
			t.Fatalf("watch ended with %v, want ErrReset", sub.Err())
		}
	case b := <-sub.Events():
		t.Fatalf("watch went on at %s@%d after a snapshot skipped revisions 2-5", b[0].Key, b[0].Revision)
	}
}
