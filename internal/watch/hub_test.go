package watch

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestPrefixAndPartitionFilter(t *testing.T) {
	h := NewHub(0)
	a, _ := h.Subscribe("p1", "accounts/eu/42/")
	b, _ := h.Subscribe("p1", "")
	c, _ := h.Subscribe("p2", "")
	defer a.Close()
	defer b.Close()
	defer c.Close()
	h.Publish("p1", []Event{{Key: "accounts/eu/42/balance", Revision: 7}, {Key: "accounts/eu/420/x", Revision: 7}, {Key: "accounts/eu/42/note", Deleted: true, Revision: 8}})
	got := <-a.Events()
	if len(got) != 2 || got[0].Key != "accounts/eu/42/balance" || got[1].Key != "accounts/eu/42/note" || !got[1].Deleted {
		t.Fatalf("prefix subscriber got %+v", got)
	}
	if got := <-b.Events(); len(got) != 3 {
		t.Fatalf("whole-partition subscriber got %d events, want 3", len(got))
	}
	select {
	case e := <-c.Events():
		t.Fatalf("subscriber of another partition got %+v", e)
	default:
	}
	// A batch with nothing for a subscriber sends it nothing (no empty batches).
	h.Publish("p1", []Event{{Key: "accounts/us/1/x"}})
	select {
	case e := <-a.Events():
		t.Fatalf("got an empty or foreign batch %+v", e)
	default:
	}
}

func TestSlowSubscriberIsCutOffNotBlocking(t *testing.T) {
	h := NewHub(4)
	slow, _ := h.Subscribe("p", "")
	fast, _ := h.Subscribe("p", "")
	var got int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for batch := range fast.Events() {
			got += len(batch)
			if got == 100 {
				return
			}
		}
	}()
	for i := range 100 {
		h.Publish("p", []Event{{Key: fmt.Sprint(i), Revision: uint64(i)}}) // must never block
	}
	<-slow.Done()
	if !errors.Is(slow.Err(), ErrSlow) {
		t.Fatalf("slow subscriber ended with %v, want ErrSlow", slow.Err())
	}
	// The fast one may also have overflowed (4 slots, 100 publishes): only
	// assert on what the test controls, the slow one, unless fast survived.
	select {
	case <-fast.Done():
		if !errors.Is(fast.Err(), ErrSlow) {
			t.Fatalf("fast subscriber ended with %v", fast.Err())
		}
	default:
		wg.Wait()
		if got != 100 {
			t.Fatalf("fast subscriber got %d events, want 100", got)
		}
	}
	if h.Active() {
		// fast is still subscribed unless it overflowed
		fast.Close()
	}
	if h.Active() {
		t.Fatal("hub still active after every subscriber ended")
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	h := NewHub(0)
	s, _ := h.Subscribe("p", "")
	h.Close()
	<-s.Done()
	if !errors.Is(s.Err(), ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", s.Err())
	}
	if _, err := h.Subscribe("p", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscribe after close: %v", err)
	}
	s.Close() // idempotent
	h.Publish("p", []Event{{Key: "x"}})
}

func TestOrderUnderConcurrentPublishers(t *testing.T) {
	// One publisher per partition (as the apply paths are); many partitions
	// at once; each subscriber sees its partition's events in order.
	h := NewHub(10000)
	var subs []*Sub
	for p := range 4 {
		s, _ := h.Subscribe(fmt.Sprint(p), "")
		subs = append(subs, s)
	}
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Publish(fmt.Sprint(p), []Event{{Key: "k", Revision: uint64(i)}})
			}
		}()
	}
	wg.Wait()
	for p, s := range subs {
		for i := range 1000 {
			b := <-s.Events()
			if b[0].Revision != uint64(i) {
				t.Fatalf("partition %d: event %d has revision %d", p, i, b[0].Revision)
			}
		}
		s.Close()
	}
}

func BenchmarkPublishNoSubscribers(b *testing.B) {
	h := NewHub(0)
	ev := []Event{{Key: "accounts/eu/1/x"}}
	b.ReportAllocs()
	for b.Loop() {
		h.Publish("p", ev)
	}
}
