package ap

import (
	"encoding/binary"
	"sync"
	"testing"
)

// The lease hands out increasing counters above every floor, reserves
// rarely (once per half block, ahead of need), and a new lease on the same
// store (a restart) starts above everything the old one handed out.
func TestDotLeaseIncreasesAcrossRestarts(t *testing.T) {
	st := openStore(t)
	defer st.Close()
	l := newDotLease(st)
	var mu sync.Mutex
	var got []uint64
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				floor := uint64(0)
				if i == 250 && g == 0 {
					floor = 3 * dotBlock // a floor past the bound: this mint waits for a reservation
				}
				c, err := l.mint(floor)
				if err != nil {
					t.Error(err)
					return
				}
				if c <= floor {
					t.Errorf("mint(%d) = %d, not above the floor", floor, c)
				}
				mu.Lock()
				got = append(got, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	l.close()
	seen, highest := map[uint64]bool{}, uint64(0)
	for _, c := range got {
		if seen[c] {
			t.Fatalf("counter %d handed out twice", c)
		}
		seen[c], highest = true, max(highest, c)
	}
	rec, found, err := st.Replica(dotPartition).Get(dotLeaseKey)
	if err != nil || !found {
		t.Fatalf("no stored bound (found=%v, err=%v)", found, err)
	}
	if bound := binary.BigEndian.Uint64(rec.Value); bound < highest {
		t.Fatalf("stored bound %d below the highest counter handed out, %d", bound, highest)
	}
	again := newDotLease(st)
	c, err := again.mint(0)
	if err != nil {
		t.Fatal(err)
	}
	again.close()
	if c <= highest {
		t.Fatalf("after a restart the first counter is %d, not above %d handed out before", c, highest)
	}
}

// A reservation that cannot be written fails the mint that needs it.
func TestDotLeaseFailsWhenItCannotReserve(t *testing.T) {
	st := openStore(t)
	l := newDotLease(st)
	if _, err := l.mint(0); err != nil {
		t.Fatal(err)
	}
	l.close()
	st.Close()
	if c, err := l.mint(2 * dotBlock); err == nil {
		t.Fatalf("mint past the bound on a closed store = %d, want an error", c)
	}
	l.close()
}
