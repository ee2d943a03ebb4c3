// Package cp replicates the partitions of cp keyspaces: one hashicorp/raft
// group per partition, all groups of a node sharing one Badger instance (log,
// stable store and state machine data) and one gRPC connection per peer node.
//
// Contracts:
//
//   - Durability: a write is acknowledged only after a majority of the group
//     has appended it to a Raft log that was fsynced (when the node's store
//     runs with SyncWrites, the default), and the leader applied it.
//   - State machine durability: the Raft log is the durable record. The FSM
//     writes without an fsync of its own (shard.Replica.ApplyNoSync); a
//     process crash keeps its writes, and after a machine crash StartGroup
//     rebuilds the partition from the newest snapshot and the log (or from
//     the whole log when there is no snapshot yet). Snapshots are exported
//     into synced files, so the log is never compacted past what a rebuild
//     can reach.
//   - Apply: the FSM evaluates commands deterministically from the log alone
//     (the leader stamps the HLC timestamp before proposing; CAS is decided
//     at apply time). It writes each batch's data and its last log index
//     atomically, and skips entries at or below that index on replay, so a
//     restart never re-evaluates a command against a newer state.
//   - Request IDs: a command carrying a request ID that was applied before
//     (within a 10-minute window of HLC time) is not applied again; its first
//     result is returned. Retries after a broken connection are safe.
//   - Reads: ReadBarrier implements ReadIndex. It reads the commit index,
//     confirms leadership, and waits until that index is applied. A newly
//     elected leader serves none until its first Barrier has applied every
//     entry of earlier terms. Leadership is confirmed by the read lease when
//     a majority of voters confirmed requests of this term sent less than
//     Tuning.ReadLease (4/5 of HeartbeatTimeout) ago, by a quorum round
//     (VerifyLeader) otherwise. The lease holds because a follower rejects
//     other candidates for a HeartbeatTimeout after hearing from its leader,
//     a replica refuses votes for a HeartbeatTimeout after it starts (it has
//     forgotten its leader), a TimeoutNow ends the lease for the term, and a
//     TimeoutNow from a node other than a replica's leader is refused.
//   - Errors: *NotLeaderError (wrapping ErrNotLeader) means nothing was done
//     and names the leader when known; kverrors.ErrUnavailable means the
//     operation definitely did not happen; kverrors.ErrIndeterminate means it
//     may commit later (deadline passed or leadership lost after appending).
//
// Faults: Network consults a fault.Injector for every message in both
// directions, and FaultyTransport wraps any raft.Transport the same way, so
// tests cut, delay or blackhole chosen links, one way or both, in process.
package cp
