package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// Receipt is what the CAP trade-off cost one request.
type Receipt struct {
	Keyspace          string
	Mode              consistency.Mode
	Level             consistency.Level
	Partition         string
	Replicas          []string // preference list of the partition
	AckedBy           []string // replicas that acknowledged
	ServedBy          string
	Coordinator       string
	Forwarded         bool
	SloppyQuorum      bool
	Hinted            bool
	Siblings          int
	AppliedIndex      uint64
	Staleness         time.Duration
	MajorityReachable bool
	Epoch             uint64
	// TraceID names the request's trace when it was sampled (kvctl trace).
	TraceID string
}

func receiptFrom(r *api.Receipt) Receipt {
	if r == nil {
		return Receipt{}
	}
	return Receipt{
		Keyspace: r.Keyspace, Mode: consistency.Mode(r.Mode), Level: consistency.Level(r.Level),
		Partition: r.Partition, Replicas: r.Replicas, AckedBy: r.AckedBy, ServedBy: r.ServedBy, TraceID: r.TraceId,
		Coordinator: r.Coordinator, Forwarded: r.Forwarded, SloppyQuorum: r.SloppyQuorum, Hinted: r.Hinted,
		Siblings: int(r.Siblings), AppliedIndex: r.AppliedIndex, Staleness: time.Duration(r.StalenessMs) * time.Millisecond,
		MajorityReachable: r.MajorityReachable, Epoch: r.Epoch,
	}
}

// Summary is the receipt in one line, as `kvctl -v` prints it.
func (r Receipt) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s/%s", r.Keyspace, r.Mode, r.Level)
	if r.Partition != "" {
		fmt.Fprintf(&b, " partition=%s", r.Partition)
	}
	fmt.Fprintf(&b, " acked=%d/%d[%s] served-by=%s", len(r.AckedBy), max(len(r.Replicas), len(r.AckedBy)), strings.Join(r.AckedBy, ","), r.ServedBy)
	if r.Forwarded {
		fmt.Fprintf(&b, " via=%s", r.Coordinator)
	}
	if r.SloppyQuorum {
		b.WriteString(" sloppy-quorum")
	}
	if r.Hinted {
		b.WriteString(" hinted")
	}
	if r.Siblings > 0 {
		fmt.Fprintf(&b, " siblings=%d", r.Siblings)
	}
	if r.Staleness > 0 {
		fmt.Fprintf(&b, " stale<=%s", r.Staleness)
	}
	if r.MajorityReachable {
		b.WriteString(" majority-reachable")
	}
	fmt.Fprintf(&b, " epoch=%d", r.Epoch)
	return b.String()
}

// Item is a key with its value and version.
type Item struct {
	Key       string
	Value     []byte // ap with siblings: the last writer's value
	Version   uint64
	Timestamp consistency.Timestamp
	Receipt   Receipt
	// Siblings (ap): every concurrent value, when there is more than one
	// writer's value the next write should reconcile.
	Siblings []Sibling
	// Context (ap): pass it to the next Put or Delete of the key
	// (WithContext) so that it supersedes the siblings read here.
	Context []byte
	// DeletedConcurrently (ap): a delete is among the concurrent writes.
	DeletedConcurrently bool
}

// Sibling is one of several concurrent values of an ap key.
type Sibling struct {
	Value     []byte
	Timestamp consistency.Timestamp
	Dot       string // node:counter that wrote it
}

// WriteResult is the outcome of a write.
type WriteResult struct {
	Version   uint64
	Timestamp consistency.Timestamp
	Existed   bool // Delete only: the key existed before
	Receipt   Receipt
}

// isCP reports whether key is in a cp keyspace, whose writes the servers
// deduplicate by request ID (so an ambiguous attempt may be repeated).
func (c *Client) isCP(key string) bool {
	p, err := c.Ring().Locate(key)
	return err == nil && p.Keyspace.Mode == consistency.CP
}

