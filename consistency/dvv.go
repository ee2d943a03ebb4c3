package consistency

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strings"
)

// ErrInvalidClock is wrapped by every error of this file: a corrupt encoding, or
// an Update or VV that would break the invariants above.
var ErrInvalidClock = errors.New("invalid version clock")

// Dot names one write: the Counter-th write that Node coordinated for a key.
// Counters start at 1.
type Dot struct {
	Node    string
	Counter uint64
}

func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Node, d.Counter) }

// Compare orders dots by node, then by counter.
func (d Dot) Compare(o Dot) int {
	if c := strings.Compare(d.Node, o.Node); c != 0 {
		return c
	}
	return cmp.Compare(d.Counter, o.Counter)
}

// VV is a version vector: for each node, how many of its writes are known.
// Entry (n, c) covers the dots (n,1)..(n,c). The zero VV is empty and covers
// nothing.
//
// It is a sorted slice rather than a map: a key has a handful of entries (its
// replicas and the odd fallback), so a sorted slice is smaller, is copied with
// one allocation, merges and compares by a linear walk, and iterates in one
// order, which makes the encoding canonical (equal clocks, equal bytes). The
// slice is unexported so that it is always sorted; a VV is immutable.
type VV struct {
	entries []Dot // sorted by Node, distinct non-empty nodes, Counter >= 1
}

// NewVV builds a version vector from a map. Zero counters are dropped; an empty
// node name is an error.
func NewVV(m map[string]uint64) (VV, error) {
	e := make([]Dot, 0, len(m))
	for n, c := range m {
		if n == "" {
			return VV{}, fmt.Errorf("%w: empty node name in version vector", ErrInvalidClock)
		}
		if c > 0 {
			e = append(e, Dot{n, c})
		}
	}
	slices.SortFunc(e, Dot.Compare)
	if len(e) == 0 {
		return VV{}, nil
	}
	return VV{e}, nil
}

// Len returns the number of nodes with a non-zero counter.
func (v VV) Len() int { return len(v.entries) }

// Entries returns the entries in node order, as dots whose counter is the
// highest one known for that node. The slice is a copy.
func (v VV) Entries() []Dot { return slices.Clone(v.entries) }

// Get returns the counter for node (0 when absent).
func (v VV) Get(node string) uint64 {
	if i, ok := v.find(node); ok {
		return v.entries[i].Counter
	}
	return 0
}

func (v VV) find(node string) (int, bool) {
	return slices.BinarySearchFunc(v.entries, node, func(e Dot, n string) int { return strings.Compare(e.Node, n) })
}

// Covers reports whether the write named by d is known to v.
func (v VV) Covers(d Dot) bool { return d.Counter <= v.Get(d.Node) }

// Descends reports whether v knows every write o knows (v >= o entry-wise).
func (v VV) Descends(o VV) bool {
	i := 0
	for _, e := range o.entries {
		for i < len(v.entries) && v.entries[i].Node < e.Node {
			i++
		}
		if i == len(v.entries) || v.entries[i].Node != e.Node || v.entries[i].Counter < e.Counter {
			return false
		}
	}
	return true
}

// Equal reports whether v and o have the same entries.
func (v VV) Equal(o VV) bool { return slices.Equal(v.entries, o.entries) }

// Merge returns the entry-wise maximum of v and o.
func (v VV) Merge(o VV) VV {
	switch {
	case len(o.entries) == 0:
		return v
	case len(v.entries) == 0:
		return o
	}
	return VV{mergeEntries(v.entries, o.entries, 0)}
}

// mergeEntries merges two sorted entry lists into a new slice with spare
// capacity for extra more entries.
func mergeEntries(a, b []Dot, extra int) []Dot {
	out := make([]Dot, 0, len(a)+len(b)+extra)
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := strings.Compare(a[i].Node, b[j].Node); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, Dot{a[i].Node, max(a[i].Counter, b[j].Counter)})
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

func (v VV) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, e := range v.entries {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.String())
	}
	b.WriteByte('}')
	return b.String()
}

// Value is what a client writes: opaque bytes, the coordinator's HLC timestamp
// (used only by LWW) and whether the write is a delete. Data is kept by
// reference; the caller must not modify it after handing it over.
type Value struct {
	Data      []byte
	Timestamp Timestamp
	Tombstone bool
}

