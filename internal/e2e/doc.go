// Package e2e holds end-to-end tests: real kvd processes on loopback ports,
// real gRPC, real Badger directories, driven through the Go client and the
// kvctl binary. It has no production code.
package e2e
