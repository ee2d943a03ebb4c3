// Package tools is a nested module: not part of the checked one.
package tools

import "github.com/dgraph-io/badger/v4"

var _ *badger.DB
