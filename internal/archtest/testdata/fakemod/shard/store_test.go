package shard

import "github.com/dgraph-io/badger/v4"

var _ badger.Options