// Sibling is one write a clock keeps: its dot and its value.
type Sibling struct {
	Dot Dot
	Value
}

func (s Sibling) String() string {
	if s.Tombstone {
		return fmt.Sprintf("%s=⊥@%d", s.Dot, s.Timestamp)
	}
	return fmt.Sprintf("%s=%q@%d", s.Dot, s.Data, s.Timestamp)
}

// compareValue is a total order on values, used only to settle two replicas
// that disagree about the value of one dot (which the caller contract rules
// out) in a way that keeps Sync commutative and associative.
func compareValue(a, b Value) int {
	if c := cmp.Compare(a.Timestamp, b.Timestamp); c != 0 {
		return c
	}
	if a.Tombstone != b.Tombstone {
		if a.Tombstone {
			return 1
		}
		return -1
	}
	return bytes.Compare(a.Data, b.Data)
}

// DVV is the dotted version vector of one AP key: its causal context and the
// siblings it keeps. The zero DVV is the clock of a key never written. A DVV is
// immutable and safe to share between goroutines.
//
// An AP key is written by whichever replica coordinates the request, without a
// leader, so two clients can write the same key concurrently on different sides
// of a partition. A DVV is the per-key clock that lets replicas keep both writes
// as siblings instead of silently dropping one, and lets the next write that has
// seen them replace them (Preguiça et al., "Dotted Version Vectors: Logical Clocks
// for Optimistic Replication", 2010; Riak's dvvset).
//
// # Design
//
// A DVV is a causal context plus a set of dotted siblings: (C, S). Each write is
// named by a Dot (node, counter): the counter-th write that node coordinated for
// this key. The context C is a version vector; entry (n, c) stands for the dots
// (n,1)..(n,c), that is every write this clock has seen, whether it is still a
// sibling or was superseded. S holds the siblings: the writes seen and not
// superseded, each with its own dot, value, HLC timestamp and tombstone flag.
// This is the "shared causal context" form of DVV; Riak's DVVSet is the same
// information with the sibling dots of each node folded into its VV entry.
// Keeping explicit dots costs a few bytes per sibling and buys simple code,
// last-writer-wins tie-breaks by dot and readable tests.
//
// Invariants, kept by every constructor (Update, Sync, DecodeDVV) and checked by
// DecodeDVV on input from the network or disk:
//   - C is sorted by node, nodes are distinct and non-empty, counters are >= 1.
//   - S is sorted by dot, dots are distinct, and every sibling's dot is covered
//     by C (s.Counter <= C[s.Node]).
//   - A DVV is immutable: methods return new values and never modify their
//     receiver, arguments or the Data slices they are given.
//
// Requirements on callers, which the algebra depends on:
//   - A dot names exactly one write. A node issues dots for a key only from the
//     key's stored clock, one Update at a time per key (read-modify-write), and
//     never from a clock that has forgotten dots it issued before: a node that
//     lost its data, or a fallback that handed its hints off and deleted them,
//     must either not coordinate writes for the key or use a new node ID (for
//     example with an epoch suffix). Reusing a dot for a different value loses
//     one of the two writes (Riak issue kv679). Update takes the client
//     context's counter for the node into account, which covers the common case.
//   - The context a client sends with a write is one this package produced
//     (Context of some replica's clock), passed back unchanged.
//
// # Operations
//
// Update(ctx, node, v) is a write coordinated at node by a client that had read
// context ctx (an empty VV for a blind write): v gets a new dot and replaces
// exactly the siblings covered by ctx; siblings the client had not seen are
// concurrent with v and are kept. Sync merges two replicas' clocks for one key
// (read repair, hinted handoff, anti-entropy): a sibling survives unless the
// other side has seen its dot and no longer keeps it. Sync is idempotent,
// commutative and associative, so replicas that exchange clocks in any order
// converge to Equal clocks, and Equal clocks Encode to identical bytes (what the
// Merkle trees of anti-entropy hash).
//
// # Deletes
//
// A delete is an Update whose Value has Tombstone set. Tombstones are siblings
// like any other, so a delete concurrent with a write leaves {tombstone, value}.
// A reader sees Live (the non-tombstone siblings) and the Context:
//   - no siblings: the key was never written: not found;
//   - only tombstones: the key is deleted: not found, but the context is still
//     returned so that a later write supersedes the tombstones;
//   - live values and tombstones: the live values are returned as siblings and
//     the response says a concurrent delete is present; the next write with this
//     context (or a delete) resolves all of them.
//
// With `resolve: lww` a reader takes LWW instead: the sibling with the greatest
// timestamp wins; if it is a tombstone the key reads as not found. Removing
// tombstones for good needs knowledge of every replica and is not done here.
type DVV struct {
	ctx  VV
	sibs []Sibling // sorted by Dot, distinct, each covered by ctx
}

