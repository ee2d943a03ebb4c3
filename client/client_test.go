package client

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/kverrors"
)

// A retried call whose earlier attempt may have been applied does not
// report a later attempt's definite failure as the call's.
func TestSettleKeepsAnUnknownOutcome(t *testing.T) {
	unknown := fmt.Errorf("%w: connection to n1 broke", ErrIndeterminate)
	unreachable := fmt.Errorf("%w: n2 refused the connection", ErrUnavailable)
	stale := errors.Join(fmt.Errorf("%w: epoch 3 < 4", ErrStaleEpoch), errors.New("refresh failed"))
	conflict := fmt.Errorf("%w: version 7", ErrConflict)
	for _, c := range []struct {
		last, unknown error
		want          error
	}{
		{unreachable, nil, ErrUnavailable},
		{unreachable, unknown, ErrIndeterminate},
		{stale, unknown, ErrIndeterminate},
		{unknown, unknown, ErrIndeterminate},
		{conflict, unknown, ErrConflict}, // a node's answer about the data stands
	} {
		got := settle(c.last, c.unknown)
		if !errors.Is(got, c.want) {
			t.Errorf("settle(%v, %v) = %v, want %v", c.last, c.unknown, got, c.want)
		}
		if c.want == ErrIndeterminate && errors.Is(got, ErrUnavailable) {
			t.Errorf("settle(%v, %v) = %v also claims a definite failure", c.last, c.unknown, got)
		}
	}
}

// A node's own Unavailable (why it refused) outranks a later attempt's
// failure to reach another node; nothing else is replaced.
func TestInformativeKeepsTheNodesRefusal(t *testing.T) {
	refusal := kverrors.FromStatus(kverrors.ToStatus(fmt.Errorf("%w: partition p0: no majority", ErrUnavailable)))
	dialErr := kverrors.FromTransport(status.Error(codes.Unavailable, "dial tcp 127.0.0.1:1: connection refused"), false)
	unknown := kverrors.FromTransport(status.Error(codes.Unavailable, "connection reset"), true)
	conflict := kverrors.FromStatus(kverrors.ToStatus(fmt.Errorf("%w: version 7", ErrConflict)))
	for _, c := range []struct {
		last, refusal, want error
	}{
		{dialErr, refusal, refusal},
		{dialErr, nil, dialErr},
		{refusal, refusal, refusal},
		{unknown, refusal, unknown}, // an unknown outcome is never hidden
		{conflict, refusal, conflict},
	} {
		if got := informative(c.last, c.refusal); got != c.want {
			t.Errorf("informative(%v, %v) = %v, want %v", c.last, c.refusal, got, c.want)
		}
	}
}
