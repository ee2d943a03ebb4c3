package fault

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTableRules(t *testing.T) {
	f := NewTable()
	ctx := context.Background()
	if err := f.Deliver(ctx, "a", "b"); err != nil {
		t.Fatalf("empty table: %v", err)
	}
	f.Set("a", "b", Rule{Drop: true})
	if err := f.Deliver(ctx, "a", "b"); !errors.Is(err, ErrDropped) {
		t.Fatalf("drop a->b: got %v, want ErrDropped", err)
	}
	if err := f.Deliver(ctx, "b", "a"); err != nil {
		t.Fatalf("one-way rule cut b->a too: %v", err)
	}
	f.Partition([]string{"a"}, []string{"c"}, Rule{Blackhole: true})
	bctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := f.Deliver(bctx, "c", "a"); !errors.Is(err, ErrDropped) || bctx.Err() == nil {
		t.Fatalf("blackhole returned %v before the deadline (%v)", err, bctx.Err())
	}
	if got, want := f.String(), "a->b: drop, a->c: blackhole, c->a: blackhole"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	f.Heal()
	if got := f.String(); got != "no faults" {
		t.Fatalf("after Heal: %q", got)
	}
}

func TestDelayHonoursDeadline(t *testing.T) {
	f := NewTable()
	f.Set("a", "b", Rule{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := f.Deliver(ctx, "a", "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("delay past the deadline: got %v", err)
	}
}
