// Package limits holds the request size limits that nodes enforce and
// clients check before sending, and the gRPC message size both sides allow,
// in one place so that the numbers cannot drift apart.
//
// A request over a node's limits is refused by the node with
// kverrors.ErrTooLarge, naming the size and the limit. gRPC's own message
// limit (4 MiB by default) would refuse a large one first with a transport
// error that names neither, so every capkv connection and server raises it
// to MaxMessageSize: anything a node can be configured to accept, and more,
// reaches the node and gets capkv's answer.
package limits

const (
	// DefaultMaxKeySize is a node's key limit in bytes unless configured otherwise.
	DefaultMaxKeySize = 4 << 10
	// DefaultMaxValueSize is a node's value limit in bytes unless configured otherwise.
	DefaultMaxValueSize = 1 << 20
	// MaxValueSizeLimit is the largest value limit a node may be configured with.
	MaxValueSizeLimit = 256 << 20
	// MaxMessageSize bounds one gRPC message, sent or received, on every
	// capkv connection and server: a value at MaxValueSizeLimit with its
	// key, causal context and framing fits, so the node, not gRPC, judges
	// its size.
	MaxMessageSize = MaxValueSizeLimit + 16<<20
)