// Update returns the clock after a write of v coordinated at node by a client
// that had read context ctx (empty for a blind write). v gets the dot
// (node, n) where n is one more than the highest counter of node in the clock
// and in ctx; after the call that dot is Dot{node, result.Context().Get(node)}.
// The siblings covered by ctx are replaced by v; the others are kept. The
// result's context is the clock's, ctx and the new dot merged.
//
// It fails, wrapping ErrInvalidClock, only when node is empty or its counter is
// exhausted (2^64-1 writes to this key from this node ID).
func (d DVV) Update(ctx VV, node string, v Value) (DVV, error) {
	return d.UpdateAbove(ctx, node, v, 0)
}

// UpdateAbove is Update with the new dot's counter also above floor. A
// coordinator passes a floor that grows with every write it mints (its HLC):
// then a dot is never minted twice for a key even when the key's history was
// forgotten (a tombstone purged), so a client's stale context or a late hint
// from before the purge cannot cover, and silently replace, a later write.
// Counters then skip numbers, which is harmless: a node's dots for a key are
// all minted, and first stored, by that node.
func (d DVV) UpdateAbove(ctx VV, node string, v Value, floor uint64) (DVV, error) {
	if node == "" {
		return DVV{}, fmt.Errorf("%w: update needs a non-empty node ID", ErrInvalidClock)
	}
	last := max(d.ctx.Get(node), ctx.Get(node), floor)
	if last == math.MaxUint64 {
		return DVV{}, fmt.Errorf("%w: dot counter of node %q exhausted; the node needs a new ID", ErrInvalidClock, node)
	}
	dot := Dot{node, last + 1}
	sibs := make([]Sibling, 0, len(d.sibs)+1)
	added := false
	for _, s := range d.sibs {
		if ctx.Covers(s.Dot) {
			continue
		}
		if !added && dot.Compare(s.Dot) < 0 {
			sibs = append(sibs, Sibling{dot, v})
			added = true
		}
		sibs = append(sibs, s)
	}
	if !added {
		sibs = append(sibs, Sibling{dot, v})
	}

	entries := mergeEntries(d.ctx.entries, ctx.entries, 1)
	i, found := slices.BinarySearchFunc(entries, node, func(e Dot, n string) int { return strings.Compare(e.Node, n) })
	if found {
		entries[i].Counter = dot.Counter
	} else {
		entries = slices.Insert(entries, i, dot)
	}
	return DVV{ctx: VV{entries}, sibs: sibs}, nil
}

// Sync merges two replicas' clocks for the same key. A sibling of either side
// survives unless the other side has seen its dot and no longer keeps it (it
// was superseded there); the context is the merge of both. Sync is
// idempotent, commutative and associative.
func (d DVV) Sync(o DVV) DVV {
	var sibs []Sibling
	if n := len(d.sibs) + len(o.sibs); n > 0 {
		sibs = make([]Sibling, 0, n)
	}
	i, j := 0, 0
	for i < len(d.sibs) || j < len(o.sibs) {
		c := 0
		switch {
		case j == len(o.sibs):
			c = -1
		case i == len(d.sibs):
			c = 1
		default:
			c = d.sibs[i].Dot.Compare(o.sibs[j].Dot)
		}
		switch {
		case c < 0:
			if !o.ctx.Covers(d.sibs[i].Dot) {
				sibs = append(sibs, d.sibs[i])
			}
			i++
		case c > 0:
			if !d.ctx.Covers(o.sibs[j].Dot) {
				sibs = append(sibs, o.sibs[j])
			}
			j++
		default:
			s := d.sibs[i]
			if compareValue(o.sibs[j].Value, s.Value) > 0 {
				s = o.sibs[j]
			}
			sibs = append(sibs, s)
			i++
			j++
		}
	}
	return DVV{ctx: d.ctx.Merge(o.ctx), sibs: sibs}
}

