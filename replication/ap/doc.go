// Package ap replicates the partitions of ap keyspaces leaderlessly, as
// Dynamo does: a write is coordinated by a replica of the key's partition,
// which stamps it with a dotted version vector (consistency.DVV) and sends it
// to every replica of the preference list, succeeding once the request's level
// (one, quorum, all) has acknowledged. Replicas merge what they receive
// (DVV.Sync), so concurrent writes become siblings instead of overwriting each
// other, or, in a `resolve: lww` keyspace, the last writer by HLC wins.
//
// Contracts:
//
//   - Coordinator: only a replica coordinates, so a write's dot is minted by
//     the node that holds the key's clock (a fallback node never mints dots for
//     keys it forgot: Riak's kv679). A node that is not a replica forwards to
//     the first reachable one; if none is reachable the request is refused
//     (ErrUnavailable): ap promises service while some replica is reachable.
//   - Sloppy quorum: a preferred replica that does not answer is replaced by a
//     fallback node, which keeps the write as a durable hint for it and hands
//     it over when it is reachable again (HintStore). A hinted acknowledgement
//     counts for one and quorum, never for all.
//   - Acknowledgement: success once the level's count of replicas has stored
//     and (with SyncWrites) fsynced the merged clock, the coordinator always
//     among them. If some but not enough acknowledged, the write is
//     ErrIndeterminate: it exists on some replicas and will spread; with
//     none it is ErrUnavailable.
//   - Dots (dotlease.go): the coordinator sends a write to the other
//     replicas while it stores its own copy, so a crash can leave a dot on
//     them that its own store never recorded. Dot counters therefore come
//     from a node-wide lease: one is handed out only below a durable bound
//     (reserved a block at a time, in the background, about every 30 s of
//     HLC time), and a restart starts above the bound, so no dot is ever
//     minted twice (Riak's vnode counter lease; tested by SIGKILL).
//   - Reads ask every replica, answer once the level's count replied with the
//     merge of their clocks, and repair the replicas that were behind.
//   - Anti-entropy (merkle.go, antientropy.go): every partition's replicas
//     compare 64-leaf Merkle digests and exchange only differing leaves; the
//     first replica of each preference list repairs its partitions every 30s,
//     and `kvctl repair` runs it on demand. After a repair that reached every
//     replica, tombstones older than a grace are purged from all of them by
//     compare-and-delete. A hint for an older write that is handed over after
//     such a purge would bring the value back; the grace (default 10 minutes)
//     is what bounds that risk.
//   - Level one on a replica reads only its own copy (no read repair then).
//
// Pure cores and their drivers: the protocol's decisions take inputs and
// return decisions, with no goroutines, clocks or network, and are tested by
// scripts (testdata/round), tables and brute-force references.
//
//   - quorum.go: writeRound, one write's replication after the local store.
//     Step takes an event (start; a store answered: node, hint target,
//     error; the caller's deadline) and returns actions (send a store, as a
//     hint for a replica or not; finish with acked, hinted, sloppy and nil
//     or ErrIndeterminate), stores first, the finish once and last.
//     Coordinator.Write is its driver: it mints the dot, runs each store
//     in a goroutine that posts the answer to a channel, stores locally
//     meanwhile (the round counts the coordinator from the start; the
//     driver looks at no finish before the local store succeeded), feeds
//     answers and ctx.Done to Step, and returns at the finish; stores still in flight complete in the background (Close
//     waits for them) and their answers are ignored.
//   - fallback.go: FallbackOrder, the order in which a partition's
//     fallbacks take hints, from which the node builds WriteRequest.Fallbacks.
//   - repairplan.go: what a Repair exchanges and purges (differing leaves,
//     keys to push, tombstones past the grace, purge here only if every
//     other replica purged); Repair in antientropy.go does the RPCs.
package ap
