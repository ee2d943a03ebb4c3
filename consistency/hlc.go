package consistency

import (
	"fmt"
	"sync"
	"time"
)

// Timestamp is a hybrid logical clock reading: physical milliseconds since the
// Unix epoch in the high 48 bits, a logical counter in the low 16 bits.
type Timestamp uint64

const logicalBits = 16
const logicalMask = 1<<logicalBits - 1

// MakeTimestamp builds a timestamp from its parts.
func MakeTimestamp(physicalMillis int64, logical uint16) Timestamp {
	return Timestamp(uint64(physicalMillis)<<logicalBits | uint64(logical))
}

// Physical returns the physical part in milliseconds since the Unix epoch.
func (t Timestamp) Physical() int64 { return int64(uint64(t) >> logicalBits) }

// Logical returns the logical counter.
func (t Timestamp) Logical() uint16 { return uint16(uint64(t) & logicalMask) }

// Time returns the physical part as a time.Time.
func (t Timestamp) Time() time.Time { return time.UnixMilli(t.Physical()) }

func (t Timestamp) String() string {
	if t == 0 {
		return "0"
	}
	return fmt.Sprintf("%s+%d", t.Time().UTC().Format("2006-01-02T15:04:05.000Z"), t.Logical())
}

// ErrClockSkew is returned by Clock.Update when a remote timestamp is further
// ahead of the local wall clock than the configured maximum offset.
var ErrClockSkew = fmt.Errorf("remote clock too far ahead")

// Clock is a hybrid logical clock. It is safe for concurrent use.
//
// Now never returns the same or a smaller timestamp twice, and after
// Update(remote) every later Now is greater than remote: this is what lets
// versions from different nodes be ordered causally without synchronized clocks.
type Clock struct {
	wall      func() time.Time
	maxOffset time.Duration

	mu struct {
		sync.Mutex
		last Timestamp
	}
}

// NewClock returns a clock reading physical time from wall, which the
// caller provides (a node passes its own, skewable wall clock; tests pass a
// fake one): consistency never reads the machine's clock itself. A nil wall
// makes a purely logical clock, whose physical part only moves on
// overflow or with Update. A remote timestamp more than maxOffset ahead of
// wall is refused by Update; maxOffset 0 disables the check.
func NewClock(wall func() time.Time, maxOffset time.Duration) *Clock {
	if wall == nil {
		wall = func() time.Time { return time.UnixMilli(0) }
	}
	return &Clock{wall: wall, maxOffset: maxOffset}
}

// Now returns a new timestamp greater than every one this clock returned or saw.
func (c *Clock) Now() Timestamp {
	phys := c.wall().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.last = c.nextLocked(phys, 0)
	return c.mu.last
}

// Update folds a timestamp received from another node into the clock, so that
// later local events are ordered after it.
func (c *Clock) Update(remote Timestamp) error {
	phys := c.wall().UnixMilli()
	if c.maxOffset > 0 && remote.Physical()-phys > c.maxOffset.Milliseconds() {
		return fmt.Errorf("%w: remote %s is %dms ahead of local wall clock (max offset %s)",
			ErrClockSkew, remote, remote.Physical()-phys, c.maxOffset)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.last = c.nextLocked(phys, remote)
	return nil
}

// Last returns the most recent timestamp issued or seen, without advancing.
func (c *Clock) Last() Timestamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.last
}

// nextLocked returns the successor of max(last, remote, phys). When the logical
// counter would overflow, it borrows the next millisecond: monotonicity matters
// more than tracking the wall clock exactly.
func (c *Clock) nextLocked(phys int64, remote Timestamp) Timestamp {
	base := c.mu.last
	if remote > base {
		base = remote
	}
	if wall := MakeTimestamp(phys, 0); wall > base {
		return wall
	}
	if base.Logical() == logicalMask {
		return MakeTimestamp(base.Physical()+1, 0)
	}
	return base + 1
}