// Descends reports whether d has seen everything o has, so that
// d.Sync(o) is Equal to d.
func (d DVV) Descends(o DVV) bool {
	if !d.ctx.Descends(o.ctx) {
		return false
	}
	for _, s := range d.sibs {
		if !o.ctx.Covers(s.Dot) {
			continue // o has not seen s yet
		}
		t, ok := o.sibling(s.Dot)
		if !ok || compareValue(t.Value, s.Value) > 0 {
			return false // o superseded s (or disagrees about its value)
		}
	}
	return true
}

func (d DVV) sibling(dot Dot) (Sibling, bool) {
	i, ok := slices.BinarySearchFunc(d.sibs, dot, func(s Sibling, t Dot) int { return s.Dot.Compare(t) })
	if !ok {
		return Sibling{}, false
	}
	return d.sibs[i], true
}

// Equal reports whether d and o have the same context and the same siblings
// (dots, data, timestamps and tombstone flags).
func (d DVV) Equal(o DVV) bool {
	return d.ctx.Equal(o.ctx) && slices.EqualFunc(d.sibs, o.sibs, func(a, b Sibling) bool {
		return a.Dot == b.Dot && compareValue(a.Value, b.Value) == 0
	})
}

// Context returns the causal context to hand to a client with a read: passed
// back with its next write, it makes that write replace every sibling read.
func (d DVV) Context() VV { return d.ctx }

// Len returns the number of siblings, tombstones included.
func (d DVV) Len() int { return len(d.sibs) }

// Values returns every sibling, tombstones included, in dot order. The slice
// is a copy; the Data slices are shared and must not be modified.
func (d DVV) Values() []Sibling { return slices.Clone(d.sibs) }

// Live returns the siblings that are not tombstones, in dot order: what a read
// returns as the key's values.
func (d DVV) Live() []Sibling {
	var out []Sibling
	for _, s := range d.sibs {
		if !s.Tombstone {
			out = append(out, s)
		}
	}
	return out
}

// LWW returns the last writer's sibling: the greatest timestamp, ties broken by
// the greater dot, so every replica picks the same one. It may be a tombstone
// (the key reads as deleted). ok is false when the clock has no siblings.
func (d DVV) LWW() (s Sibling, ok bool) {
	for i, t := range d.sibs {
		if i == 0 || t.Timestamp > s.Timestamp || (t.Timestamp == s.Timestamp && t.Dot.Compare(s.Dot) > 0) {
			s, ok = t, true
		}
	}
	return s, ok
}

func (d DVV) String() string {
	var b strings.Builder
	b.WriteString(d.ctx.String())
	b.WriteByte('[')
	for i, s := range d.sibs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s.String())
	}
	b.WriteByte(']')
	return b.String()
}

// Binary formats. Varints are unsigned LEB128 (encoding/binary) in their
// shortest form; the decoders accept exactly what the encoders produce, so a
// clock has one encoding.
//
//	DVV: 0xD1 | uvarint len(C) | len(C) × entry | uvarint len(S) | len(S) × sibling
//	VV:  0xC1 | uvarint len(C) | len(C) × entry
//	entry:   uvarint len(node) | node | uvarint counter
//	sibling: uvarint index of its node in C | uvarint counter | flags (bit 0:
//	         tombstone) | timestamp, 8 bytes big-endian | uvarint len(data) | data
const (
	dvvFormat1 byte = 0xD1
	vvFormat1  byte = 0xC1

	flagTombstone byte = 1

	minEntryLen   = 3      // 1-byte length, 1-byte node, 1-byte counter
	minSiblingLen = 1 + 11 // index, counter, flags, timestamp, length
)

