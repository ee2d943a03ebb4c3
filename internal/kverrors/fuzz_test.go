package kverrors

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// ourReason is the reference reading of a status: the reason of its first
// ErrorInfo detail in our domain.
func ourReason(p *spb.Status) (string, bool) {
	for _, a := range p.GetDetails() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if info, ok := m.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason(), true
		}
	}
	return "", false
}

// kindName names the first sentinel err matches ("" for none).
func kindName(err error) string {
	for _, k := range sentinels {
		if errors.Is(err, k.err) {
			return k.reason
		}
	}
	return ""
}

// FuzzFromStatus decodes arbitrary wire statuses (google.rpc.Status
// encodings): the decoder never fails, keeps the code, restores exactly the
// kind the detail names, counts a status without our detail as a possibly
// delivered transport failure, and forwarding its result keeps the kind.
func FuzzFromStatus(f *testing.F) {
	seed := func(st *status.Status) {
		b, err := proto.Marshal(st.Proto())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, k := range sentinels {
		seed(status.Convert(ToStatus(fmt.Errorf("%w: seed", k.err))))
	}
	seed(status.New(codes.Unavailable, "connection error"))
	other, _ := status.New(codes.NotFound, "x").WithDetails(&errdetails.ErrorInfo{Domain: "example.com", Reason: "NOT_FOUND"})
	seed(other)
	p := status.New(codes.Internal, "bad detail").Proto()
	p.Details = append(p.Details, &anypb.Any{TypeUrl: "type.googleapis.com/google.rpc.ErrorInfo", Value: []byte{0xff}})
	seed(status.FromProto(p))
	f.Add([]byte{0x08, 0x0e})

	f.Fuzz(func(t *testing.T, b []byte) {
		p := new(spb.Status)
		if proto.Unmarshal(b, p) != nil {
			return
		}
		in := status.FromProto(p).Err()
		if in == nil {
			return // code OK: not an error
		}
		got := FromStatus(in)
		if got == nil {
			t.Fatalf("FromStatus(%v) = nil", in)
		}
		if status.Code(got) != status.Code(in) {
			t.Fatalf("code %v -> %v", status.Code(in), status.Code(got))
		}
		if FromStatus(got) != got {
			t.Fatalf("FromStatus is not idempotent on %v", got)
		}
		reason, ours := ourReason(p)
		if FromNode(got) != ours || FromNode(in) != ours {
			t.Fatalf("FromNode = %t, detail in our domain: %t", FromNode(got), ours)
		}
		want := "INDETERMINATE" // a bare status, or a reason this build does not know
		for _, k := range sentinels {
			if ours && k.reason == reason {
				want = reason
			}
		}
		if kindName(got) != want {
			t.Fatalf("%v (reason %q, ours %t) decoded as %q, want %q", in, reason, ours, kindName(got), want)
		}
		if ours && got.Error() != p.GetMessage() {
			t.Fatalf("text %q, want the node's message %q", got, p.GetMessage())
		}
		if !ours && got.Error() != in.Error() {
			t.Fatalf("text %q, want gRPC's %q", got, in)
		}
		// A node forwarding it, unchanged or with context: same kind.
		for _, fwd := range []error{got, fmt.Errorf("via n2: %w", got)} {
			if again := FromStatus(ToStatus(fwd)); kindName(again) != want || !FromNode(ToStatus(fwd)) {
				t.Fatalf("forwarding %v gives %v (kind %q), want %q", fwd, again, kindName(again), want)
			}
		}
	})
}
