//go:build unix

package shard

import (
	"io/fs"
	"syscall"
)

// diskUsage is the space allocated to the file, which for Badger's sparse,
// preallocated value log is far less than its length.
func diskUsage(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return info.Size()
}
