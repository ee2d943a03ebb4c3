// Package shard stores the partition replicas of one node: a single Badger
// instance (Store) per node holds every partition the node carries, and a
// Replica is the view of one partition inside it.
//
// # Why one Badger per node
//
// Badger's memory (memtables, caches) and background goroutines are per
// instance. A node carries many partitions, so one instance sized by Options
// (8 MiB memtables x2, small block and index caches) keeps an idle node well
// under 100 MB resident, where one instance per partition would not.
//
// # Key layout
//
// Every Badger key starts with a one-byte namespace:
//
//	'd' | uvarint(len(partition)) | partition | user key   partition records
//	'r' | uvarint(len(group)) | group | 'l' | be64(index)  Raft log entry (RaftLog)
//	'r' | uvarint(len(group)) | group | 's' | key          Raft stable value (RaftLog)
//	'm' | 'p' | uvarint(len(partition)) | partition      pending Drop/Import marker
//	't' | uvarint(len(partition)) | partition | 8-byte staging id | user key   Import staging
//
// The length prefix makes per-partition prefix iteration exact: "a/x/1" and
// "a/x/10" have disjoint prefixes. Within a partition keys sort by user key
// bytes, which is Scan's order. PartitionPrefix builds the prefixes.
//
// # Record format
//
// A value is EncodeRecord's output: a format byte (1), flags (tombstone,
// causal present), the HLC timestamp (8 bytes), the writer's version
// (uvarint), optional opaque causal metadata (reserved for ap's dotted
// version vectors), the value, and a CRC32C of all that. DecodeRecord rejects
// anything else with kverrors.ErrInternal. Tombstones are records, kept so
// that replication and anti-entropy see deletes; Badger's own delete is used
// only by Drop and Import.
//
// # Raft log
//
// The 'r' namespace is shard's like the others: replication/cp reaches it
// only through Store.RaftLog, so Badger stays inside this package. A RaftLog
// stores opaque bytes (cp encodes raft.Log) by index, plus a few stable
// values (term, vote), for one group. Its bounds are loaded with one seek
// each when it is opened and then cached. Append and SetStable go through the
// same group commit as Put and Apply, so concurrent groups share one
// transaction and one fsync; they return only after it committed (fsynced,
// with SyncWrites), which is what lets a follower acknowledge an entry.
// DeleteRange and Drop use Badger's batch and prefix deletes instead (large,
// rare, not atomic); a crash during them can leave part of the range.
//
// # Durability contract
//
// Put, Update and Apply return only after Badger committed the write; with
// Options.SyncWrites (the default) the commit was fsynced first, so an
// acknowledged write survives a process crash or kill -9 (tested by killing a
// real child process) and a machine crash. Badger itself runs without
// SyncWrites: the store syncs (syncAll: every retired WAL once, then the
// active WAL and value log) after each transaction that holds a durable
// write, so that ApplyNoSync can skip it. ApplyNoSync's writes survive a
// process crash (the page cache keeps them) but maybe not a machine crash,
// and not necessarily as a suffix; the store marks the partitions that take
// them, and an Open after a machine crash (the store was left open under
// another kernel boot ID, see unsynced.go) makes NeedsRebuild report them
// until their owner rebuilt them and called RebuildDone. Apply is atomic: all mutations or none. A commit that
// fails in Badger's write path reports kverrors.ErrIndeterminate: the write may
// or may not be on disk. Drop and Import are crash-atomic: a marker is
// committed before their first destructive write and Open rolls the operation
// forward if it was interrupted.
//
// # Errors
//
//   - kverrors.ErrInvalidArgument: bad options, empty key or partition (or
//     Raft group) id, tombstone with a value, import from another partition.
//   - kverrors.ErrTooLarge: a key, value, causal metadata, Raft stable key,
//     Apply batch or Append batch over the limits; nothing was written.
//   - kverrors.ErrUnavailable: the Store is closed, or Update's conflict
//     retries ran out; nothing was written, retrying is safe.
//   - kverrors.ErrIndeterminate: a commit failed after it may have reached disk.
//   - kverrors.ErrInternal: corrupt records or export streams, storage failures.
//
// # Concurrency
//
// Store, Replica and RaftLog are safe for concurrent use; open one RaftLog
// per group at a time (it caches the bounds). Updates of one key are
// serialised in-process and checked by Badger's conflict detection against
// other writers. Scan and Export read one snapshot and hold no lock while
// calling back or writing; Scan's callback may call the Store but not Close.
// Update's callback must not call the Store. Close waits for in-flight
// operations; operations started after Close fail with ErrUnavailable
// (RaftLog.FirstIndex and LastIndex, which read cached bounds, excepted).
package shard
