// Package consistency names the replication modes and per-request consistency
// levels of capkv, and provides the version clocks that order writes.
//
// A keyspace is either CP (one Raft group per partition, linearizable) or AP
// (leaderless quorums, convergent). Each request may ask for a level that its
// keyspace's mode supports: CP offers Linearizable (the default) and Stale; AP
// offers One, Quorum (the default) and All. Asking for a level the mode does not
// offer is an error, never a silent downgrade.
//
// Timestamps come from a hybrid logical clock (HLC): physical milliseconds in the
// high 48 bits and a logical counter in the low 16 bits of one uint64, so that
// timestamps compare as plain integers, survive a trip through protobuf unchanged,
// and never go backwards on one node even when its wall clock does.
package consistency