// Encode appends the binary form of d to dst and returns the extended slice.
func (d DVV) Encode(dst []byte) []byte {
	dst = append(dst, dvvFormat1)
	dst = appendEntries(dst, d.ctx.entries)
	dst = binary.AppendUvarint(dst, uint64(len(d.sibs)))
	node := 0
	for _, s := range d.sibs {
		for d.ctx.entries[node].Node != s.Dot.Node {
			node++ // siblings and entries are both sorted by node
		}
		dst = binary.AppendUvarint(dst, uint64(node))
		dst = binary.AppendUvarint(dst, s.Dot.Counter)
		var flags byte
		if s.Tombstone {
			flags |= flagTombstone
		}
		dst = append(dst, flags)
		dst = binary.BigEndian.AppendUint64(dst, uint64(s.Timestamp))
		dst = binary.AppendUvarint(dst, uint64(len(s.Data)))
		dst = append(dst, s.Data...)
	}
	return dst
}

// Encode appends the binary form of v to dst and returns the extended slice.
func (v VV) Encode(dst []byte) []byte {
	return appendEntries(append(dst, vvFormat1), v.entries)
}

func appendEntries(dst []byte, entries []Dot) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(entries)))
	for _, e := range entries {
		dst = binary.AppendUvarint(dst, uint64(len(e.Node)))
		dst = append(dst, e.Node...)
		dst = binary.AppendUvarint(dst, e.Counter)
	}
	return dst
}

// DecodeDVV parses the output of DVV.Encode. It checks every invariant and
// returns an error wrapping ErrInvalidClock on any corrupt, truncated,
// non-canonical or trailing input; it never panics. Data is copied out of b.
func DecodeDVV(b []byte) (DVV, error) {
	r := reader{b: b}
	if err := r.format(dvvFormat1, "DVV"); err != nil {
		return DVV{}, err
	}
	entries, err := r.entries()
	if err != nil {
		return DVV{}, err
	}
	n, err := r.count("siblings", minSiblingLen)
	if err != nil {
		return DVV{}, err
	}
	var sibs []Sibling
	var arena []byte // one allocation for every sibling's data
	if n > 0 {
		sibs = make([]Sibling, 0, n)
		arena = make([]byte, 0, len(r.b)-r.off)
	}
	for i := range n {
		idx, err := r.uvarint("sibling node index")
		if err != nil {
			return DVV{}, err
		}
		if idx >= uint64(len(entries)) {
			return DVV{}, r.errorf("sibling %d: node index %d out of range (context has %d nodes)", i, idx, len(entries))
		}
		node := entries[idx]
		counter, err := r.uvarint("sibling counter")
		if err != nil {
			return DVV{}, err
		}
		dot := Dot{node.Node, counter}
		if counter == 0 || counter > node.Counter {
			return DVV{}, r.errorf("sibling %d: dot %s not covered by context entry %s", i, dot, node)
		}
		if i > 0 && sibs[i-1].Dot.Compare(dot) >= 0 {
			return DVV{}, r.errorf("sibling %d: dot %s not after %s", i, dot, sibs[i-1].Dot)
		}
		if r.off+9 > len(r.b) {
			return DVV{}, r.errorf("sibling %d: truncated", i)
		}
		flags := r.b[r.off]
		if flags&^flagTombstone != 0 {
			return DVV{}, r.errorf("sibling %d: unknown flags %#x", i, flags)
		}
		ts := Timestamp(binary.BigEndian.Uint64(r.b[r.off+1:]))
		r.off += 9
		size, err := r.uvarint("data length")
		if err != nil {
			return DVV{}, err
		}
		if size > uint64(len(r.b)-r.off) {
			return DVV{}, r.errorf("sibling %d: data length %d exceeds the %d bytes left", i, size, len(r.b)-r.off)
		}
		var data []byte
		if size > 0 {
			start := len(arena)
			arena = append(arena, r.b[r.off:r.off+int(size)]...)
			data = arena[start:len(arena):len(arena)]
			r.off += int(size)
		}
		sibs = append(sibs, Sibling{dot, Value{Data: data, Timestamp: ts, Tombstone: flags&flagTombstone != 0}})
	}
	if err := r.end(); err != nil {
		return DVV{}, err
	}
	return DVV{ctx: VV{entries}, sibs: sibs}, nil
}

