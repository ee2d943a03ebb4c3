package ring

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/capkv/capkv/internal/kverrors"
)

// Node is one storage node as the ring sees it.
type Node struct {
	ID     string
	Addr   string
	Region string // locality label ("" = none: never eligible for locality keyspaces)
	// Incarnation names the node's data directory (not used for placement):
	// a wiped node must not come back under its old ID.
	Incarnation string `json:",omitempty"`
}

// Topology is everything a ring is built from. Every node that builds a ring
// from the same Topology and Options gets the same placements.
type Topology struct {
	Epoch     uint64
	Nodes     []Node
	Keyspaces []KeyspaceConfig
	// Assignments pins the replica set of a partition (by PartitionID
	// string) once it was placed, overriding the computed preference list:
	// a partition's Raft group keeps its members when nodes join, until a
	// rebalancing moves it explicitly.
	Assignments map[string][]string
	// Joining names, by PartitionID string, the nodes a partition is being
	// moved to (rebalancing): they receive its writes and its data before
	// they count as its replicas, and are not in its preference list.
	Joining map[string][]string
	// Leaving are nodes being drained (rebalancing): still in Nodes and
	// serving what they hold, but moves take everything off them.
	Leaving []string
	// MetaJoining is the node taking a leaving node's metadata seat.
	MetaJoining string
}

// Options tunes ring construction. All nodes of a cluster must use the same.
type Options struct {
	VNodes int // tokens per node; 0 means DefaultVNodes
}

// DefaultVNodes is the number of tokens per node. 64 keeps the replica load of
// the busiest node within about 1.5x the mean up to 64 nodes (see the tests).
const (
	DefaultVNodes = 64
	MaxVNodes     = 4096
)

// PartitionID names one partition of a keyspace in one region.
type PartitionID struct {
	Keyspace string
	Region   string // "" for keyspaces placed over all nodes
	Index    int
}

// String returns "keyspace/region/index", with "*" for the empty region.
func (p PartitionID) String() string {
	r := p.Region
	if r == "" {
		r = "*"
	}
	return p.Keyspace + "/" + r + "/" + strconv.Itoa(p.Index)
}

// ParsePartitionID is the inverse of PartitionID.String. It accepts only the
// canonical form, so that parse and print round-trip exactly.
func ParsePartitionID(s string) (PartitionID, error) {
	bad := func(what string) (PartitionID, error) {
		return PartitionID{}, fmt.Errorf("%w: partition ID %q: %s, want keyspace/region/index like \"accounts/eu/3\" or \"sessions/*/3\"",
			kverrors.ErrInvalidArgument, s, what)
	}
	ks, rest, ok := strings.Cut(s, "/")
	if !ok {
		return bad("missing '/'")
	}
	region, idx, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("missing second '/'")
	}
	if !validKeyspaceName(ks) {
		return bad(fmt.Sprintf("keyspace %q must match %s", ks, keyspaceNameRule))
	}
	if region == "*" {
		region = ""
	} else if !validRegion(region) {
		return bad(fmt.Sprintf("region %q must be \"*\" or match %s", region, regionRule))
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 || n >= MaxPartitions || strconv.Itoa(n) != idx {
		return bad(fmt.Sprintf("index %q must be a decimal in [0, %d) without sign or leading zeros", idx, MaxPartitions))
	}
	return PartitionID{Keyspace: ks, Region: region, Index: n}, nil
}

// Placement is where one key lives.
type Placement struct {
	Keyspace  *KeyspaceConfig // the ring's own copy; do not modify
	Partition PartitionID
	// Replicas is the preference list: node IDs, first = primary. It is shared
	// with the ring and other placements; callers must not modify it.
	Replicas []string
	// Joining are the nodes the partition is moving to (Topology.Joining),
	// not yet among Replicas. Shared; do not modify.
	Joining []string
}

// PartitionInfo describes one partition for listings (kvctl ring, metadata).
type PartitionInfo struct {
	ID       PartitionID
	Replicas []string // preference list; empty when Err is set. Shared, do not modify.
	Joining  []string // nodes the partition is moving to (Topology.Joining). Shared.
	Err      string   // why the partition cannot be placed (too few nodes in its region)
}

// Ring maps keys to partitions and partitions to preference lists. It is
// immutable after New and safe for concurrent use; a topology change builds a
// new Ring.
type Ring struct {
	topo      Topology // deep copy of the input
	vnodes    int
	nodes     map[string]Node
	regions   []string // sorted distinct non-empty node regions
	spaces    map[string]*keyspaceRing
	names     []string // sorted keyspace names
	knownList string   // names joined, for the unknown-keyspace error
}

