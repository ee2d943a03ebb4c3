// Package kverrors holds capkv's error vocabulary: the sentinel errors every
// layer wraps with %w, and the single place where they are mapped to and from
// gRPC statuses, so that a client sees the same error kind the storage or
// replication layer produced, across any number of forwarding hops.
//
// The distinction that matters most is between a definite failure (the
// operation did not take effect: ErrUnavailable, ErrInvalidArgument, ...) and
// ErrIndeterminate (it may or may not have taken effect). Retry logic and the
// Jepsen checkers depend on that difference.
//
// # The wire contract
//
// A capkv server turns a handler's error into a status with ToStatus, once.
// The status carries the error kind as data: an
// errdetails.ErrorInfo{Domain: "capkv", Reason: "UNAVAILABLE", ...} in its
// details (see the sentinels table for every reason). Its code is the kind's
// gRPC code, for generic gRPC clients and metrics, and its message is the
// full error text, for people; neither is parsed back.
//
// A capkv client turns a call's error back with FromStatus. A status with
// our ErrorInfo was produced by a capkv node (FromNode reports it) and
// restores exactly the sentinel the node wrapped. Any other failed call is a
// transport or gRPC failure, and its kind is a fact about delivery, not about
// the text: ErrUnavailable when the request never left this process,
// ErrIndeterminate when it may have reached the server. The connections of
// package dial record those facts per call and classify with FromTransport;
// FromStatus, which lacks them, assumes the request may have been delivered.
//
// Restored and classified errors print the text they arrived with and keep
// their gRPC status (a GRPCStatus method), so a node that returns one
// unchanged forwards the same status, and one that wraps it with context
// ("via n2: %w") forwards the same kind.
package kverrors

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
	// ErrConflict: a compare-and-set's expectation did not hold, or an ap write
	// would grow a key's siblings past its keyspace's cap; nothing was written.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the operation definitely did not take effect, because
	// the replicas it needs cannot be reached or because the request never
	// left the caller; it is safe to retry.
	ErrUnavailable = errors.New("unavailable")
	// ErrIndeterminate: the operation may or may not have taken effect
	// (a deadline passed or a connection broke after it was sent). Retrying
	// may apply it twice.
	ErrIndeterminate = errors.New("outcome unknown")
	// ErrStaleEpoch: the caller routed with an outdated cluster map.
	ErrStaleEpoch = errors.New("stale cluster map epoch")
	// ErrUnauthenticated: the TLS settings of the two ends disagree (one
	// side plaintext) or a certificate was refused (another CA, expired).
	ErrUnauthenticated = errors.New("not authenticated")
	// ErrPermissionDenied: the caller's identity may not make this call
	// (a node-to-node call without a node certificate).
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInternal: a bug or a storage failure.
	ErrInternal = errors.New("internal error")
)

// Domain is the ErrorInfo domain of capkv's error kinds.
const Domain = "capkv"

// kind is one row of the mapping: a sentinel, the ErrorInfo reason it
// travels as, and the gRPC code its statuses get.
type kind struct {
	err    error
	reason string
	code   codes.Code
}

// sentinels is the mapping, in one place. Order matters for errors wrapping
// several sentinels: the first match wins.
var sentinels = []kind{
	{ErrNotFound, "NOT_FOUND", codes.NotFound},
	{ErrTooLarge, "TOO_LARGE", codes.InvalidArgument},
	{ErrUnknownKeyspace, "UNKNOWN_KEYSPACE", codes.InvalidArgument},
	{ErrInvalidArgument, "INVALID_ARGUMENT", codes.InvalidArgument},
	{ErrWrongMode, "WRONG_MODE", codes.FailedPrecondition},
	{ErrConflict, "CONFLICT", codes.Aborted},
	{ErrStaleEpoch, "STALE_EPOCH", codes.FailedPrecondition},
	{ErrUnavailable, "UNAVAILABLE", codes.Unavailable},
	{ErrIndeterminate, "INDETERMINATE", codes.DeadlineExceeded},
	{ErrUnauthenticated, "UNAUTHENTICATED", codes.Unauthenticated},
	{ErrPermissionDenied, "PERMISSION_DENIED", codes.PermissionDenied},
	{ErrInternal, "INTERNAL", codes.Internal},
}

// kindOf finds the kind of an error that wraps a sentinel or a status with
// our detail.
func kindOf(err error) (kind, bool) {
	for _, k := range sentinels {
		if errors.Is(err, k.err) {
			return k, true
		}
	}
	if st, ok := carried(err); ok {
		return kindOfStatus(st)
	}
	return kind{}, false
}

// kindOfStatus reads our ErrorInfo from a status's details. A reason this
// build does not know (a newer node's) is indeterminate: nothing can be
// assumed about what the node did.
func kindOfStatus(st *status.Status) (kind, bool) {
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != Domain {
			continue
		}
		for _, k := range sentinels {
			if k.reason == info.GetReason() {
				return k, true
			}
		}
		return kind{ErrIndeterminate, info.GetReason(), st.Code()}, true
	}
	return kind{}, false
}

