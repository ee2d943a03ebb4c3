package dial

import (
	"errors"
	"net"
	"testing"
)

func TestPoolReusesAndDrops(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	resolved := 0
	p := &Pool{Resolve: func(id string) (string, error) {
		resolved++
		if id != "n1" {
			return "", errors.New("not in the map")
		}
		return lis.Addr().String(), nil
	}}
	a, err := p.Peer("n1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := p.Peer("n1")
	if a != b || resolved != 1 {
		t.Fatalf("second Peer dialed again (same conn %t, resolved %d times)", a == b, resolved)
	}
	if _, err := p.Peer("n9"); err == nil {
		t.Fatal("a node the resolver does not know was dialed")
	}
	p.Drop("n1")
	c, _ := p.Peer("n1")
	if c == a {
		t.Fatal("Drop kept the old connection")
	}
	if _, err := p.Addr(lis.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Peer("n1"); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("after Close: %v, want ErrPoolClosed", err)
	}
	if _, err := p.Addr("127.0.0.1:1"); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("after Close: %v, want ErrPoolClosed", err)
	}
}
