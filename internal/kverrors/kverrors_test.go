package kverrors

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonOf is the ErrorInfo reason a status carries in our domain ("" if none).
func reasonOf(t *testing.T, err error) string {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}

func TestRoundTrip(t *testing.T) {
	for _, s := range sentinels {
		// The sentinel is not at the start of the text: nothing is parsed.
		orig := fmt.Errorf("partition p3: %w: detail for %s", s.err, s.err)
		st := ToStatus(orig)
		if got := status.Code(st); got != s.code {
			t.Errorf("%v: code %v, want %v", s.err, got, s.code)
		}
		if got := reasonOf(t, st); got != s.reason {
			t.Errorf("%v: reason %q, want %q", s.err, got, s.reason)
		}
		if got := status.Convert(st).Message(); got != orig.Error() {
			t.Errorf("%v: status message %q, want the full text %q", s.err, got, orig)
		}
		back := FromStatus(st)
		if !errors.Is(back, s.err) {
			t.Errorf("%v: restored error %v does not match", s.err, back)
		}
		for _, other := range sentinels {
			if other.err != s.err && errors.Is(back, other.err) {
				t.Errorf("%v: restored error also matches %v", s.err, other.err)
			}
		}
		if back.Error() != orig.Error() {
			t.Errorf("message changed: %q -> %q", orig, back)
		}
		if !FromNode(st) || !FromNode(back) {
			t.Errorf("%v: FromNode false for a node's status", s.err)
		}
		// Forwarded unchanged, a node returns the same status.
		again := ToStatus(back)
		if status.Code(again) != s.code || reasonOf(t, again) != s.reason || status.Convert(again).Message() != orig.Error() {
			t.Errorf("%v: forwarded unchanged as %v", s.err, again)
		}
		// Forwarded with context over a second hop: the same kind.
		hop := FromStatus(ToStatus(fmt.Errorf("via n2: %w", back)))
		if !errors.Is(hop, s.err) || hop.Error() != "via n2: "+orig.Error() {
			t.Errorf("%v lost across two hops: %v", s.err, hop)
		}
	}
}

func TestToStatusWithoutSentinel(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{context.DeadlineExceeded, codes.DeadlineExceeded, "INDETERMINATE"},
		{fmt.Errorf("apply: %w", context.Canceled), codes.Canceled, "INDETERMINATE"},
		{errors.New("boom"), codes.Unknown, "INTERNAL"},
	} {
		st := ToStatus(c.err)
		if status.Code(st) != c.code || reasonOf(t, st) != c.reason {
			t.Errorf("ToStatus(%v) = %v (reason %q), want code %v reason %q", c.err, st, reasonOf(t, st), c.code, c.reason)
		}
	}
	// gRPC's own status (no kind) passes through as it is.
	bare := status.Error(codes.Unimplemented, "unknown method")
	if got := ToStatus(bare); got != bare {
		t.Errorf("ToStatus changed a bare status: %v", got)
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil || FromTransport(nil, true) != nil {
		t.Error("nil is not nil")
	}
}

// A status without our detail is a transport or gRPC failure whatever its
// code or text says; without delivery facts it may have been delivered.
func TestBareStatusIsIndeterminate(t *testing.T) {
	for _, raw := range []error{
		status.Error(codes.Unavailable, "connection error: dial tcp 127.0.0.1:1: connect: connection refused"),
		status.Error(codes.Unavailable, "error reading from server: EOF"),
		status.Error(codes.NotFound, "not found: looks like ours but is not"),
		status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
		context.DeadlineExceeded,
	} {
		err := FromStatus(raw)
		if !errors.Is(err, ErrIndeterminate) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
			t.Errorf("FromStatus(%v) = %v, want only ErrIndeterminate", raw, err)
		}
		if FromNode(raw) || FromNode(err) {
			t.Errorf("FromNode(%v) is true", raw)
		}
		if err.Error() != raw.Error() || status.Code(err) != status.Code(raw) {
			t.Errorf("FromStatus(%v) = %q code %v: text or code changed", raw, err, status.Code(err))
		}
	}
	if err := errors.New("client is closed"); FromStatus(err) != err {
		t.Error("a non-gRPC error was changed")
	}
}

func TestFromTransport(t *testing.T) {
	raw := status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing\"")
	for _, c := range []struct {
		sent bool
		want error
	}{{false, ErrUnavailable}, {true, ErrIndeterminate}} {
		err := FromTransport(raw, c.sent)
		if !errors.Is(err, c.want) || !errors.Is(err, raw) {
			t.Errorf("sent=%t: %v does not match %v and the original", c.sent, err, c.want)
		}
		if err.Error() != raw.Error() || status.Code(err) != codes.Unavailable || FromNode(err) {
			t.Errorf("sent=%t: %q, code %v, FromNode %t", c.sent, err, status.Code(err), FromNode(err))
		}
		if FromStatus(err) != err {
			t.Errorf("sent=%t: FromStatus reclassified a classified error", c.sent)
		}
		// A node returning it unchanged keeps the code and adds the kind;
		// the next hop restores the same kind.
		fwd := ToStatus(err)
		if status.Code(fwd) != codes.Unavailable || !errors.Is(FromStatus(fwd), c.want) || !FromNode(fwd) {
			t.Errorf("sent=%t: forwarded as %v (reason %q)", c.sent, fwd, reasonOf(t, fwd))
		}
	}
	// Errors that have a kind keep it: a node's status, an error made on
	// this side around the call (the node's fault hooks).
	node := ToStatus(fmt.Errorf("%w: no majority", ErrUnavailable))
	if got := FromTransport(node, true); got != node {
		t.Errorf("a node's status was reclassified: %v", got)
	}
	local := fmt.Errorf("%w: answer lost", ErrIndeterminate)
	if got := FromTransport(local, false); got != local {
		t.Errorf("a local error with a kind was reclassified: %v", got)
	}
}

// A newer node may send a reason this build does not know: it is the
// node's answer, its outcome unknown here, and it is forwarded as it came.
func TestUnknownReason(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "rate limited").WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: "RATE_LIMITED"})
	if err != nil {
		t.Fatal(err)
	}
	got := FromStatus(st.Err())
	if !errors.Is(got, ErrIndeterminate) || !FromNode(got) || got.Error() != "rate limited" {
		t.Fatalf("unknown reason -> %v (FromNode %t)", got, FromNode(got))
	}
	if fwd := ToStatus(got); status.Code(fwd) != codes.ResourceExhausted || reasonOf(t, fwd) != "RATE_LIMITED" {
		t.Fatalf("forwarded as %v (reason %q)", fwd, reasonOf(t, fwd))
	}
	// Another domain's ErrorInfo is not ours.
	other, _ := status.New(codes.NotFound, "x").WithDetails(&errdetails.ErrorInfo{Domain: "example.com", Reason: "NOT_FOUND"})
	if FromNode(other.Err()) || errors.Is(FromStatus(other.Err()), ErrNotFound) {
		t.Fatal("another domain's detail was read as ours")
	}
}
