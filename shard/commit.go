package shard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// groupCommit coalesces concurrent write batches of every partition into one
// Badger transaction: one commit, one WAL sync. Badger v4 with SyncWrites
// syncs its WAL once per committed transaction, so without this many Raft
// groups writing at once pay one fsync each instead of sharing one.
//
// Each submitted batch stays atomic: batches are only ever split between
// each other, never inside one. A batch is acknowledged only after the
// transaction holding it committed (and was synced, with SyncWrites).
type groupCommit struct {
	db *badger.DB
	// sync makes everything committed so far durable (Store.syncAll); it
	// runs after a transaction that holds at least one durable batch.
	sync func() error
	ch   chan *commitReq
	stop chan struct{}
	done chan struct{}
}

type commitReq struct {
	entries []*badger.Entry
	durable bool // acknowledged only after an fsync (with SyncWrites)
	err     chan error
}

// maxGroup bounds how many batches one transaction carries.
const maxGroup = 512

func newGroupCommit(db *badger.DB, sync func() error) *groupCommit {
	g := &groupCommit{db: db, sync: sync, ch: make(chan *commitReq, maxGroup), stop: make(chan struct{}), done: make(chan struct{})}
	go g.loop()
	return g
}

// write commits entries atomically, together with whatever else is waiting.
// A durable write returns after the commit was synced; a non-durable one
// after the commit, sharing the sync of a durable neighbour if it has one.
func (g *groupCommit) write(entries []*badger.Entry, durable bool) error {
	r := &commitReq{entries: entries, durable: durable, err: make(chan error, 1)}
	select {
	case g.ch <- r:
	case <-g.stop:
		return errClosed
	}
	return <-r.err
}

func (g *groupCommit) close() {
	close(g.stop)
	<-g.done
}

