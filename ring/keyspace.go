package ring

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// Defaults applied by KeyspaceConfig.WithDefaults.
const (
	DefaultReplicas   = 3
	DefaultPartitions = 8
	// MaxPartitions bounds the per-region preference tables built by New.
	MaxPartitions = 65536
)

// Conflict resolution rules of AP keyspaces.
const (
	ResolveSiblings = "siblings" // keep concurrent writes as siblings (default)
	ResolveLWW      = "lww"      // last writer (highest HLC timestamp) wins
)

// Range maps the inclusive ID range [Lo, Hi] to a partition index.
type Range struct {
	Lo, Hi    uint64
	Partition int
}

// KeyspaceConfig describes one keyspace: its CAP mode, replication, partitioning
// and placement rule.
type KeyspaceConfig struct {
	Name     string
	Mode     consistency.Mode
	Replicas int // replication factor N
	// Partitions is Q, the number of partitions per region.
	Partitions int
	// Template is the placement rule; "" means "NAME/..." (hash the rest of the key).
	Template string
	// Ranges, when non-empty, partition by numeric ID range on the template's
	// partition attribute instead of by hash.
	Ranges       []Range
	DefaultLevel consistency.Level
	// Resolve is the AP conflict rule: ResolveSiblings (default) or ResolveLWW.
	Resolve string
	// MaxSiblings caps the live siblings an AP key may keep: a write that
	// would add one beyond it is refused (0: DefaultMaxSiblings, which
	// SiblingCap applies; WithDefaults leaves it 0 so that configs stored
	// before the field existed compare equal).
	MaxSiblings int `json:",omitempty"`
	// Grants are the client identities allowed on the keyspace, sorted by
	// identity (see internal/access; empty: open to every client).
	Grants []Grant `json:",omitempty"`
}

// Grant is what one client identity (its certificate's common name) may
// do on a keyspace.
type Grant struct {
	Identity           string
	Read, Write, Admin bool
}

// ApplyGrant returns grants with g's permissions added to its identity's
// (revoke: its grant removed), kept sorted by identity, and whether that
// changed anything. grants is not modified.
func ApplyGrant(grants []Grant, g Grant, revoke bool) ([]Grant, bool) {
	out := slices.Clone(grants)
	i, found := slices.BinarySearchFunc(out, g.Identity, func(x Grant, id string) int { return strings.Compare(x.Identity, id) })
	switch {
	case revoke && !found:
		return grants, false
	case revoke:
		return slices.Delete(out, i, i+1), true
	case !found:
		return slices.Insert(out, i, g), true
	}
	was := out[i]
	out[i].Read, out[i].Write, out[i].Admin = was.Read || g.Read, was.Write || g.Write, was.Admin || g.Admin
	return out, out[i] != was
}

// String is the grant as "alice=read,write".
func (g Grant) String() string {
	var ps []string
	for _, p := range []struct {
		on   bool
		name string
	}{{g.Read, "read"}, {g.Write, "write"}, {g.Admin, "admin"}} {
		if p.on {
			ps = append(ps, p.name)
		}
	}
	return g.Identity + "=" + strings.Join(ps, ",")
}

// DefaultMaxSiblings is the sibling cap of an AP keyspace that sets none:
// well above what truly concurrent writers leave, far below what blind
// writers pile up (Riak warns at 25 and refuses at 100).
const DefaultMaxSiblings = 16

// MaxMaxSiblings bounds the cap a keyspace may set: every read returns all
// of a key's siblings and every write stores them.
const MaxMaxSiblings = 1000

// SiblingCap is the keyspace's effective sibling cap (configs stored before
// the field existed carry 0).
func (k KeyspaceConfig) SiblingCap() int {
	if k.MaxSiblings > 0 {
		return k.MaxSiblings
	}
	return DefaultMaxSiblings
}

