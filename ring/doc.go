// Package ring decides where every key lives: which keyspace it belongs to,
// which partition of that keyspace, and which nodes hold the partition's
// replicas (its preference list).
//
// # Role and contract
//
// The ring is a pure function of its inputs (a Topology and Options): no
// goroutines, no I/O, no clock, no randomness. Every node that builds a Ring from
// the same Topology gets the same placements, whatever order the nodes and
// keyspaces are listed in, on every platform. A topology change (node added or
// removed, keyspace created) builds a new Ring with a new epoch; a Ring is never
// modified, so it is safe for concurrent use. Locate is on every request's path:
// it does not allocate and costs a few hash and map lookups.
//
// # Placement: Dynamo's fixed-partition strategy
//
// Each keyspace cuts the 64-bit hash circle into Q equal partitions (per region).
// A key's partition index is floor(xxhash64(partKey) * Q / 2^64), that is
// xxhash64(partKey) / (2^64/Q) for power-of-two Q. Alternatively a keyspace may
// partition by numeric ID range (KeyspaceConfig.Ranges): the partition attribute
// is parsed as a uint64 and looked up among the ranges, for ordered, contiguous
// placement.
//
// Each node owns VNodes tokens on the same circle, at xxhash64(nodeID + "#" + i)
// for i in [0, VNodes). Tokens are global: the same in every keyspace and region.
// The preference list of partition p is found by walking the sorted tokens of the
// eligible nodes clockwise from (start of p + xxhash64(keyspace name)) and taking
// the first N distinct nodes; the first is the primary. The keyspace offset
// spreads the primaries of different keyspaces over different nodes. Because
// partitions are fixed and only the token walk depends on membership, adding a
// node changes only preference lists that now contain it (its position among the
// old members is inserted, their order is kept), and removing a node changes only
// the lists that contained it: about 1/nodes of the replicas move, never the rest.
// All lists are computed in New, so Locate is a hash, a multiplication and a
// table index.
//
// # Z-axis placement and templates
//
// A template (placement rule) is a '/'-separated pattern matched against keys:
//
//	accounts/{region}/{account}/...
//
// The rules:
//
//   - Segment 0 is a literal, the keyspace name ([a-z][a-z0-9_-]*). A key belongs
//     to the keyspace named by its first segment.
//   - A literal segment must equal the key's segment exactly.
//   - {name} is an attribute: it matches any non-empty segment. Names match
//     [a-z][a-z0-9_]* and are unique within a template.
//   - {name:locality} marks the locality attribute. {region} is the locality
//     attribute by default, unless another attribute is marked :locality.
//     A key's replicas are placed only on nodes whose Region equals the key's
//     locality value; each region has its own ring of Q partitions over its own
//     nodes. If the region has fewer nodes than the replication factor, Locate
//     fails with kverrors.ErrUnavailable naming the region and both numbers.
//     Keyspaces without a locality attribute are placed over all nodes (region
//     "", printed "*" in a PartitionID).
//   - {name:partition} marks the partition attribute, the value that is hashed,
//     so all keys with one value share one partition. Unmarked, it is the first
//     attribute that is not the locality. Without one, everything after the
//     keyspace segment is hashed.
//   - A final "..." matches zero or more further segments; without it a key must
//     have exactly as many segments as the template.
//
// Keys never have empty segments (no leading, trailing or double '/').
//
// # Errors
//
// Malformed templates, keys and configurations wrap kverrors.ErrInvalidArgument
// and name the offending input; a key whose first segment names no keyspace wraps
// kverrors.ErrUnknownKeyspace and lists the known ones; a region too small for
// the replication factor wraps kverrors.ErrUnavailable.
package ring
