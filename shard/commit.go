package shard

import (
	"errors"
	"fmt"

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
	db   *badger.DB
	ch   chan *commitReq
	stop chan struct{}
	done chan struct{}
}

type commitReq struct {
	entries []*badger.Entry
	err     chan error
}

// maxGroup bounds how many batches one transaction carries.
const maxGroup = 512

func newGroupCommit(db *badger.DB) *groupCommit {
	g := &groupCommit{db: db, ch: make(chan *commitReq, maxGroup), stop: make(chan struct{}), done: make(chan struct{})}
	go g.loop()
	return g
}

// write commits entries atomically, together with whatever else is waiting.
func (g *groupCommit) write(entries []*badger.Entry) error {
	r := &commitReq{entries: entries, err: make(chan error, 1)}
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

func flatten(rs []*commitReq) []*badger.Entry {
	var out []*badger.Entry
	for _, r := range rs {
		out = append(out, r.entries...)
	}
	return out
}