func (g *groupCommit) loop() {
	defer close(g.done)
	for {
		select {
		case r := <-g.ch:
			batch := []*commitReq{r}
		drain:
			for len(batch) < maxGroup {
				select {
				case r := <-g.ch:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			g.commit(batch)
		case <-g.stop:
			for {
				select {
				case r := <-g.ch:
					r.err <- errClosed
				default:
					return
				}
			}
		}
	}
}

// commit writes the batches in as few transactions as Badger's size limits
// allow.
func (g *groupCommit) commit(batch []*commitReq) {
	var pending []*commitReq
	txn := g.db.NewTransaction(true)
	finish := func() {
		err := commit(txn)
		if err == nil && anyDurable(pending) {
			if serr := g.sync(); serr != nil {
				err = fmt.Errorf("%w: sync after commit: %w", kverrors.ErrIndeterminate, serr)
			}
		}
		for _, r := range pending {
			r.err <- err
		}
		pending = nil
		txn = g.db.NewTransaction(true)
	}
	for _, r := range batch {
		if err := addAll(txn, r.entries); err != nil {
			if !errors.Is(err, badger.ErrTxnTooBig) || len(pending) == 0 {
				// Too big on its own (or another failure): refuse this one only.
				txn.Discard()
				txn = g.db.NewTransaction(true)
				if err2 := addAll(txn, flatten(pending)); err2 != nil {
					for _, p := range pending {
						p.err <- fmt.Errorf("%w: rebuilding a group commit: %v", kverrors.ErrInternal, err2)
					}
					pending = nil
					txn.Discard()
					txn = g.db.NewTransaction(true)
				}
				r.err <- txnErr(err, len(r.entries))
				continue
			}
			// r does not fit beside the others: commit them without the
			// part of r that was added, then retry r in a fresh transaction.
			txn.Discard()
			txn = g.db.NewTransaction(true)
			if err := addAll(txn, flatten(pending)); err != nil {
				for _, p := range pending {
					p.err <- fmt.Errorf("%w: rebuilding a group commit: %v", kverrors.ErrInternal, err)
				}
				pending = nil
				txn.Discard()
				txn = g.db.NewTransaction(true)
			} else {
				finish()
			}
			if err := addAll(txn, r.entries); err != nil {
				txn.Discard()
				txn = g.db.NewTransaction(true)
				r.err <- txnErr(err, len(r.entries))
				continue
			}
		}
		pending = append(pending, r)
	}
	if len(pending) > 0 {
		finish()
	}
	txn.Discard()
}

func addAll(txn *badger.Txn, entries []*badger.Entry) error {
	for _, e := range entries {
		// SetEntry keeps the entry; hand it a copy so a retry can add the
		// same entries to another transaction.
		c := *e
		if err := txn.SetEntry(&c); err != nil {
			return err
		}
	}
	return nil
}

func anyDurable(rs []*commitReq) bool {
	for _, r := range rs {
		if r.durable {
			return true
		}
	}
	return false
}

func flatten(rs []*commitReq) []*badger.Entry {
	var out []*badger.Entry
	for _, r := range rs {
		out = append(out, r.entries...)
	}
	return out
}

// syncAll makes every write committed before the call durable (a no-op
// without SyncWrites). Badger's DB.Sync syncs only the active memtable's WAL
// and value log file; a write committed into a WAL that has since been
// rotated (the memtable filled, by any writer, Badger's own included) sits
// in an immutable memtable's WAL until that is flushed. So every WAL but the
// newest is fsynced once after it stopped growing (on Linux fsync also
// writes back the pages Badger wrote through its mapping), then DB.Sync
// syncs the active one; if a rotation slipped in meanwhile, the WAL it
// retired is fsynced too. A WAL flushed and removed in between is in a
// table, which Badger syncs when it writes it.
func (s *Store) syncAll() error {
	if !s.opts.SyncWrites {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	wals, err := s.wals()
	if err != nil {
		return err
	}
	for {
		for _, name := range wals[:max(len(wals)-1, 0)] {
			if err := s.syncRetired(name); err != nil {
				return err
			}
		}
		if err := s.db.Sync(); err != nil {
			return err
		}
		after, err := s.wals()
		if err != nil {
			return err
		}
		if len(after) == 0 || len(wals) == 0 || after[len(after)-1] == wals[len(wals)-1] {
			return nil
		}
		wals = after // rotated during the sync: the retired WAL needs its own
	}
}

// wals lists the memtable WAL files, oldest first (Badger numbers them in
// creation order, zero-padded), and forgets retired ones that are gone.
// Listing the directory on every sync cost 8% of a loaded node's CPU, so the
// list is kept while the directory's modification time stays the same (a
// rotation creates a file) and is not recent: the kernel stamps it from a
// coarse clock, so two changes within one tick can share a time.
func (s *Store) wals() ([]string, error) {
	fi, err := os.Stat(s.opts.Dir)
	if err != nil {
		return nil, err
	}
	if mod := fi.ModTime(); s.walList != nil && mod.Equal(s.walDirMod) && time.Since(mod) > walListSettle {
		return s.walList, nil
	}
	names, err := filepath.Glob(filepath.Join(s.opts.Dir, "*.mem"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	live := make(map[string]bool, len(names))
	for _, n := range names {
		live[n] = true
	}
	for n := range s.retiredSynced {
		if !live[n] {
			delete(s.retiredSynced, n)
		}
	}
	s.walList, s.walDirMod = names, fi.ModTime()
	return names, nil
}

// walListSettle is how old the directory's modification time must be for
// the cached WAL list to be trusted: far above any clock tick.
const walListSettle = time.Second

// syncRetired fsyncs a WAL that no longer grows, once.
func (s *Store) syncRetired(name string) error {
	if s.retiredSynced[name] {
		return nil
	}
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // flushed meanwhile
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if s.retiredSynced == nil {
		s.retiredSynced = map[string]bool{}
	}
	s.retiredSynced[name] = true
	return nil
}

// durably runs a write outside the group commit (a Badger transaction or
// write batch) and then syncs, as SyncWrites promises for every write but
// ApplyNoSync's.
func (s *Store) durably(err error) error {
	if err != nil {
		return err
	}
	if serr := s.syncAll(); serr != nil {
		return fmt.Errorf("%w: sync after write: %w", kverrors.ErrIndeterminate, serr)
	}
	return nil
}