// Get reads a key. A missing key is ErrNotFound.
func (c *Client) Get(ctx context.Context, key string, opts ...Option) (*Item, error) {
	if err := c.checkKey(key); err != nil {
		return nil, err
	}
	o := collect(opts)
	var out *Item
	err := c.call(ctx, key, true, func(ctx context.Context, kv api.KVClient) (*api.Receipt, error) {
		resp, err := kv.Get(ctx, &api.GetRequest{Header: c.header(o), Key: key})
		if err != nil {
			return nil, err
		}
		out = &Item{Key: key, Value: resp.GetKv().GetValue(), Version: resp.GetKv().GetVersion(),
			Timestamp: consistency.Timestamp(resp.GetKv().GetTimestamp()), Receipt: receiptFrom(resp.GetReceipt()),
			Context: resp.GetContext(), DeletedConcurrently: resp.GetDeletedConcurrently()}
		for _, s := range resp.GetSiblings() {
			out.Siblings = append(out.Siblings, Sibling{Value: s.GetValue(), Timestamp: consistency.Timestamp(s.GetTimestamp()), Dot: s.GetDot()})
		}
		return resp.GetReceipt(), nil
	})
	if err == nil && len(out.Context) > 0 && c.sessionKey(key) {
		c.sessions.put(key, out.Context)
	}
	return out, err
}

// Put writes a key. On an ap key without WithContext it replaces what this
// client has seen of the key (see WithBlindWrite); the receipt's Siblings
// counts the values the key holds afterwards.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...Option) (*WriteResult, error) {
	if err := errors.Join(c.checkKey(key), c.checkValue("value", value)); err != nil {
		return nil, err
	}
	o := collect(opts)
	o.ensureRequestID()
	var out *WriteResult
	err := c.sessionWrite(ctx, key, o, false, func(causal []byte) error {
		return c.call(ctx, key, c.isCP(key), func(ctx context.Context, kv api.KVClient) (*api.Receipt, error) {
			resp, err := kv.Put(ctx, &api.PutRequest{Header: c.header(o), Key: key, Value: value, Context: causal})
			if err != nil {
				return nil, err
			}
			out = &WriteResult{Version: resp.GetVersion(), Timestamp: consistency.Timestamp(resp.GetTimestamp()), Receipt: receiptFrom(resp.GetReceipt())}
			return resp.GetReceipt(), nil
		})
	}, func() *WriteResult { return out })
	return out, err
}

// Delete removes a key. Deleting a missing key succeeds with Existed false.
// On an ap key without WithContext it deletes what this client has seen of
// the key (reading it first when it has seen nothing); a value written
// concurrently survives it, and the receipt's Siblings counts such values.
func (c *Client) Delete(ctx context.Context, key string, opts ...Option) (*WriteResult, error) {
	if err := c.checkKey(key); err != nil {
		return nil, err
	}
	o := collect(opts)
	o.ensureRequestID()
	var out *WriteResult
	err := c.sessionWrite(ctx, key, o, true, func(causal []byte) error {
		return c.call(ctx, key, c.isCP(key), func(ctx context.Context, kv api.KVClient) (*api.Receipt, error) {
			resp, err := kv.Delete(ctx, &api.DeleteRequest{Header: c.header(o), Key: key, Context: causal})
			if err != nil {
				return nil, err
			}
			out = &WriteResult{Version: resp.GetVersion(), Existed: resp.GetExisted(), Receipt: receiptFrom(resp.GetReceipt())}
			return resp.GetReceipt(), nil
		})
	}, func() *WriteResult { return out })
	return out, err
}

// Condition is the expectation of a compare-and-set.
type Condition struct {
	value   []byte
	version *uint64
}

// IfValue expects the key to exist with exactly this value.
func IfValue(v []byte) Condition { return Condition{value: append([]byte{}, v...)} }

// IfVersion expects the key to be at this version.
func IfVersion(v uint64) Condition { return Condition{version: &v} }

// IfAbsent expects the key not to exist.
func IfAbsent() Condition { return IfVersion(0) }

