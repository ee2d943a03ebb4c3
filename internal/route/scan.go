package route

import (
	"sort"

	"github.com/capkv/capkv/api"
)

// Page is one partition's answer to a scan.
type Page struct {
	KVs  []*api.KeyValue
	More bool // the serving node cut its answer at the limit
	By   string
	// Level is what the partition's replicator did (ap scans read one
	// replica); Majority whether a majority confirmed it.
	Level    string
	Majority bool
}

// MergePages merges the pages of a scan's partitions into one page of at
// most limit keys in key order. A partition that cut its answer at the
// limit may hold more keys after its last one: the merged page stops there,
// or the next page (which starts after the merged page's last key) would
// skip them.
func MergePages(pages []Page, limit int) (kvs []*api.KeyValue, more bool) {
	cut, cutoff := false, ""
	for _, p := range pages {
		if p.More && len(p.KVs) > 0 {
			if last := p.KVs[len(p.KVs)-1].Key; !cut || last < cutoff {
				cutoff = last
			}
			cut = true
		}
		kvs = append(kvs, p.KVs...)
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	if cut {
		kvs = kvs[:sort.Search(len(kvs), func(i int) bool { return kvs[i].Key > cutoff })]
	}
	more = len(kvs) > limit || cut
	if len(kvs) > limit {
		kvs = kvs[:limit]
	}
	return kvs, more
}
