package kverrors

import "google.golang.org/grpc/codes"

// Sentinel is a row of the mapping, for the external tests.
type Sentinel struct {
	Err  error
	Code codes.Code
}

// Sentinels is the mapping table, for the external tests.
var Sentinels = func() []Sentinel {
	var out []Sentinel
	for _, k := range sentinels {
		out = append(out, Sentinel{k.err, k.code})
	}
	return out
}()
