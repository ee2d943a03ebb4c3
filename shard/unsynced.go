package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Unsynced writes (Replica.ApplyNoSync) survive a process crash, because the
// page cache keeps what Badger wrote, but not an OS crash or power loss. The
// store therefore tracks two facts, both durably:
//
//   - which partitions ever took unsynced writes ('m' 'u' markers, one
//     durable write per partition per process), and
//   - whether the store was last closed cleanly within this boot of the
//     machine (the bootFile: the kernel's boot ID and an open/closed state).
//
// Open finds the store open under another boot ID (or, where there is no
// boot ID, open at all): the machine went down with the store open, and
// unsynced writes may be gone, and not only the newest (Badger spreads them
// over several WAL files). Every partition with a 'u' marker then gets a
// rebuild marker ('m' 'r'), which stays until its owner rebuilt it from its
// durable source (cp: the Raft snapshot and log) and called RebuildDone, so
// a crash during the rebuild repeats it.

const bootFile = "CAPKV-BOOT"

// bootIDPath is Linux's ID of the running boot; a var for tests.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

func currentBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "" // unknown: every unclean stop counts as a machine crash
	}
	return strings.TrimSpace(string(b))
}

func unsyncedKey(partition string) []byte {
	return append([]byte{NamespaceMeta, 'u'}, PartitionPrefix(0, partition)[1:]...)
}

func rebuildKey(partition string) []byte {
	return append([]byte{NamespaceMeta, 'r'}, PartitionPrefix(0, partition)[1:]...)
}

// writeBootState records the boot ID and whether the store is open, durably
// (file and directory synced).
func writeBootState(dir, boot string, open bool) error {
	state := "closed"
	if open {
		state = "open"
	}
	tmp := filepath.Join(dir, bootFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.WriteString("boot=" + boot + "\nstate=" + state + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, bootFile)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// machineCrashed reports whether the store was left open by an earlier boot
// (or, without boot IDs, left open at all). No file: a new store, or one
// written before unsynced writes existed, which synced everything.
func machineCrashed(dir, boot string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, bootFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var prevBoot, state string
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "boot":
			prevBoot = v
		case "state":
			state = v
		}
	}
	if state != "open" && state != "closed" {
		// Refused rather than guessed: assuming "closed" could serve a
		// partition that lost writes. The way out is in the message.
		return false, fmt.Errorf("%s: unreadable state %q: if the store was stopped cleanly, delete the file; "+
			"if the machine may have crashed with the store open, write the line \"state=open\" into it, "+
			"and the partitions with unsynced writes are rebuilt from their Raft logs", filepath.Join(dir, bootFile), b)
	}
	return state == "open" && (boot == "" || prevBoot != boot), nil
}

// openUnsynced runs at Open, before any write: it turns the unsynced
// markers into rebuild markers when the machine crashed with the store
// open, then records the store as open in this boot.
func (s *Store) openUnsynced() error {
	boot := currentBootID()
	crashed, err := machineCrashed(s.opts.Dir, boot)
	if err != nil {
		return err
	}
	if crashed {
		var parts [][]byte
		err := s.db.View(func(txn *badger.Txn) error {
			prefix := []byte{NamespaceMeta, 'u'}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				parts = append(parts, bytes.Clone(it.Item().Key()[len(prefix):]))
			}
			return nil
		})
		if err != nil {
			return badgerErr("read unsynced markers", err)
		}
		if len(parts) > 0 {
			err = s.db.Update(func(txn *badger.Txn) error {
				for _, p := range parts {
					if err := txn.Set(append([]byte{NamespaceMeta, 'r'}, p...), nil); err != nil {
						return err
					}
				}
				return nil
			})
			if err := s.durably(badgerErr("write rebuild markers", err)); err != nil {
				return err
			}
			s.log.Warn("the machine stopped with this store open: partitions written without fsync will be rebuilt from their durable source", "partitions", len(parts))
		}
	}
	return writeBootState(s.opts.Dir, boot, true)
}

// closeUnsynced records a clean close, after everything was synced.
func (s *Store) closeUnsynced() error {
	return writeBootState(s.opts.Dir, currentBootID(), false)
}

// markUnsynced records, durably and once per process, that the partition
// takes unsynced writes, before its first one.
func (r *Replica) markUnsynced() error {
	if _, done := r.s.unsynced.Load(r.id); done {
		return nil
	}
	if err := r.s.gc.write([]*badger.Entry{badger.NewEntry(unsyncedKey(r.id), nil)}, true); err != nil {
		return err
	}
	r.s.unsynced.Store(r.id, true)
	return nil
}

// NeedsRebuild reports whether the partition's unsynced writes may have been
// lost in a machine crash: its owner must rebuild it from a durable source
// (replacing or dropping its data) and then call RebuildDone.
func (r *Replica) NeedsRebuild() (bool, error) {
	if r.err != nil {
		return false, r.err
	}
	if err := r.s.enter(); err != nil {
		return false, err
	}
	defer r.s.leave()
	found := false
	err := r.s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(rebuildKey(r.id))
		switch {
		case err == nil:
			found = true
		case errors.Is(err, badger.ErrKeyNotFound):
		default:
			return err
		}
		return nil
	})
	return found, badgerErr("read rebuild marker", err)
}

// RebuildDone clears the partition's rebuild marker, durably.
func (r *Replica) RebuildDone() error {
	if r.err != nil {
		return r.err
	}
	if err := r.s.enter(); err != nil {
		return err
	}
	defer r.s.leave()
	return r.s.durably(badgerErr("clear rebuild marker", r.s.db.Update(func(txn *badger.Txn) error {
		return txn.Delete(rebuildKey(r.id))
	})))
}
