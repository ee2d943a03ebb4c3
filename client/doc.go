// Package client is the Go client library of capkv.
//
// A Client fetches the cluster map from any of its endpoints, builds the same
// ring the servers use, and sends each request straight to the node that owns
// the key, so a request normally takes one network hop. When its map turns out
// to be stale (a server answers with a newer epoch or ErrStaleEpoch), the
// client refreshes the map and retries.
//
// Errors are typed: match them with errors.Is against ErrNotFound,
// ErrUnavailable, ErrConflict, ErrIndeterminate, ... The client retries only
// failures that definitely did not take effect (ErrUnavailable,
// ErrStaleEpoch); an ErrIndeterminate write may or may not have happened and is
// returned to the caller, never retried behind its back.
//
// Every result carries a Receipt: what the CAP trade-off cost the request
// (mode, level, replicas that acknowledged, whether it was forwarded, ...).
//
//	c, err := client.New(ctx, client.Config{Endpoints: []string{"127.0.0.1:7001"}})
//	if err != nil { ... }
//	defer c.Close()
//	_, err = c.Put(ctx, "accounts/eu/42/balance", []byte("100"))
//	it, err := c.Get(ctx, "accounts/eu/42/balance", client.WithConsistency(consistency.Linearizable))
package client
