package cp

import "github.com/dgraph-io/badger/v4/options"

var _ options.ChecksumVerificationMode
