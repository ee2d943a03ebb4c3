package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/limits"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/ring"
)

// Typed errors; match with errors.Is.
var (
	ErrNotFound        = kverrors.ErrNotFound
	ErrInvalidArgument = kverrors.ErrInvalidArgument
	ErrTooLarge        = kverrors.ErrTooLarge
	ErrUnknownKeyspace = kverrors.ErrUnknownKeyspace
	ErrWrongMode       = kverrors.ErrWrongMode
	ErrConflict        = kverrors.ErrConflict
	ErrUnavailable     = kverrors.ErrUnavailable
	ErrIndeterminate   = kverrors.ErrIndeterminate
	ErrStaleEpoch      = kverrors.ErrStaleEpoch
	// ErrUnauthenticated: the TLS settings of client and node disagree, or
	// one refused the other's certificate.
	ErrUnauthenticated = kverrors.ErrUnauthenticated
	// ErrPermissionDenied: the client's identity (its certificate's name)
	// has no grant for the operation on the keyspace.
	ErrPermissionDenied = kverrors.ErrPermissionDenied
)

// Config configures a Client.
type Config struct {
	// Endpoints are host:port (or http://host:port) addresses of any nodes
	// of the cluster; the client learns the rest from the cluster map.
	Endpoints []string
	// DialTimeout bounds fetching the first cluster map (default 5s).
	DialTimeout time.Duration
	// RequestTimeout applies to calls whose context has no deadline (default 5s).
	RequestTimeout time.Duration
	// MaxAttempts bounds tries of a call that failed definitely (default 3).
	MaxAttempts int
	// BreakerThreshold is how many calls in a row a node may leave without
	// an answer before the client routes around it for BreakerCooldown
	// (doubling, up to 30s, while trial calls keep failing). Default 3;
	// negative turns the circuit breakers off.
	BreakerThreshold int
	// BreakerCooldown is the first cooldown of an open breaker (default 1s).
	BreakerCooldown time.Duration
	// MaxKeySize and MaxValueSize are the largest key and value the client
	// sends (default: the limits nodes enforce by default, 4 KiB and 1 MiB);
	// larger ones fail with ErrTooLarge before any request is made.
	MaxKeySize, MaxValueSize int
	// TLS, when set, is the configuration every connection uses (the
	// cluster's CA in RootCAs, and a client certificate when the nodes
	// require one); nil dials in plaintext. Endpoints may then be written
	// https://host:port.
	TLS *tls.Config
	// DialOptions are added to every connection (custom dialers, tests).
	DialOptions []grpc.DialOption
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) applyDefaults() {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = 3
	}
	if c.MaxKeySize <= 0 {
		c.MaxKeySize = limits.DefaultMaxKeySize
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = limits.DefaultMaxValueSize
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Client talks to a capkv cluster. It is safe for concurrent use.
type Client struct {
	cfg      Config
	log      *slog.Logger
	breakers *breakers // per node address
	sessions sessions  // ap: the causal context of each key this client last read or wrote

	mu struct {
		sync.Mutex
		ring    *ring.Ring
		admin   string                      // address that last returned the map
		leaders map[string]string           // cp partition -> node that last served it as leader
		conns   map[string]*grpc.ClientConn // by address
		closed  bool
	}
}

// New connects to the cluster: it fetches the cluster map from the first
// endpoint that answers.
func New(ctx context.Context, cfg Config) (*Client, error) {
	cfg.applyDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints given", ErrInvalidArgument)
	}
	eps := make([]string, 0, len(cfg.Endpoints))
	for _, e := range cfg.Endpoints {
		addr, err := parseEndpoint(e, cfg.TLS != nil)
		if err != nil {
			return nil, err
		}
		eps = append(eps, addr)
	}
	cfg.Endpoints = eps
	c := &Client{cfg: cfg, log: cfg.Logger, breakers: newBreakers(cfg.BreakerThreshold, cfg.BreakerCooldown, 30*time.Second)}
	c.mu.conns = make(map[string]*grpc.ClientConn)
	c.mu.leaders = make(map[string]string)
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := c.Refresh(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the client's connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil
	}
	c.mu.closed = true
	var errs []error
	for _, cc := range c.mu.conns {
		errs = append(errs, cc.Close())
	}
	c.mu.conns = nil
	return errors.Join(errs...)
}

// conn returns a connection to addr, created on first use.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return nil, errors.New("client is closed")
	}
	if cc, ok := c.mu.conns[addr]; ok {
		return cc, nil
	}
	cc, err := dial.ClientTLS(c.cfg.TLS).Conn(addr, c.cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidArgument, addr, err)
	}
	c.mu.conns[addr] = cc
	return cc, nil
}

// Refresh fetches the cluster map again, from the known nodes first and then
// the configured endpoints.
func (c *Client) Refresh(ctx context.Context) error { return c.refresh(ctx, false) }