// WithDefaults returns a copy of k with every unset field given its default:
// Replicas 3, Partitions 8 (or, with Ranges, one more than the highest range
// partition), Template "NAME/...", DefaultLevel the mode's default, and for AP
// keyspaces Resolve "siblings". The Ranges slice is copied.
func (k KeyspaceConfig) WithDefaults() KeyspaceConfig {
	k.Ranges = slices.Clone(k.Ranges)
	if k.Replicas == 0 {
		k.Replicas = DefaultReplicas
	}
	if k.Partitions == 0 {
		k.Partitions = DefaultPartitions
		if len(k.Ranges) > 0 {
			k.Partitions = 0
			for _, r := range k.Ranges {
				k.Partitions = max(k.Partitions, r.Partition+1)
			}
		}
	}
	if k.Template == "" {
		k.Template = k.Name + "/..."
	}
	if k.DefaultLevel == consistency.Default && (k.Mode == consistency.CP || k.Mode == consistency.AP) {
		k.DefaultLevel = k.Mode.DefaultLevel()
	}
	if k.Resolve == "" && k.Mode == consistency.AP {
		k.Resolve = ResolveSiblings
	}
	return k
}

// Validate reports every bad field at once, each naming the keyspace, the field
// and its value, joined with errors.Join; each wraps kverrors.ErrInvalidArgument.
// Call it on the result of WithDefaults: zero values are reported as bad.
func (k KeyspaceConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: keyspace %q: %s", kverrors.ErrInvalidArgument, k.Name, fmt.Sprintf(format, args...)))
	}
	if !validKeyspaceName(k.Name) {
		bad("name %q must match %s", k.Name, keyspaceNameRule)
	}
	modeOK := k.Mode == consistency.CP || k.Mode == consistency.AP
	if !modeOK {
		bad("mode %q, want %q or %q", k.Mode, consistency.CP, consistency.AP)
	}
	if k.Replicas < 1 {
		bad("replicas = %d, must be at least 1", k.Replicas)
	}
	if k.Partitions < 1 || k.Partitions > MaxPartitions {
		bad("partitions = %d, must be in [1, %d]", k.Partitions, MaxPartitions)
	}
	var tmpl *Template
	if t, err := ParseTemplate(k.Template); err != nil {
		bad("template: %v", strings.TrimPrefix(err.Error(), kverrors.ErrInvalidArgument.Error()+": "))
	} else if t.Keyspace() != k.Name {
		bad("template %q starts with %q, want the keyspace name %q", k.Template, t.Keyspace(), k.Name)
	} else {
		tmpl = t
	}
	if modeOK && k.DefaultLevel != consistency.Default && !k.Mode.Supports(k.DefaultLevel) {
		bad("default level %q is not offered by %s keyspaces", k.DefaultLevel, k.Mode)
	}
	if len(k.Ranges) > 0 {
		if tmpl != nil && tmpl.PartitionAttr() == "" {
			bad("ranges need a partition attribute in the template, e.g. %q; template %q has none", k.Name+"/{id}/...", k.Template)
		}
		for i, r := range k.Ranges {
			if r.Lo > r.Hi {
				bad("range %d (%s): lo %d > hi %d", i, formatRange(r), r.Lo, r.Hi)
			}
			if r.Partition < 0 || r.Partition >= k.Partitions {
				bad("range %d (%s): partition %d out of [0, %d)", i, formatRange(r), r.Partition, k.Partitions)
			}
		}
		// Compare each range with the one reaching furthest before it, so that
		// an overlap hidden behind a short range is still found.
		valid := slices.DeleteFunc(slices.Clone(k.Ranges), func(r Range) bool { return r.Lo > r.Hi })
		sorted := sortedRanges(valid)
		for i := 1; i < len(sorted); i++ {
			if prev := sorted[i-1]; sorted[i].Lo <= prev.Hi {
				bad("ranges %s and %s overlap", formatRange(prev), formatRange(sorted[i]))
				if sorted[i].Hi < prev.Hi {
					sorted[i] = prev
				}
			}
		}
	}
	switch {
	case k.Resolve == "":
	case k.Mode == consistency.CP:
		bad("resolve %q is set but cp keyspaces have no conflicts to resolve", k.Resolve)
	case k.Resolve != ResolveSiblings && k.Resolve != ResolveLWW:
		bad("resolve %q, want %q or %q", k.Resolve, ResolveSiblings, ResolveLWW)
	}
	switch {
	case k.MaxSiblings < 0 || k.MaxSiblings > MaxMaxSiblings:
		bad("max_siblings = %d, must be in [1, %d] (0: the default %d)", k.MaxSiblings, MaxMaxSiblings, DefaultMaxSiblings)
	case k.MaxSiblings > 0 && k.Mode == consistency.CP:
		bad("max_siblings %d is set but cp keyspaces keep one value per key", k.MaxSiblings)
	}
	return errors.Join(errs...)
}

