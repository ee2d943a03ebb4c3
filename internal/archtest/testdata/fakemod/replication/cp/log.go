// Package cp plants a Badger import outside shard.
package cp

import (
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Outside ring and consistency, the clock and the OS are allowed.
var start, _ = time.Now(), os.Getpid()

var _ *badger.DB
