package kverrors

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTrip(t *testing.T) {
	for _, s := range sentinels {
		orig := fmt.Errorf("%w: detail for %s", s.err, s.err)
		st := ToStatus(orig)
		if got := status.Code(st); got != s.code {
			t.Errorf("%v: code %v, want %v", s.err, got, s.code)
		}
		back := FromStatus(st)
		if !errors.Is(back, s.err) {
			t.Errorf("%v: restored error %v does not match", s.err, back)
		}
		if back.Error() != orig.Error() {
			t.Errorf("message changed: %q -> %q", orig, back)
		}
		// A second hop (a forwarding node) must keep the same kind.
		if again := FromStatus(ToStatus(back)); !errors.Is(again, s.err) {
			t.Errorf("%v lost across two hops: %v", s.err, again)
		}
	}
}

func TestTransportErrors(t *testing.T) {
	if err := FromStatus(status.Error(codes.Unavailable, "connection error: dial tcp 127.0.0.1:1: connect: connection refused")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Unavailable -> %v", err)
	}
	if err := FromStatus(status.Error(codes.DeadlineExceeded, "context deadline exceeded")); !errors.Is(err, ErrIndeterminate) {
		t.Errorf("DeadlineExceeded -> %v", err)
	}
	if err := FromStatus(context.DeadlineExceeded); !errors.Is(err, ErrIndeterminate) {
		t.Errorf("context.DeadlineExceeded -> %v", err)
	}
	if got := status.Code(ToStatus(context.DeadlineExceeded)); got != codes.DeadlineExceeded {
		t.Errorf("ToStatus(deadline) code %v", got)
	}
}

func TestBrokenConnectionIsIndeterminate(t *testing.T) {
	err := FromStatus(status.Error(codes.Unavailable, "error reading from server: EOF"))
	if !errors.Is(err, ErrIndeterminate) {
		t.Fatalf("mid-call connection loss -> %v, want ErrIndeterminate", err)
	}
}
