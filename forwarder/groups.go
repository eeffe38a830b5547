package forwarder

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sealpost/sealpost/queue"
)

// The worker stores receipts so that the first receipt stored for an id
// wins everywhere (see store.go). To know that its receipts are the first
// without reading its group back each time, it keeps, per group subject it
// wrote lately, the newest sequence it has seen there and the ids stored up
// to it: a write made with a compare-and-set on that sequence that succeeds
// stored records no one stored before. When another writer came between,
// the worker reads only the messages after the sequence it knew, and tries
// again.

// maxGroupsTracked bounds the group subjects remembered; the groups of ids
// minted in the last seconds are the ones written.
const maxGroupsTracked = 4096

// groupState is what the worker knows of one group subject.
type groupState struct {
	mu   sync.Mutex // held while writing the subject
	last uint64     // newest sequence known on the subject
	// first maps each id stored up to last to the sequence of its first
	// record.
	first map[string]uint64
}

// groupIndex remembers group subjects, least recently used first out.
type groupIndex struct {
	mu    sync.Mutex
	lru   *list.List // of string (subject)
	items map[string]*groupEntry
}

type groupEntry struct {
	state *groupState
	elem  *list.Element
}

func newGroupIndex() *groupIndex {
	return &groupIndex{lru: list.New(), items: map[string]*groupEntry{}}
}

// get returns the state of subject, creating an empty one (nothing known:
// sequence 0) when it is not remembered.
func (g *groupIndex) get(subject string) *groupState {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.items[subject]; ok {
		g.lru.MoveToFront(e.elem)
		return e.state
	}
	st := &groupState{first: map[string]uint64{}}
	g.items[subject] = &groupEntry{state: st, elem: g.lru.PushFront(subject)}
	for g.lru.Len() > maxGroupsTracked {
		old := g.lru.Back()
		g.lru.Remove(old)
		delete(g.items, old.Value.(string))
	}
	return st
}

// catchUp reads the records stored on subject after st.last. st.mu must
// be held.
func (w *Worker) catchUp(ctx context.Context, subject string, st *groupState) error {
	return eachRecordFrom(ctx, w.cfg.Receipts, subject, receiptsFormat, st.last+1, func(seq uint64, f []string, _ []byte) error {
		if len(f) != 2 {
			return fmt.Errorf("forwarder: receipt record at seq %d has %d fields", seq, len(f))
		}
		if _, ok := st.first[f[0]]; !ok {
			st.first[f[0]] = seq
		}
		st.last = max(st.last, seq)
		return nil
	})
}

// maxStoreRounds bounds the retries of a receipts write that keeps meeting
// other writers.
const maxStoreRounds = 8

// storeReceipts stores the sealed receipts of one group's items so that
// each item sends the receipt stored first: its own, or one stored before
// by another worker (then opened and sent instead).
func (w *Worker) storeReceipts(ctx context.Context, k groupKey, its []*item) {
	subject := receiptSubject(k.tenant, k.group)
	st := w.groups.get(subject)
	st.mu.Lock()
	defer st.mu.Unlock()
	todo := its
	for round := 0; ; round++ {
		var recs []record
		var pending []*item
		reset := false
		for _, it := range todo {
			if it.done || it.sealed == nil {
				continue
			}
			if seq, ok := st.first[it.s.ID]; ok {
				if err := w.useStored(ctx, k, it, seq); errors.Is(err, queue.ErrNotFound) && round+1 < maxStoreRounds {
					// The message was rewritten since (a deletion):
					// learn the group again.
					st.last, st.first = 0, map[string]uint64{}
					reset = true
					break
				} else if err != nil {
					it.retryLater(w, err)
				}
				continue
			}
			recs = append(recs, record{fields: []string{it.s.ID, it.s.Route}, blob: it.sealed, ttl: w.retention(it.s.Tenant, it.s.Route),
				index: receiptIndex(it.s.ID, it.s.Route)})
			pending = append(pending, it)
		}
		if reset {
			continue
		}
		if len(recs) == 0 {
			return
		}
		seqs, err := w.storeRecords(ctx, w.cfg.Receipts, subject, receiptsFormat, recs, &st.last)
		// What was stored is first: no one wrote between.
		for i, seq := range seqs {
			st.first[pending[i].s.ID] = seq
			pending[i].sealed = nil
		}
		n := len(seqs)
		switch {
		case err == nil:
			return
		case !errors.Is(err, queue.ErrConflict) || round+1 >= maxStoreRounds:
			w.retryLaterAll(pending[n:], fmt.Errorf("forwarder: store receipts: %w", err))
			return
		}
		if err := w.catchUp(ctx, subject, st); err != nil {
			w.retryLaterAll(pending[n:], err)
			return
		}
		todo = pending[n:]
	}
}

// useStored gives it the receipt stored first for its id, at seq.
func (w *Worker) useStored(ctx context.Context, k groupKey, it *item, seq uint64) error {
	m, err := w.cfg.Receipts.Get(ctx, seq)
	if err != nil {
		return err
	}
	var sealed []byte
	_ = queue.EachRecord(m.Data, func(f []string, blob []byte) error {
		if len(f) == 2 && f[0] == it.s.ID && sealed == nil {
			sealed = bytes.Clone(blob)
		}
		return nil
	})
	if sealed == nil {
		return fmt.Errorf("forwarder: receipt %s not at seq %d: %w", it.s.ID, seq, queue.ErrNotFound)
	}
	env, err := w.openReceipt(ctx, k.tenant, it.s.ID, sealed)
	if err != nil {
		return err
	}
	it.env, it.sealed = env, nil
	return nil
}
