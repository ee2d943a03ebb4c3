package consistency

import "testing"

// UpdateAbove mints a dot above the floor and otherwise behaves as Update:
// the siblings the context does not cover stay, whatever the floor.
func TestUpdateAbove(t *testing.T) {
	v := func(s string, ts Timestamp) Value { return Value{Data: []byte(s), Timestamp: ts} }
	d, err := DVV{}.Update(VV{}, "a", v("x", 1))
	if err != nil {
		t.Fatal(err)
	}
	// A concurrent write through b (blind: its context covers nothing).
	d, err = d.Update(VV{}, "b", v("y", 2))
	if err != nil {
		t.Fatal(err)
	}
	up, err := d.UpdateAbove(VV{}, "a", v("z", 3), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if up.Len() != 3 {
		t.Fatalf("blind write above a floor: %d siblings, want 3 (a floor must not cover anything)", up.Len())
	}
	var newest Dot
	for _, s := range up.Values() {
		if string(s.Data) == "z" {
			newest = s.Dot
		}
	}
	if newest.Node != "a" || newest.Counter != 1001 {
		t.Fatalf("new dot %v, want a:1001", newest)
	}
	if up.Context().Get("a") != 1001 {
		t.Fatalf("context %v does not reach the new dot", up.Context())
	}
	// Below the key's own counter the floor changes nothing.
	same, _ := up.UpdateAbove(up.Context(), "a", v("w", 4), 5)
	plain, _ := up.Update(up.Context(), "a", v("w", 4))
	if !same.Equal(plain) {
		t.Fatalf("a floor under the counter changed the result: %v vs %v", same, plain)
	}
}
