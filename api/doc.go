// Package api holds capkv's protobuf definitions (capkv.proto) and the Go code
// generated from them. Regenerate with `make proto`, which pins the versions of
// protoc-gen-go and protoc-gen-go-grpc; the generated files are committed so a
// build needs no protoc.
package api

//go:generate make -C .. proto