// DecodeVV parses the output of VV.Encode, with the same guarantees as
// DecodeDVV.
func DecodeVV(b []byte) (VV, error) {
	r := reader{b: b}
	if err := r.format(vvFormat1, "version vector"); err != nil {
		return VV{}, err
	}
	entries, err := r.entries()
	if err != nil {
		return VV{}, err
	}
	if err := r.end(); err != nil {
		return VV{}, err
	}
	return VV{entries}, nil
}

type reader struct {
	b   []byte
	off int
}

func (r *reader) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrInvalidClock, r.off, fmt.Sprintf(format, args...))
}

func (r *reader) format(want byte, what string) error {
	if len(r.b) == 0 {
		return fmt.Errorf("%w: empty %s encoding", ErrInvalidClock, what)
	}
	if r.b[0] != want {
		return fmt.Errorf("%w: format byte %#x, want %#x (%s)", ErrInvalidClock, r.b[0], want, what)
	}
	r.off = 1
	return nil
}

// uvarint reads a shortest-form unsigned varint.
func (r *reader) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	switch {
	case n == 0:
		return 0, r.errorf("truncated %s", what)
	case n < 0:
		return 0, r.errorf("%s overflows 64 bits", what)
	case n != (bits.Len64(v|1)+6)/7:
		return 0, r.errorf("%s %d is not in shortest form", what, v)
	}
	r.off += n
	return v, nil
}

// count reads an element count and checks that the input left can hold that
// many elements of at least minLen bytes, so a corrupt count cannot make the
// decoder allocate more than the input's size.
func (r *reader) count(what string, minLen int) (int, error) {
	n, err := r.uvarint(what + " count")
	if err != nil {
		return 0, err
	}
	if left := len(r.b) - r.off; n > uint64(left/minLen) {
		return 0, r.errorf("%d %s cannot fit in the %d bytes left", n, what, left)
	}
	return int(n), nil
}

func (r *reader) entries() ([]Dot, error) {
	n, err := r.count("context entries", minEntryLen)
	if err != nil || n == 0 {
		return nil, err
	}
	entries := make([]Dot, 0, n)
	for i := range n {
		size, err := r.uvarint("node name length")
		if err != nil {
			return nil, err
		}
		if size == 0 {
			return nil, r.errorf("context entry %d: empty node name", i)
		}
		if size > uint64(len(r.b)-r.off) {
			return nil, r.errorf("context entry %d: node name length %d exceeds the %d bytes left", i, size, len(r.b)-r.off)
		}
		node := string(r.b[r.off : r.off+int(size)])
		r.off += int(size)
		counter, err := r.uvarint("context counter")
		if err != nil {
			return nil, err
		}
		if counter == 0 {
			return nil, r.errorf("context entry %d: node %q has counter 0", i, node)
		}
		if i > 0 && entries[i-1].Node >= node {
			return nil, r.errorf("context entry %d: node %q not after %q", i, node, entries[i-1].Node)
		}
		entries = append(entries, Dot{node, counter})
	}
	return entries, nil
}

func (r *reader) end() error {
	if r.off != len(r.b) {
		return r.errorf("%d trailing bytes", len(r.b)-r.off)
	}
	return nil
}

// Keep returns the clock with only the sibling whose dot is dot, and the same
// context: how a `resolve: lww` keyspace drops the losers of concurrent writes
// for good (a replica that still has them drops them on Sync, because the
// context shows they were seen). Without such a sibling it returns the clock
// with no siblings.
func (d DVV) Keep(dot Dot) DVV {
	out := DVV{ctx: d.ctx}
	for _, s := range d.sibs {
		if s.Dot == dot {
			out.sibs = []Sibling{s}
		}
	}
	return out
}

// ExtendContext returns the encoded causal context ctx (empty: none) with
// the write (node, counter) added: what a client that wrote with ctx has
// seen once that write is acknowledged. It is a safe context for the
// client's next write only when the write left no other live sibling: the
// counter also covers any unseen concurrent dot the same node minted.
func ExtendContext(ctx []byte, node string, counter uint64) ([]byte, error) {
	var vv VV
	if len(ctx) > 0 {
		var err error
		if vv, err = DecodeVV(ctx); err != nil {
			return nil, err
		}
	}
	dot, err := NewVV(map[string]uint64{node: counter})
	if err != nil {
		return nil, err
	}
	return vv.Merge(dot).Encode(nil), nil
}
