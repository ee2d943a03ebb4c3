// Package node is one capkv server process (kvd): wiring and service glue.
// New opens the node's store (package shard) and builds its parts: the cp
// and ap replicators (replication/cp, replication/ap), the router
// (internal/route) that picks one of them per request and forwards what this
// node cannot serve, the metadata service (internal/meta) that follows the
// cluster map, the failure detector (internal/failure) and the peer pool
// (internal/dial). The KV and Admin gRPC handlers route once, call the
// replicator (or the metadata service) and turn the result into the API's
// response; errors become gRPC statuses in one place (the server
// interceptor, through internal/kverrors).
//
// Shutdown: Close stops accepting requests, stops the Raft groups so
// in-flight proposals fail instead of waiting on peers, lets in-flight
// requests finish (up to a grace period), stops the ap background loops,
// closes peer connections and then the store. Every goroutine the node starts
// is joined by Close.
package node
