package dial

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
)

// ErrPoolClosed is returned by a Pool after Close.
var ErrPoolClosed = errors.New("connection pool is closed")

// Pool keeps one lazily dialed connection per peer node (every call between
// two nodes — forwarding, Raft, ap replica traffic — shares it) and one per
// address for nodes not yet in the map (join targets). Safe for concurrent use.
type Pool struct {
	// Resolve returns a node's address (from the cluster map).
	Resolve func(id string) (addr string, err error)
	// Options returns the extra dial options of a node's connection
	// (interceptors that see every call to it).
	Options func(id string) []grpc.DialOption
	// Security is the transport of every connection (zero: plaintext).
	Security Security

	mu struct {
		sync.Mutex
		byID   map[string]*grpc.ClientConn
		byAddr map[string]*grpc.ClientConn
		closed bool
	}
}

// Peer returns the connection to node id, dialing it on first use.
func (p *Pool) Peer(id string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil, ErrPoolClosed
	}
	if c, ok := p.mu.byID[id]; ok {
		return c, nil
	}
	addr, err := p.Resolve(id)
	if err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if p.Options != nil {
		opts = p.Options(id)
	}
	c, err := p.Security.Conn(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s at %s: %w", id, addr, err)
	}
	if p.mu.byID == nil {
		p.mu.byID = map[string]*grpc.ClientConn{}
	}
	p.mu.byID[id] = c
	return c, nil
}

// Addr returns a connection to an address outside the map.
func (p *Pool) Addr(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil, ErrPoolClosed
	}
	if c, ok := p.mu.byAddr[addr]; ok {
		return c, nil
	}
	c, err := p.Security.Conn(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if p.mu.byAddr == nil {
		p.mu.byAddr = map[string]*grpc.ClientConn{}
	}
	p.mu.byAddr[addr] = c
	return c, nil
}

// Drop closes node id's connection; the next call dials afresh. A partition
// that drops packets leaves TCP connections open but mute, and TCP's
// retransmission backoff would keep them mute for seconds after the heal.
func (p *Pool) Drop(id string) {
	p.mu.Lock()
	c := p.mu.byID[id]
	delete(p.mu.byID, id)
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Close closes every connection; later calls fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.mu.closed = true
	all := make(map[string]*grpc.ClientConn, len(p.mu.byID)+len(p.mu.byAddr))
	for id, c := range p.mu.byID {
		all[id] = c
	}
	for a, c := range p.mu.byAddr {
		all["addr "+a] = c
	}
	p.mu.byID, p.mu.byAddr = nil, nil
	p.mu.Unlock()
	var errs []error
	for name, c := range all {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