// CAS writes value only if the key matches cond; otherwise it returns an
// error matching ErrConflict and writes nothing. Only cp keyspaces offer it
// (ErrWrongMode otherwise).
func (c *Client) CAS(ctx context.Context, key string, cond Condition, value []byte, opts ...Option) (*WriteResult, error) {
	if cond.value == nil && cond.version == nil {
		return nil, fmt.Errorf("%w: CAS needs a condition (IfValue, IfVersion or IfAbsent)", ErrInvalidArgument)
	}
	if err := errors.Join(c.checkKey(key), c.checkValue("value", value), c.checkValue("expected value", cond.value)); err != nil {
		return nil, err
	}
	o := collect(opts)
	o.ensureRequestID()
	var out *WriteResult
	err := c.call(ctx, key, c.isCP(key), func(ctx context.Context, kv api.KVClient) (*api.Receipt, error) {
		resp, err := kv.CAS(ctx, &api.CASRequest{Header: c.header(o), Key: key, ExpectedValue: cond.value,
			ExpectedVersion: cond.version, Value: value})
		if err != nil {
			return nil, err
		}
		out = &WriteResult{Version: resp.GetVersion(), Timestamp: consistency.Timestamp(resp.GetTimestamp()), Receipt: receiptFrom(resp.GetReceipt())}
		return resp.GetReceipt(), nil
	})
	return out, err
}

// Scan lists the keys with a prefix (which must start with a keyspace name)
// in key order, following pages until WithLimit keys were returned or the
// prefix is exhausted.
func (c *Client) Scan(ctx context.Context, prefix string, opts ...Option) ([]Item, error) {
	if err := c.checkKey(prefix); err != nil {
		return nil, fmt.Errorf("scan prefix: %w", err)
	}
	o := collect(opts)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	var out []Item
	after := o.startAfter
	for {
		page := 0
		if o.limit > 0 {
			page = o.limit - len(out)
		}
		resp, err := c.scanPage(ctx, prefix, after, page, o)
		if err != nil {
			return out, err
		}
		for _, kv := range resp.GetKvs() {
			out = append(out, Item{Key: kv.GetKey(), Value: kv.GetValue(), Version: kv.GetVersion(),
				Timestamp: consistency.Timestamp(kv.GetTimestamp()), Receipt: receiptFrom(resp.GetReceipt())})
		}
		if !resp.GetMore() || len(resp.GetKvs()) == 0 || (o.limit > 0 && len(out) >= o.limit) {
			return out, nil
		}
		after = out[len(out)-1].Key
	}
}

// scanPage asks one node (any node coordinates a scan), trying others when
// it is unreachable.
func (c *Client) scanPage(ctx context.Context, prefix, after string, limit int, o callOptions) (*api.ScanResponse, error) {
	nodes := c.Ring().Topology().Nodes
	var last, refusal error
	for attempt := 0; attempt < c.cfg.MaxAttempts && attempt < max(len(nodes), 1); attempt++ {
		addr := c.cfg.Endpoints[0]
		for i := range len(nodes) { // the next node whose breaker lets the call through
			if addr = nodes[(attempt+i)%len(nodes)].Addr; c.breakers.allow(addr) {
				break
			}
		}
		cc, err := c.conn(addr)
		if err != nil {
			c.breakers.release(addr)
			return nil, err
		}
		resp, err := api.NewKVClient(cc).Scan(ctx, &api.ScanRequest{Header: c.header(o), Prefix: prefix, StartAfter: after, Limit: uint32(limit)})
		c.breakers.done(addr, err, errors.Is(ctx.Err(), context.DeadlineExceeded))
		if err == nil {
			return resp, nil
		}
		last = kverrors.FromStatus(err)
		if !errors.Is(last, ErrUnavailable) || ctx.Err() != nil {
			return nil, informative(last, refusal)
		}
		if kverrors.FromNode(last) {
			refusal = last
		}
	}
	return nil, informative(last, refusal)
}
