// Package ring plants pure-core violations for the checker's test.
package ring

import (
	"os"
	"time"
)

// Timeout uses time for a type only: allowed.
const Timeout time.Duration = 3 * time.Second

func Seed() int64 {
	if os.Getenv("SEED") != "" {
		return 1
	}
	return time.Now().UnixNano()
}
