// Package kverrors holds capkv's error vocabulary: the sentinel errors every
// layer wraps with %w, and the single place where they are mapped to and from
// gRPC status codes, so that a client sees the same error kind the storage or
// replication layer produced, across any number of forwarding hops.
//
// The distinction that matters most is between a definite failure (the
// operation did not take effect: ErrUnavailable, ErrInvalidArgument, ...) and
// ErrIndeterminate (it may or may not have taken effect). Retry logic and the
// Jepsen checkers depend on that difference.
package kverrors

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrNotFound: the key does not exist (or was deleted).
	ErrNotFound = errors.New("not found")
	// ErrInvalidArgument: the request is malformed (bad key, bad template, bad level, ...).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrTooLarge: a key or value exceeds the configured limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnknownKeyspace: the key's first segment names no keyspace.
	ErrUnknownKeyspace = errors.New("unknown keyspace")
	// ErrWrongMode: the operation is not offered by the keyspace's mode (CAS on ap).
	ErrWrongMode = errors.New("operation not offered by this keyspace's mode")
	// ErrConflict: a compare-and-set's expectation did not hold; nothing was written.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the operation definitely did not take effect because the
	// replicas it needs cannot be reached; it is safe to retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrIndeterminate: the operation may or may not have taken effect
	// (a deadline passed after it was sent). Retrying may apply it twice.
	ErrIndeterminate = errors.New("outcome unknown")
	// ErrStaleEpoch: the caller routed with an outdated cluster map.
	ErrStaleEpoch = errors.New("stale cluster map epoch")
	// ErrInternal: a bug or a storage failure.
	ErrInternal = errors.New("internal error")
)

// sentinels maps each sentinel to its gRPC code. Order matters for errors
// wrapping several sentinels: the first match wins.
var sentinels = []struct {
	err  error
	code codes.Code
}{
	{ErrNotFound, codes.NotFound},
	{ErrTooLarge, codes.InvalidArgument},
	{ErrUnknownKeyspace, codes.InvalidArgument},
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrWrongMode, codes.FailedPrecondition},
	{ErrConflict, codes.Aborted},
	{ErrStaleEpoch, codes.FailedPrecondition},
	{ErrUnavailable, codes.Unavailable},
	{ErrIndeterminate, codes.DeadlineExceeded},
	{ErrInternal, codes.Internal},
}

// reasonKey is the detail we put in the status message prefix so that the
// receiving side can recover the exact sentinel, not only the code.
func reason(err error) (string, codes.Code) {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.err.Error(), s.code
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrIndeterminate.Error(), codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return "", codes.Canceled
	}
	return "", codes.Unknown
}

// ToStatus converts an error to a gRPC status error. The message keeps the
// full error text; a trailer-free encoding of the sentinel ("kind") travels in
// the status message as "kind: text" so that FromStatus can restore it.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isOurs(err) {
		return err // already a status from a lower hop; pass it through unchanged
	}
	_, code := reason(err)
	return status.Error(code, err.Error())
}

// isOurs reports whether err wraps one of our sentinels (as opposed to being
// a bare status error produced by gRPC itself).
func isOurs(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return true
		}
	}
	return false
}

// statusErr is an error restored from a gRPC status: it prints the remote
// message and matches the sentinel the remote side wrapped.
type statusErr struct {
	msg      string
	sentinel error
	code     codes.Code
}

func (e *statusErr) Error() string { return e.msg }
func (e *statusErr) Unwrap() error { return e.sentinel }

// GRPCStatus lets a restored error be forwarded again as the same status.
func (e *statusErr) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// FromStatus converts an error returned by a gRPC call back into an error that
// matches the right sentinel with errors.Is. Transport failures become
// ErrUnavailable when the request cannot have been delivered, and
// ErrIndeterminate when it may have been.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	if isOurs(err) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return &statusErr{msg: err.Error(), sentinel: ErrIndeterminate, code: codes.DeadlineExceeded}
		}
		return err
	}
	msg := st.Message()
	// Prefer the exact sentinel named at the start of the message.
	for _, s := range sentinels {
		if s.code == st.Code() && hasPrefix(msg, s.err.Error()) {
			return &statusErr{msg: msg, sentinel: s.err, code: st.Code()}
		}
	}
	var sentinel error
	switch st.Code() {
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.InvalidArgument, codes.OutOfRange:
		sentinel = ErrInvalidArgument
	case codes.FailedPrecondition:
		sentinel = ErrWrongMode
	case codes.Aborted:
		sentinel = ErrConflict
	case codes.Unavailable:
		// gRPC reports Unavailable both when it could not connect (the
		// request was never sent) and when a connection broke mid-call (it
		// may have been executed). Only the first is a definite failure.
		if strings.Contains(msg, "dial") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") {
			sentinel = ErrUnavailable
		} else {
			sentinel = ErrIndeterminate
		}
	case codes.DeadlineExceeded, codes.Canceled:
		sentinel = ErrIndeterminate
	default:
		sentinel = ErrInternal
	}
	return &statusErr{msg: msg, sentinel: sentinel, code: st.Code()}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// FromNode reports whether a status message was written by a capkv node (it
// starts with one of the sentinels' texts) rather than by gRPC's transport.
func FromNode(msg string) bool {
	for _, s := range sentinels {
		if hasPrefix(msg, s.err.Error()) {
			return true
		}
	}
	return false
}