// refresh fetches the map from the first candidate that answers or, with
// newest, from every candidate, keeping the highest epoch: a node that has not
// yet adopted a just-created keyspace must not hide it.
func (c *Client) refresh(ctx context.Context, newest bool) error {
	var errs []error
	got := false
	for _, addr := range c.candidates() {
		cc, err := c.conn(addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		qctx, cancel := ctx, context.CancelFunc(func() {})
		if newest {
			qctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		m, err := api.NewAdminClient(cc).GetClusterMap(qctx, &api.ClusterMapRequest{})
		cancel()
		if err != nil {
			err = kverrors.FromStatus(err)
			if errors.Is(err, ErrUnavailable) && !kverrors.FromNode(err) {
				// gRPC's text here would be about HTTP/2 frames or a handshake.
				if why := explainTLS(ctx, addr, c.cfg.TLS); why != nil {
					err = why
				} else if speaksHTTP1(ctx, addr) {
					err = fmt.Errorf("%w: it answers plain HTTP, not capkv's gRPC (a --metrics-addr or --debug-addr port?); use a node's --listen address", ErrInvalidArgument)
				} else if why := dialFailure(err); why != nil {
					err = why
				}
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		r, err := wire.RingFromProto(m)
		if err != nil {
			return fmt.Errorf("cluster map from %s: %w", addr, err)
		}
		c.mu.Lock()
		if c.mu.ring == nil || r.Epoch() >= c.mu.ring.Epoch() {
			c.mu.ring = r
			c.mu.admin = addr
		}
		c.mu.Unlock()
		c.log.Debug("cluster map", "from", addr, "epoch", r.Epoch())
		got = true
		if !newest {
			return nil
		}
	}
	if got {
		return nil
	}
	return fmt.Errorf("%w: no endpoint returned the cluster map: %w", ErrUnavailable, errors.Join(errs...))
}

// candidates lists addresses to ask for the map: the configured endpoints,
// then every node of the current map.
func (c *Client) candidates() []string {
	seen := map[string]bool{}
	var out []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, e := range c.cfg.Endpoints {
		add(e)
	}
	c.mu.Lock()
	r := c.mu.ring
	c.mu.Unlock()
	if r != nil {
		for _, n := range r.Topology().Nodes {
			add(n.Addr)
		}
	}
	return out
}

// Ring returns the client's current view of the ring.
func (c *Client) Ring() *ring.Ring {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.ring
}

// Locate computes where key lives from the cached cluster map (no network).
func (c *Client) Locate(key string) (ring.Placement, error) {
	return c.Ring().Locate(key)
}

// Admin returns an Admin service client connected to the node that last
// answered the cluster map.
func (c *Client) Admin() (api.AdminClient, error) {
	c.mu.Lock()
	addr := c.mu.admin
	c.mu.Unlock()
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return api.NewAdminClient(cc), nil
}

// AdminAt returns an Admin service client of the node at addr (kvctl
// trace asks every node of the map for its spans).
func (c *Client) AdminAt(addr string) (api.AdminClient, error) {
	cc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return api.NewAdminClient(cc), nil
}

// Option adjusts one call.
type Option func(*callOptions)

type callOptions struct {
	level      consistency.Level
	limit      int
	startAfter string
	requestID  string
	causal     []byte
	blind      bool
}

// WithContext passes the causal context of a previous Get (Item.Context) with
// a Put or Delete of an ap key: the write then supersedes the siblings that
// Get returned instead of becoming one more.
func WithContext(causal []byte) Option { return func(o *callOptions) { o.causal = causal } }

// WithConsistency sets the call's consistency level (default: the keyspace's).
func WithConsistency(l consistency.Level) Option { return func(o *callOptions) { o.level = l } }

// WithLimit bounds the number of keys a Scan returns (default: all).
func WithLimit(n int) Option { return func(o *callOptions) { o.limit = n } }

// WithStartAfter makes a Scan begin strictly after key.
func WithStartAfter(key string) Option { return func(o *callOptions) { o.startAfter = key } }

// WithRequestID tags a write so that servers can recognise a retry.
func WithRequestID(id string) Option { return func(o *callOptions) { o.requestID = id } }

// ensureRequestID gives a write one ID for all its attempts, so that a retry
// after an ambiguous failure is applied at most once by the servers.
func (o *callOptions) ensureRequestID() {
	if o.requestID == "" {
		var b [12]byte
		rand.Read(b[:])
		o.requestID = hex.EncodeToString(b[:])
	}
}

func collect(opts []Option) callOptions {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (c *Client) header(o callOptions) *api.RequestHeader {
	r := c.Ring()
	return &api.RequestHeader{Epoch: r.Epoch(), Consistency: string(o.level), RequestId: o.requestID}
}

// call runs op against the owner of key, retrying definite failures a
// bounded number of times: after a stale-epoch answer with a fresh map, after
// an unreachable owner through another node.
func (c *Client) call(ctx context.Context, key string, retrySafe bool, op func(ctx context.Context, kv api.KVClient) (*api.Receipt, error)) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	if _, err := c.Ring().Locate(key); errors.Is(err, ErrUnknownKeyspace) {
		// Perhaps created after our map was fetched: ask every node.
		if rerr := c.refresh(ctx, true); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	// unknown: an attempt whose outcome is unknown; refusal: the latest
	// Unavailable a node itself sent, which says why (no majority, say)
	// where an unreachable node's dial error says only which one was down.
	var last, unknown, refusal error
	for attempt := 0; attempt < c.cfg.MaxAttempts; attempt++ {
		addr, err := c.allowedTarget(key, attempt)
		if err != nil {
			return err
		}
		cc, err := c.conn(addr)
		if err != nil {
			c.breakers.release(addr)
			return err
		}
		rc, err := op(ctx, api.NewKVClient(cc))
		c.breakers.done(addr, err, errors.Is(ctx.Err(), context.DeadlineExceeded))
		c.learnLeader(key, rc, err)
		if err == nil {
			if rc.GetEpoch() > c.Ring().Epoch() {
				// The server knows a newer map; refresh for the next call.
				if err := c.Refresh(ctx); err != nil {
					c.log.Debug("refresh after newer epoch failed", "err", err)
				}
			}
			return nil
		}
		last = kverrors.FromStatus(err)
		if errors.Is(last, ErrIndeterminate) {
			unknown = last
		}
		if errors.Is(last, ErrUnavailable) && kverrors.FromNode(last) {
			refusal = last
		}
		switch {
		case errors.Is(last, ErrStaleEpoch):
			if err := c.Refresh(ctx); err != nil {
				return settle(errors.Join(last, err), unknown)
			}
		case errors.Is(last, ErrUnavailable) && ctx.Err() == nil:
			c.log.Debug("node unavailable, trying another", "addr", addr, "err", last)
		case errors.Is(last, ErrIndeterminate) && ctx.Err() == nil && retrySafe:
			// The outcome is unknown (a connection broke, say), but this call
			// may be repeated: a read, or a cp write whose request ID makes
			// the servers apply it at most once.
			c.log.Debug("outcome unknown, retrying", "addr", addr, "err", last)
		default:
			return settle(last, unknown)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return settle(informative(last, refusal), unknown)
}

// informative picks the error a call reports after its attempts: a node's
// own refusal over a later attempt's failure to reach another node, both
// definite, so that a cut-off partition reports why it refused.
func informative(last, refusal error) error {
	if refusal != nil && errors.Is(last, ErrUnavailable) && !kverrors.FromNode(last) {
		return refusal
	}
	return last
}

// settle is a call's error after its attempts. A last attempt that was
// definitely not applied (no node reached, or a stale map) says nothing of
// an earlier one whose outcome is unknown and which may still take effect:
// the call's outcome is then unknown too.
func settle(last, unknown error) error {
	if unknown == nil || errors.Is(last, ErrIndeterminate) || !(errors.Is(last, ErrUnavailable) || errors.Is(last, ErrStaleEpoch)) {
		return last
	}
	return fmt.Errorf("%w; then: %v", unknown, last)
}

// learnLeader remembers which node served a cp request (the partition's
// leader for writes and linearizable reads) and forgets it when it failed.
func (c *Client) learnLeader(key string, rc *api.Receipt, err error) {
	r := c.Ring()
	p, lerr := r.Locate(key)
	if lerr != nil || p.Keyspace.Mode != consistency.CP {
		return
	}
	id := p.Partition.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		delete(c.mu.leaders, id)
	case rc.GetServedBy() != "" && rc.GetLevel() != string(consistency.Stale):
		c.mu.leaders[id] = rc.GetServedBy()
	}
}

// target picks the node for attempt: the cached leader or the partition's
// first replica, then other replicas and nodes, which forward.
func (c *Client) target(key string, attempt int) (string, error) {
	r := c.Ring()
	p, err := r.Locate(key)
	if err != nil {
		return "", err
	}
	if attempt == 0 {
		c.mu.Lock()
		leader := c.mu.leaders[p.Partition.String()]
		c.mu.Unlock()
		if n, ok := r.Node(leader); ok {
			return n.Addr, nil
		}
	}
	if attempt < len(p.Replicas) {
		if n, ok := r.Node(p.Replicas[attempt]); ok {
			return n.Addr, nil
		}
	}
	nodes := r.Topology().Nodes
	if len(nodes) == 0 {
		return c.cfg.Endpoints[attempt%len(c.cfg.Endpoints)], nil
	}
	return nodes[attempt%len(nodes)].Addr, nil
}
