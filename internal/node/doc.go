// Package node is one capkv server process (kvd): it owns the node's Badger
// store, builds the ring from the cluster map, serves the KV and Admin gRPC
// services, and forwards every request it does not own to the node that does.
//
// Routing contract: any node accepts any request. A request for a key whose
// owner is another node is forwarded once (RequestHeader.hops = 1); a node that
// receives a forwarded request it does not own answers ErrStaleEpoch instead of
// forwarding again, so disagreeing maps can never make a request loop.
//
// cp keyspaces: every partition is a Raft group over its replicas (package
// replication/cp); writes and linearizable reads run on the leader, to which
// any node forwards (at most two hops: node -> replica -> leader); stale
// reads run on any replica. A replica that knows no leader waits for one
// until shortly before the request deadline and then answers Unavailable.
// ap keyspaces: leaderless (package replication/ap); a replica of the key's
// partition coordinates, any other node forwards to the first replica that
// answers.
//
// Cluster map: kept in the metadata Raft group (meta.go) on the first three
// seed nodes; every node adopts newer epochs and starts the Raft replicas the
// map assigns to it.
//
// Shutdown: Close stops accepting requests, lets in-flight ones finish (up to
// a grace period), closes peer connections and then the store. Every goroutine
// the node starts is joined by Close.
package node
