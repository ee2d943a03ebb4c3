package cp

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/capkv/capkv/consistency"
)

// Op is the kind of a replicated command.
type Op byte

const (
	OpPut    Op = 1
	OpDelete Op = 2
	OpCAS    Op = 3
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// Command is one write proposed to a partition's Raft group. Everything the
// state machine needs to apply it deterministically is in it: the leader
// stamps the HLC timestamp before proposing, so every replica writes the
// same record.
type Command struct {
	Op              Op
	Key             string
	Value           []byte
	ExpectedValue   []byte // CAS: expected current value (nil: not compared)
	HasExpectedVal  bool
	ExpectedVersion uint64 // CAS: expected version (0: key absent)
	HasExpectedVer  bool
	Timestamp       consistency.Timestamp
	RequestID       string // retried writes with the same ID apply once
}

const commandFormat = 1

const (
	flagExpectedValue = 1 << iota
	flagExpectedVersion
)

// EncodeCommand appends the binary form of c to dst.
func EncodeCommand(dst []byte, c Command) []byte {
	dst = append(dst, commandFormat, byte(c.Op))
	var flags byte
	if c.HasExpectedVal {
		flags |= flagExpectedValue
	}
	if c.HasExpectedVer {
		flags |= flagExpectedVersion
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(c.Timestamp))
	dst = appendBytes(dst, []byte(c.Key))
	dst = appendBytes(dst, c.Value)
	dst = appendBytes(dst, []byte(c.RequestID))
	if c.HasExpectedVal {
		dst = appendBytes(dst, c.ExpectedValue)
	}
	if c.HasExpectedVer {
		dst = binary.AppendUvarint(dst, c.ExpectedVersion)
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// ErrCorruptCommand is returned for undecodable command bytes.
var ErrCorruptCommand = errors.New("corrupt raft command")

// DecodeCommand parses the output of EncodeCommand. It never panics.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) < 3 || b[0] != commandFormat {
		return c, fmt.Errorf("%w: bad header", ErrCorruptCommand)
	}
	c.Op, b = Op(b[1]), b[2:]
	if c.Op < OpPut || c.Op > OpCAS {
		return c, fmt.Errorf("%w: unknown op %d", ErrCorruptCommand, c.Op)
	}
	flags := b[0]
	b = b[1:]
	if flags&^(flagExpectedValue|flagExpectedVersion) != 0 {
		return c, fmt.Errorf("%w: unknown flags %#x", ErrCorruptCommand, flags)
	}
	ts, n := binary.Uvarint(b)
	if n <= 0 {
		return c, fmt.Errorf("%w: timestamp", ErrCorruptCommand)
	}
	c.Timestamp, b = consistency.Timestamp(ts), b[n:]
	var key, reqID []byte
	var err error
	if key, b, err = readBytes(b); err != nil {
		return c, err
	}
	if c.Value, b, err = readBytes(b); err != nil {
		return c, err
	}
	if reqID, b, err = readBytes(b); err != nil {
		return c, err
	}
	c.Key, c.RequestID = string(key), string(reqID)
	if flags&flagExpectedValue != 0 {
		c.HasExpectedVal = true
		if c.ExpectedValue, b, err = readBytes(b); err != nil {
			return c, err
		}
		if c.ExpectedValue == nil {
			c.ExpectedValue = []byte{}
		}
	}
	if flags&flagExpectedVersion != 0 {
		c.HasExpectedVer = true
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return c, fmt.Errorf("%w: expected version", ErrCorruptCommand)
		}
		c.ExpectedVersion, b = v, b[n:]
	}
	if len(b) != 0 {
		return c, fmt.Errorf("%w: %d trailing bytes", ErrCorruptCommand, len(b))
	}
	return c, nil
}

func readBytes(b []byte) ([]byte, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("%w: truncated field", ErrCorruptCommand)
	}
	b = b[n:]
	if l == 0 {
		return nil, b, nil
	}
	return append([]byte(nil), b[:l]...), b[l:], nil
}
