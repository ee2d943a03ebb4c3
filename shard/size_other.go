//go:build !unix

package shard

import "io/fs"

// diskUsage falls back to the file length where block counts are unavailable.
func diskUsage(info fs.FileInfo) int64 { return info.Size() }
