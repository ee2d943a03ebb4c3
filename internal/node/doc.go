// Package node is one capkv server process (kvd): it owns the node's Badger
// store, builds the ring from the cluster map, serves the KV and Admin gRPC
// services, and forwards every request it does not own to the node that does.
//
// Routing contract: any node accepts any request. A request for a key whose
// owner is another node is forwarded once (RequestHeader.hops = 1); a node that
// receives a forwarded request it does not own answers ErrStaleEpoch instead of
// forwarding again, so disagreeing maps can never make a request loop.
//
// Until replication lands, a partition lives on the first node of its
// preference list (its owner); the other replicas named in the ring hold
// nothing yet. Writes are acknowledged only after the owner's Badger commit
// (fsynced when SyncWrites is on).
//
// Shutdown: Close stops accepting requests, lets in-flight ones finish (up to
// a grace period), closes peer connections and then the store. Every goroutine
// the node starts is joined by Close.
package node