type keyspaceRing struct {
	cfg     KeyspaceConfig
	tmpl    *Template
	ranges  []Range                // sorted by Lo; empty = hash partitioning
	global  *regionRing            // keyspaces without a locality attribute
	regions map[string]*regionRing // by region, for keyspaces with a locality attribute
}

// regionRing holds the precomputed preference lists of one keyspace in one region.
type regionRing struct {
	region  string
	nodes   int        // eligible nodes
	prefs   [][]string // by partition index; nil when nodes < replicas
	joining [][]string // by partition index; nil when nothing moves here
}

// token is one virtual node: a point on the 64-bit hash circle owned by a node.
type token struct {
	pos  uint64
	node string
}

// New builds a ring. It validates the topology and reports every problem at
// once: empty or duplicate node IDs, bad region labels, invalid or duplicate
// keyspaces (each checked after WithDefaults). Errors wrap
// kverrors.ErrInvalidArgument.
func New(t Topology, o Options) (*Ring, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", kverrors.ErrInvalidArgument, fmt.Sprintf(format, args...)))
	}
	vn := o.VNodes
	if vn == 0 {
		vn = DefaultVNodes
	}
	if vn < 1 || vn > MaxVNodes {
		bad("options: vnodes = %d, must be in [1, %d]", o.VNodes, MaxVNodes)
	}
	r := &Ring{
		topo:   copyTopology(t),
		vnodes: vn,
		nodes:  make(map[string]Node, len(t.Nodes)),
		spaces: make(map[string]*keyspaceRing, len(t.Keyspaces)),
	}
	for i, n := range t.Nodes {
		switch {
		case n.ID == "":
			bad("node %d (addr %q): empty ID", i, n.Addr)
			continue
		case n.Region != "" && !validRegion(n.Region):
			bad("node %q: region %q must match %s", n.ID, n.Region, regionRule)
		}
		if _, dup := r.nodes[n.ID]; dup {
			bad("node %q listed twice", n.ID)
			continue
		}
		r.nodes[n.ID] = n
	}
	for _, k := range t.Keyspaces {
		k = k.WithDefaults()
		if err := k.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := r.spaces[k.Name]; dup {
			bad("keyspace %q listed twice", k.Name)
			continue
		}
		tmpl, _ := ParseTemplate(k.Template) // Validate parsed it
		r.spaces[k.Name] = &keyspaceRing{cfg: k, tmpl: tmpl, ranges: sortedRanges(k.Ranges)}
		r.names = append(r.names, k.Name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(r.names)
	r.knownList = strings.Join(r.names, ", ")

	// Sort nodes by ID so that the input order never matters.
	ids := make([]string, 0, len(r.nodes))
	byRegion := map[string][]string{}
	for id, n := range r.nodes {
		ids = append(ids, id)
		if n.Region != "" {
			byRegion[n.Region] = append(byRegion[n.Region], id)
		}
	}
	slices.Sort(ids)
	for reg, members := range byRegion {
		slices.Sort(members)
		r.regions = append(r.regions, reg)
	}
	slices.Sort(r.regions)

	// Tokens are global: a node has the same tokens in every keyspace and every
	// region ring, so membership changes move the same share everywhere.
	allTokens := make([]token, 0, len(ids)*vn)
	var buf []byte
	for _, id := range ids {
		for i := range vn {
			buf = append(append(append(buf[:0], id...), '#'), strconv.Itoa(i)...)
			allTokens = append(allTokens, token{pos: xxhash.Sum64(buf), node: id})
		}
	}
	slices.SortFunc(allTokens, compareTokens)
	regionTokens := make(map[string][]token, len(r.regions))
	for _, tk := range allTokens {
		if reg := r.nodes[tk.node].Region; reg != "" {
			regionTokens[reg] = append(regionTokens[reg], tk)
		}
	}

	for _, name := range r.names {
		ks := r.spaces[name]
		if ks.tmpl.locality < 0 {
			ks.global = buildRegionRing(&ks.cfg, "", allTokens, len(ids))
			continue
		}
		ks.regions = make(map[string]*regionRing, len(r.regions))
		for _, reg := range r.regions {
			ks.regions[reg] = buildRegionRing(&ks.cfg, reg, regionTokens[reg], len(byRegion[reg]))
		}
	}
	if err := r.applyAssignments(t.Assignments); err != nil {
		return nil, err
	}
	if err := r.applyJoining(t.Joining); err != nil {
		return nil, err
	}
	return r, nil
}

// applyJoining records the nodes partitions are moving to.
func (r *Ring) applyJoining(js map[string][]string) error {
	var errs []error
	for id, nodes := range js {
		pid, err := ParsePartitionID(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ks, ok := r.spaces[pid.Keyspace]
		if !ok || pid.Index < 0 || pid.Index >= ks.cfg.Partitions {
			continue // keyspace dropped or re-created: the move is inert
		}
		for _, n := range nodes {
			if _, ok := r.nodes[n]; !ok {
				errs = append(errs, fmt.Errorf("%w: partition %s moves to unknown node %q", kverrors.ErrInvalidArgument, id, n))
			}
		}
		rr := ks.global
		if ks.tmpl.locality >= 0 {
			rr = ks.regions[pid.Region]
		}
		if rr == nil || len(nodes) == 0 {
			continue
		}
		if rr.joining == nil {
			rr.joining = make([][]string, ks.cfg.Partitions)
		}
		rr.joining[pid.Index] = slices.Clip(slices.Clone(nodes))
	}
	return errors.Join(errs...)
}

func (rr *regionRing) joiningAt(i int) []string {
	if rr.joining == nil {
		return nil
	}
	return rr.joining[i]
}

// applyAssignments overrides computed preference lists with pinned ones.
func (r *Ring) applyAssignments(as map[string][]string) error {
	var errs []error
	for id, reps := range as {
		pid, err := ParsePartitionID(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ks, ok := r.spaces[pid.Keyspace]
		if !ok {
			continue // keyspace dropped: the assignment is inert
		}
		if pid.Index < 0 || pid.Index >= ks.cfg.Partitions {
			errs = append(errs, fmt.Errorf("%w: assignment %s: partition index out of range", kverrors.ErrInvalidArgument, id))
			continue
		}
		if len(reps) == 0 || len(reps) != len(slices.Compact(slices.Sorted(slices.Values(reps)))) {
			errs = append(errs, fmt.Errorf("%w: assignment %s: replicas %v must be distinct and non-empty", kverrors.ErrInvalidArgument, id, reps))
			continue
		}
		for _, n := range reps {
			if _, ok := r.nodes[n]; !ok {
				errs = append(errs, fmt.Errorf("%w: assignment %s names unknown node %q", kverrors.ErrInvalidArgument, id, n))
			}
		}
		rr := ks.global
		if ks.tmpl.locality >= 0 {
			rr = ks.regions[pid.Region]
		}
		if rr == nil {
			continue // region without nodes now: nothing can be served there anyway
		}
		if rr.prefs == nil {
			rr.prefs = make([][]string, ks.cfg.Partitions)
		}
		rr.prefs[pid.Index] = slices.Clip(slices.Clone(reps))
	}
	return errors.Join(errs...)
}

func compareTokens(a, b token) int {
	if c := cmp.Compare(a.pos, b.pos); c != 0 {
		return c
	}
	return strings.Compare(a.node, b.node) // ties are astronomically rare, but must be deterministic
}

// buildRegionRing precomputes the preference list of every partition. Partitions
// whose walk starts in the same gap between two tokens share one list, so
// memory is bounded by the number of tokens, not by Q.
func buildRegionRing(k *KeyspaceConfig, region string, tokens []token, nodes int) *regionRing {
	rr := &regionRing{region: region, nodes: nodes}
	if nodes < k.Replicas || len(tokens) == 0 {
		return rr
	}
	n := k.Replicas
	offset := xxhash.Sum64String(k.Name)
	byStart := make([][]string, len(tokens)) // preference list of a walk starting at token i
	rr.prefs = make([][]string, k.Partitions)
	for p := range k.Partitions {
		start := partitionStart(p, k.Partitions) + offset
		i, _ := slices.BinarySearchFunc(tokens, start, func(t token, pos uint64) int { return cmp.Compare(t.pos, pos) })
		if i == len(tokens) {
			i = 0 // wrap around the circle
		}
		if byStart[i] == nil {
			byStart[i] = walk(tokens, i, n)
		}
		rr.prefs[p] = byStart[i]
	}
	return rr
}

// walk returns the first n distinct nodes met clockwise from tokens[i].
// The caller guarantees at least n distinct nodes exist.
func walk(tokens []token, i, n int) []string {
	out := make([]string, 0, n)
	for j := 0; len(out) < n; j++ {
		id := tokens[(i+j)%len(tokens)].node
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out[:n:n] // full slice expression: an append by a caller copies
}

// partitionStart is the first hash of partition p of q: ceil(p * 2^64 / q).
// With partitionOf it cuts the circle into q ranges whose sizes differ by at most 1.
func partitionStart(p, q int) uint64 {
	quo, rem := bits.Div64(uint64(p), 0, uint64(q))
	if rem != 0 {
		quo++
	}
	return quo
}

// partitionOf is floor(h * q / 2^64), which equals h / (2^64/q) when q is a power
// of two and stays in [0, q) for every q without a division.
func partitionOf(h uint64, q int) int {
	hi, _ := bits.Mul64(h, uint64(q))
	return int(hi)
}

// Epoch returns the topology epoch the ring was built from.
func (r *Ring) Epoch() uint64 { return r.topo.Epoch }

// Topology returns a copy of the topology the ring was built from.
func (r *Ring) Topology() Topology { return copyTopology(r.topo) }

func copyTopology(t Topology) Topology {
	if t.Assignments != nil {
		as := make(map[string][]string, len(t.Assignments))
		for k, v := range t.Assignments {
			as[k] = slices.Clone(v)
		}
		t.Assignments = as
	}
	if t.Joining != nil {
		js := make(map[string][]string, len(t.Joining))
		for k, v := range t.Joining {
			js[k] = slices.Clone(v)
		}
		t.Joining = js
	}
	t.Leaving = slices.Clone(t.Leaving)
	t.Nodes = slices.Clone(t.Nodes)
	t.Keyspaces = slices.Clone(t.Keyspaces)
	for i := range t.Keyspaces {
		t.Keyspaces[i].Ranges = slices.Clone(t.Keyspaces[i].Ranges)
	}
	return t
}

// Keyspace returns the ring's copy of a keyspace's configuration, with defaults
// applied. Callers must not modify it.
func (r *Ring) Keyspace(name string) (*KeyspaceConfig, bool) {
	ks, ok := r.spaces[name]
	if !ok {
		return nil, false
	}
	return &ks.cfg, true
}

// Keyspaces returns every keyspace configuration, sorted by name.
func (r *Ring) Keyspaces() []*KeyspaceConfig {
	out := make([]*KeyspaceConfig, len(r.names))
	for i, name := range r.names {
		out[i] = &r.spaces[name].cfg
	}
	return out
}

// Node returns a node by ID.
func (r *Ring) Node(id string) (Node, bool) {
	n, ok := r.nodes[id]
	return n, ok
}

// Regions returns the sorted distinct non-empty node regions.
func (r *Ring) Regions() []string { return slices.Clone(r.regions) }

// Locate places a key: the keyspace named by its first segment, the locality and
// partition key extracted by the keyspace's template, the partition index, and
// the preference list of that partition in the key's region. It does not
// allocate on success.
//
// Errors: kverrors.ErrInvalidArgument (malformed key, ID outside every range),
// kverrors.ErrUnknownKeyspace, kverrors.ErrUnavailable (the key's region has
// fewer nodes than the keyspace's replication factor).
func (r *Ring) Locate(key string) (Placement, error) {
	name, err := SplitKeyspace(key)
	if err != nil {
		return Placement{}, err
	}
	ks, ok := r.spaces[name]
	if !ok {
		return Placement{}, r.unknownKeyspace(name)
	}
	locality, partKey, err := ks.tmpl.Extract(key)
	if err != nil {
		return Placement{}, err
	}
	// A bad key is reported before a small region: retrying it cannot help.
	idx, err := ks.partitionIndex(key, partKey)
	if err != nil {
		return Placement{}, err
	}
	rr := ks.global
	if ks.tmpl.locality >= 0 {
		if rr = ks.regions[locality]; rr == nil {
			return Placement{}, tooFewNodes(locality, 0, &ks.cfg)
		}
	}
	if rr.prefs == nil || rr.prefs[idx] == nil {
		return Placement{}, tooFewNodes(rr.region, rr.nodes, &ks.cfg)
	}
	return Placement{
		Keyspace:  &ks.cfg,
		Partition: PartitionID{Keyspace: ks.cfg.Name, Region: rr.region, Index: idx},
		Replicas:  rr.prefs[idx],
		Joining:   rr.joiningAt(idx),
	}, nil
}

func (ks *keyspaceRing) partitionIndex(key, partKey string) (int, error) {
	if len(ks.ranges) == 0 {
		return partitionOf(xxhash.Sum64String(partKey), ks.cfg.Partitions), nil
	}
	id, err := strconv.ParseUint(partKey, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: key %q: %s %q is not an unsigned 64-bit integer, but keyspace %q partitions by ID range",
			kverrors.ErrInvalidArgument, key, ks.tmpl.PartitionAttr(), partKey, ks.cfg.Name)
	}
	// Binary search for the last range with Lo <= id (ranges do not overlap).
	lo, hi := 0, len(ks.ranges)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ks.ranges[m].Lo <= id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || id > ks.ranges[lo-1].Hi {
		return 0, fmt.Errorf("%w: key %q: %s %d is outside every range of keyspace %q (%s)",
			kverrors.ErrInvalidArgument, key, ks.tmpl.PartitionAttr(), id, ks.cfg.Name, FormatRanges(ks.ranges))
	}
	return ks.ranges[lo-1].Partition, nil
}

func (r *Ring) unknownKeyspace(name string) error {
	known := r.knownList
	if known == "" {
		known = "none"
	}
	return fmt.Errorf("%w %q (known keyspaces: %s)", kverrors.ErrUnknownKeyspace, name, known)
}

func tooFewNodes(region string, have int, k *KeyspaceConfig) error {
	where := "the cluster"
	if region != "" {
		where = fmt.Sprintf("region %q", region)
	}
	return fmt.Errorf("%w: %s has %d node(s) but keyspace %q needs %d replicas",
		kverrors.ErrUnavailable, where, have, k.Name, k.Replicas)
}

// PreferenceList returns the replicas of one partition, first = primary.
// The slice is shared; callers must not modify it.
func (r *Ring) PreferenceList(id PartitionID) ([]string, error) {
	ks, ok := r.spaces[id.Keyspace]
	if !ok {
		return nil, r.unknownKeyspace(id.Keyspace)
	}
	if id.Index < 0 || id.Index >= ks.cfg.Partitions {
		return nil, fmt.Errorf("%w: partition %s: index out of [0, %d)", kverrors.ErrInvalidArgument, id, ks.cfg.Partitions)
	}
	rr := ks.global
	if ks.tmpl.locality >= 0 {
		if id.Region == "" {
			return nil, fmt.Errorf("%w: partition %s: keyspace %q is placed per region, name one", kverrors.ErrInvalidArgument, id, id.Keyspace)
		}
		if rr = ks.regions[id.Region]; rr == nil {
			return nil, tooFewNodes(id.Region, 0, &ks.cfg)
		}
	} else if id.Region != "" {
		return nil, fmt.Errorf("%w: partition %s: keyspace %q is placed over all nodes, its region is \"*\"", kverrors.ErrInvalidArgument, id, id.Keyspace)
	}
	if rr.prefs == nil || rr.prefs[id.Index] == nil {
		return nil, tooFewNodes(rr.region, rr.nodes, &ks.cfg)
	}
	return rr.prefs[id.Index], nil
}

// PlacementOf is the placement of a partition, as Locate gives it for the
// partition's keys.
func (r *Ring) PlacementOf(id PartitionID) (Placement, error) {
	reps, err := r.PreferenceList(id)
	if err != nil {
		return Placement{}, err
	}
	ks := r.spaces[id.Keyspace]
	rr := ks.global
	if ks.tmpl.locality >= 0 {
		rr = ks.regions[id.Region]
	}
	return Placement{Keyspace: &ks.cfg, Partition: id, Replicas: reps, Joining: rr.joiningAt(id.Index)}, nil
}

// Partitions lists every partition of a keyspace in every region it can be
// placed in (every node region for locality keyspaces, else the single region
// ""), sorted by region then index. Partitions of a region with too few nodes
// have no replicas and say why in Err. An unknown keyspace yields nil.
func (r *Ring) Partitions(keyspace string) []PartitionInfo {
	ks, ok := r.spaces[keyspace]
	if !ok {
		return nil
	}
	rings := []*regionRing{ks.global}
	if ks.tmpl.locality >= 0 {
		rings = rings[:0]
		for _, reg := range r.regions {
			rings = append(rings, ks.regions[reg])
		}
	}
	out := make([]PartitionInfo, 0, len(rings)*ks.cfg.Partitions)
	for _, rr := range rings {
		msg := tooFewNodes(rr.region, rr.nodes, &ks.cfg).Error()
		for i := range ks.cfg.Partitions {
			info := PartitionInfo{ID: PartitionID{Keyspace: keyspace, Region: rr.region, Index: i}}
			if rr.prefs != nil && rr.prefs[i] != nil {
				info.Replicas = rr.prefs[i]
				info.Joining = rr.joiningAt(i)
			} else {
				info.Err = msg
			}
			out = append(out, info)
		}
	}
	return out
}
