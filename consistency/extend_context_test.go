package consistency

import "testing"

// A context extended with a write's dot covers that write and everything
// the original context covered, and nothing else of other nodes.
func TestExtendContext(t *testing.T) {
	base, err := NewVV(map[string]uint64{"a": 3, "b": 5})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ExtendContext(base.Encode(nil), "a", 9)
	if err != nil {
		t.Fatal(err)
	}
	vv, err := DecodeVV(got)
	if err != nil {
		t.Fatal(err)
	}
	if !vv.Covers(Dot{"a", 9}) || !vv.Descends(base) || vv.Covers(Dot{"b", 6}) || vv.Covers(Dot{"c", 1}) {
		t.Errorf("extended context %v", vv)
	}
	if got, err = ExtendContext(nil, "n1", 4); err != nil {
		t.Fatal(err)
	}
	if vv, _ = DecodeVV(got); vv.Len() != 1 || vv.Get("n1") != 4 {
		t.Errorf("from no context: %v, want {n1:4}", vv)
	}
	if _, err := ExtendContext([]byte{0xff}, "n1", 1); err == nil {
		t.Error("a corrupt context was extended")
	}
	if _, err := ExtendContext(nil, "", 1); err == nil {
		t.Error("an empty node name was accepted")
	}
}
