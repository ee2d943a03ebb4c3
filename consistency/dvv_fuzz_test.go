package consistency

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeDVV feeds arbitrary bytes to DecodeDVV. It must never panic; what it
// accepts must be a well-formed clock whose encoding is exactly the input (one
// encoding per clock), and every operation on it must keep the invariants.
// Seeds live in testdata/fuzz/FuzzDecodeDVV as well as below.
func FuzzDecodeDVV(f *testing.F) {
	x := Value{Data: []byte("x"), Timestamp: MakeTimestamp(1_700_000_000_000, 3)}
	a, _ := DVV{}.Update(VV{}, "a", x)
	b, _ := DVV{}.Update(VV{}, "b", Value{Tombstone: true, Timestamp: 9})
	ab := a.Sync(b)
	f.Add(DVV{}.Encode(nil))
	f.Add(a.Encode(nil))
	f.Add(ab.Encode(nil))
	f.Add(ab.Context().Encode(nil)) // a VV is not a DVV
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := DecodeDVV(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidClock) {
				t.Fatalf("error %v does not wrap ErrInvalidClock", err)
			}
			return
		}
		if enc := d.Encode(nil); !bytes.Equal(enc, in) {
			t.Fatalf("accepted %x but encodes as %x", in, enc)
		}
		assertWellFormed(t, d)
		_, _ = d.LWW()
		_ = d.Live()
		if !d.Descends(d) || !d.Sync(d).Equal(d) {
			t.Fatalf("%s does not descend itself", d)
		}
		for _, other := range []DVV{{}, a, ab} {
			s := d.Sync(other)
			assertWellFormed(t, s)
			if !s.Descends(d) || !s.Descends(other) {
				t.Fatalf("%s ⊔ %s = %s does not descend both", d, other, s)
			}
		}
		if u, err := d.Update(d.Context(), "a", x); err == nil {
			assertWellFormed(t, u)
			if u.Len() != 1 {
				t.Fatalf("a write with the full context of %s left %s", d, u)
			}
		} else if !errors.Is(err, ErrInvalidClock) {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeVV does the same for the context token a client carries.
func FuzzDecodeVV(f *testing.F) {
	v, _ := NewVV(map[string]uint64{"a": 1, "node-2": 300})
	f.Add(v.Encode(nil))
	f.Add(VV{}.Encode(nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := DecodeVV(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidClock) {
				t.Fatalf("error %v does not wrap ErrInvalidClock", err)
			}
			return
		}
		if enc := v.Encode(nil); !bytes.Equal(enc, in) {
			t.Fatalf("accepted %x but encodes as %x", in, enc)
		}
		if !v.Merge(v).Equal(v) || !v.Descends(v) {
			t.Fatalf("%s is not idempotent", v)
		}
	})
}
