package consistency

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestParseLevelAndResolve(t *testing.T) {
	for _, tc := range []struct {
		mode    Mode
		req, ks Level
		want    Level
		wantErr bool
	}{
		{CP, Default, Default, Linearizable, false},
		{CP, Stale, Default, Stale, false},
		{CP, Default, Stale, Stale, false},
		{CP, Quorum, Default, "", true},
		{AP, Default, Default, Quorum, false},
		{AP, One, Default, One, false},
		{AP, Default, All, All, false},
		{AP, Linearizable, Default, "", true},
	} {
		got, err := tc.mode.Resolve(tc.req, tc.ks)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s.Resolve(%q,%q) = %q, %v; want %q, err=%v", tc.mode, tc.req, tc.ks, got, err, tc.want, tc.wantErr)
		}
	}
	if _, err := ParseLevel("strong"); err == nil {
		t.Error("ParseLevel(strong) succeeded")
	}
	if l, err := ParseLevel(" QUORUM "); err != nil || l != Quorum {
		t.Errorf("ParseLevel(QUORUM) = %q, %v", l, err)
	}
	if _, err := ParseMode("ca"); err == nil {
		t.Error("ParseMode(ca) succeeded")
	}
}

func TestTimestampParts(t *testing.T) {
	ts := MakeTimestamp(1_700_000_000_123, 7)
	if ts.Physical() != 1_700_000_000_123 || ts.Logical() != 7 {
		t.Fatalf("parts = %d, %d", ts.Physical(), ts.Logical())
	}
	if MakeTimestamp(5, 0) <= MakeTimestamp(4, 65535) {
		t.Fatal("physical must dominate logical")
	}
}

// fakeWall is a wall clock the test moves, including backwards.
type fakeWall struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeWall) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeWall) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

func TestClockMonotonicUnderRandomWallAndRemote(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	w := &fakeWall{t: time.UnixMilli(1_700_000_000_000)}
	c := NewClock(w.now, 0)
	var last Timestamp
	for i := 0; i < 100_000; i++ {
		switch rng.IntN(4) {
		case 0:
			w.add(time.Duration(rng.IntN(5)-2) * time.Millisecond) // may go backwards
		case 1:
			remote := MakeTimestamp(w.now().UnixMilli()+int64(rng.IntN(10))-5, uint16(rng.IntN(65536)))
			if err := c.Update(remote); err != nil {
				t.Fatal(err)
			}
			if c.Last() <= remote {
				t.Fatalf("step %d: after Update(%d) last = %d", i, remote, c.Last())
			}
			if c.Last() <= last {
				t.Fatalf("step %d: clock went backwards", i)
			}
			last = c.Last()
		default:
			ts := c.Now()
			if ts <= last {
				t.Fatalf("step %d: Now() = %d not after %d", i, ts, last)
			}
			last = ts
		}
	}
}

func TestClockLogicalOverflowBorrowsMillisecond(t *testing.T) {
	w := &fakeWall{t: time.UnixMilli(1000)}
	c := NewClock(w.now, 0)
	if err := c.Update(MakeTimestamp(1000, 65535)); err != nil {
		t.Fatal(err)
	}
	if got := c.Last(); got != MakeTimestamp(1001, 0) {
		t.Fatalf("got %s", got)
	}
}

func TestClockRefusesFarFutureRemote(t *testing.T) {
	w := &fakeWall{t: time.UnixMilli(1_000_000)}
	c := NewClock(w.now, 500*time.Millisecond)
	before := c.Now()
	err := c.Update(MakeTimestamp(1_000_000+501, 0))
	if !errors.Is(err, ErrClockSkew) {
		t.Fatalf("err = %v, want ErrClockSkew", err)
	}
	if c.Last() != before {
		t.Fatal("refused update must not move the clock")
	}
	if err := c.Update(MakeTimestamp(1_000_000+400, 0)); err != nil {
		t.Fatal(err)
	}
}

// A wall clock that stands still (or a logical clock, nil wall) still
// gives every caller a distinct, increasing timestamp.
func TestClockConcurrentUnique(t *testing.T) {
	still := time.UnixMilli(1_000_000)
	c := NewClock(func() time.Time { return still }, 0)
	const workers, per = 8, 5000
	out := make([][]Timestamp, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				out[w] = append(out[w], c.Now())
			}
		}()
	}
	wg.Wait()
	seen := make(map[Timestamp]bool, workers*per)
	for _, s := range out {
		for i, ts := range s {
			if seen[ts] {
				t.Fatalf("duplicate timestamp %s", ts)
			}
			seen[ts] = true
			if i > 0 && ts <= s[i-1] {
				t.Fatal("per-goroutine order violated")
			}
		}
	}
}

// Without a wall clock the clock is logical: it still orders its own
// events and everything it was told about.
func TestClockWithoutWallIsLogical(t *testing.T) {
	c := NewClock(nil, 0)
	a, b := c.Now(), c.Now()
	if b <= a || a.Physical() != 0 {
		t.Fatalf("Now = %s then %s, want increasing with no physical part", a, b)
	}
	remote := MakeTimestamp(5_000, 3)
	if err := c.Update(remote); err != nil {
		t.Fatal(err)
	}
	if next := c.Now(); next <= remote {
		t.Fatalf("Now after Update(%s) = %s, want later", remote, next)
	}
}