func sortedRanges(rs []Range) []Range {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b Range) int {
		if c := compareU64(a.Lo, b.Lo); c != 0 {
			return c
		}
		return compareU64(a.Hi, b.Hi)
	})
	return s
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ParseRanges parses a comma-separated list of "lo-hi:partition" items, e.g.
// "0-999999:0,1000000-1999999:1". Spaces around items are ignored; an empty
// string yields no ranges. It checks syntax only: overlaps and partition bounds
// are reported by KeyspaceConfig.Validate.
func ParseRanges(s string) ([]Range, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	items := strings.Split(s, ",")
	out := make([]Range, 0, len(items))
	for i, item := range items {
		item = strings.TrimSpace(item)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: ranges %q: item %d %q: %s, want lo-hi:partition like 0-999:0",
				kverrors.ErrInvalidArgument, s, i, item, fmt.Sprintf(format, args...))
		}
		span, part, ok := strings.Cut(item, ":")
		if !ok {
			return nil, bad("missing ':partition'")
		}
		lo, hi, ok := strings.Cut(span, "-")
		if !ok {
			return nil, bad("missing '-' between lo and hi")
		}
		var r Range
		var err error
		if r.Lo, err = strconv.ParseUint(lo, 10, 64); err != nil {
			return nil, bad("lo %q is not an unsigned 64-bit integer", lo)
		}
		if r.Hi, err = strconv.ParseUint(hi, 10, 64); err != nil {
			return nil, bad("hi %q is not an unsigned 64-bit integer", hi)
		}
		p, err := strconv.ParseUint(part, 10, 31)
		if err != nil {
			return nil, bad("partition %q is not a non-negative integer", part)
		}
		r.Partition = int(p)
		if r.Lo > r.Hi {
			return nil, bad("lo %d > hi %d", r.Lo, r.Hi)
		}
		out = append(out, r)
	}
	return out, nil
}

// FormatRanges is the inverse of ParseRanges.
func FormatRanges(rs []Range) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(formatRange(r))
	}
	return b.String()
}

func formatRange(r Range) string { return fmt.Sprintf("%d-%d:%d", r.Lo, r.Hi, r.Partition) }

// CheckPlacement reports whether k (after WithDefaults) could ever be placed
// on nodes: a keyspace with more replicas than eligible nodes has partitions
// that no request can use. Eligible are all nodes, or for a keyspace whose
// template has a locality attribute the nodes of one region; one region
// large enough suffices (keys of a smaller region are refused one by one,
// naming it). The error wraps kverrors.ErrInvalidArgument and names both
// numbers.
func (k KeyspaceConfig) CheckPlacement(nodes []Node) error {
	tmpl, err := ParseTemplate(k.Template)
	if err != nil {
		return err
	}
	if tmpl.LocalityAttr() == "" {
		if k.Replicas > len(nodes) {
			return fmt.Errorf("%w: keyspace %q: replicas = %d, but the cluster has %d node(s); a partition needs that many distinct nodes",
				kverrors.ErrInvalidArgument, k.Name, k.Replicas, len(nodes))
		}
		return nil
	}
	perRegion := map[string]int{}
	for _, n := range nodes {
		if n.Region != "" {
			perRegion[n.Region]++
		}
	}
	regions := slices.Sorted(maps.Keys(perRegion))
	var counts []string
	for _, reg := range regions {
		if perRegion[reg] >= k.Replicas {
			return nil
		}
		counts = append(counts, fmt.Sprintf("%s: %d", reg, perRegion[reg]))
	}
	if len(counts) == 0 {
		counts = append(counts, "no node has a region")
	}
	return fmt.Errorf("%w: keyspace %q: replicas = %d, but template %q places replicas within one region and no region has that many nodes (%s)",
		kverrors.ErrInvalidArgument, k.Name, k.Replicas, k.Template, strings.Join(counts, ", "))
}