// carried returns the gRPC status err is or wraps, if any.
func carried(err error) (*status.Status, bool) {
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) || gs.GRPCStatus() == nil {
		return nil, false
	}
	return gs.GRPCStatus(), true
}

// withKind returns a status of code with msg and k's ErrorInfo.
func withKind(code codes.Code, msg string, k kind) *status.Status {
	st := status.New(code, msg)
	if ds, err := st.WithDetails(&errdetails.ErrorInfo{Reason: k.reason, Domain: Domain}); err == nil {
		return ds
	}
	// WithDetails fails only for code OK, which no kind has.
	return st
}

// ToStatus converts a handler's error to the gRPC status error the caller
// receives: its kind as an ErrorInfo detail, its kind's code, its full text.
// An error that is itself a status (restored or classified by this package)
// keeps its code and text, so a node that returns a downstream error
// unchanged forwards the same status. A bare status with no kind is gRPC's
// own and passes through; a context error is indeterminate; any other error
// wraps no sentinel, which the contract makes a bug: ErrInternal, with code
// Unknown as gRPC gives a handler's plain error.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	k, ok := kindOf(err)
	gs, isStatus := err.(interface{ GRPCStatus() *status.Status })
	switch {
	case ok && isStatus && gs.GRPCStatus() != nil:
		if _, has := kindOfStatus(gs.GRPCStatus()); has {
			return err
		}
		st := gs.GRPCStatus()
		return withKind(st.Code(), st.Message(), k).Err()
	case ok:
		return withKind(k.code, err.Error(), k).Err()
	case errors.Is(err, context.DeadlineExceeded):
		return withKind(codes.DeadlineExceeded, err.Error(), indeterminate).Err()
	case errors.Is(err, context.Canceled):
		// The node gave up (it is shutting down, or its caller left) with
		// the operation possibly under way.
		return withKind(codes.Canceled, err.Error(), indeterminate).Err()
	}
	if _, isStatus := carried(err); isStatus {
		return err
	}
	return withKind(codes.Unknown, err.Error(), internal).Err()
}

// The rows ToStatus needs by name; looked up at init, so a row missing from
// the table fails every test instead of one request.
var indeterminate, internal = rowOf(ErrIndeterminate), rowOf(ErrInternal)

func rowOf(sentinel error) kind {
	for _, k := range sentinels {
		if k.err == sentinel {
			return k
		}
	}
	panic("kverrors: " + sentinel.Error() + " is missing from the sentinels table")
}

// kindErr is an error whose kind this package decided: restored from a
// node's status, or classified from a transport failure. It prints the text
// it arrived with, matches its sentinel and the error it came from, and
// carries its gRPC status for forwarding.
type kindErr struct {
	text     string
	sentinel error
	st       *status.Status
	cause    error // the gRPC error of a transport failure; nil when restored
}

func (e *kindErr) Error() string { return e.text }

func (e *kindErr) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}

// GRPCStatus lets the error be forwarded again as the same status.
func (e *kindErr) GRPCStatus() *status.Status { return e.st }

// FromStatus converts the error of a gRPC call back into an error that
// matches the right sentinel with errors.Is. A status with our detail
// restores the node's sentinel. Any other gRPC failure that reaches it
// unclassified (a connection not made by package dial) is indeterminate,
// since nothing is known about delivery; so is a bare context deadline.
// Errors that already have a kind, and non-gRPC errors, are returned as is.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range sentinels {
		if errors.Is(err, k.err) {
			return err
		}
	}
	if st, ok := carried(err); ok {
		k, ours := kindOfStatus(st)
		if !ours {
			return FromTransport(err, true)
		}
		text := err.Error()
		if _, top := err.(interface{ GRPCStatus() *status.Status }); top {
			text = st.Message() // the node's error text, without gRPC's "rpc error: code = ..." frame
		}
		return &kindErr{text: text, sentinel: k.err, st: st}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return FromTransport(err, true)
	}
	return err
}

// FromTransport classifies the error of a gRPC call from what the transport
// did: sent says whether any of the request may have reached the server. An
// error that already has a kind (a node's status, an error made on this side
// around the call) is returned unchanged; any other becomes ErrUnavailable
// when nothing was sent and ErrIndeterminate when something was, printing the
// original text and keeping the original status.
func FromTransport(err error, sent bool) error {
	if err == nil {
		return nil
	}
	if _, ok := kindOf(err); ok {
		return err
	}
	sentinel := ErrUnavailable
	if sent {
		sentinel = ErrIndeterminate
	}
	return &kindErr{text: err.Error(), sentinel: sentinel, st: status.Convert(err), cause: err}
}

// FromNode reports whether err carries a status a capkv node produced (with
// our detail), that is, whether a node answered, as opposed to a failure of
// the transport or an error made on this side of the call.
func FromNode(err error) bool {
	st, ok := carried(err)
	if !ok {
		return false
	}
	_, ours := kindOfStatus(st)
	return ours
}
