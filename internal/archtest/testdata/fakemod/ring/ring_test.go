package ring

import (
	"os"
	"testing"
	"time"
)

// Test files may read the clock and the environment.
func TestSeed(t *testing.T) {
	time.Sleep(time.Millisecond)
	_ = os.Getenv("X")
}
