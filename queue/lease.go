package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Lease is an exclusive, expiring claim on one key of a KV bucket, for
// work that one instance does at a time (signing audit checkpoints). The
// holder renews it with compare-and-set writes; another instance takes it
// over once the key's revision has not moved for the lease's TTL, measured
// on its own clock, so clocks need not agree. Two holders can overlap by
// at most one renewal interval after a partition heals; the work guarded
// by a lease must tolerate that.
type Lease struct {
	kv     *KV
	key    string
	holder string
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	held    bool
	rev     uint64
	renewed time.Time // last successful write, while held
	seenRev uint64    // newest revision seen of another holder
	seenAt  time.Time // when seenRev was first seen
}

// Lease returns a lease on key for holder (a name unique to this process).
// The holder should call Hold at least every ttl/3.
func (k *KV) Lease(key, holder string, ttl time.Duration, now func() time.Time) *Lease {
	if now == nil {
		now = time.Now
	}
	return &Lease{kv: k, key: key, holder: holder, ttl: ttl, now: now}
}

// leaseValue is what the key holds: the holder's name and a newline.
func leaseValue(holder string) []byte { return []byte(holder + "\n") }

// Hold takes the lease if it is free or expired, or renews it if this
// holder has it, and reports whether this holder has it now. An error is
// a store failure; the lease then counts as lost once a renewal is overdue.
func (l *Lease) Hold(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.held {
		rev, err := l.kv.Update(ctx, l.key, leaseValue(l.holder), l.rev)
		switch {
		case err == nil:
			l.rev, l.renewed = rev, now
			return true, nil
		case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
			l.held = false
			return false, nil
		default:
			if now.Sub(l.renewed) >= l.ttl {
				l.held = false
			}
			return l.held, fmt.Errorf("queue: renew lease %s: %w", l.key, err)
		}
	}
	val, rev, err := l.kv.Get(ctx, l.key)
	switch {
	case errors.Is(err, ErrNotFound):
		rev, err := l.kv.Create(ctx, l.key, leaseValue(l.holder))
		if errors.Is(err, ErrConflict) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("queue: take lease %s: %w", l.key, err)
		}
		l.held, l.rev, l.renewed = true, rev, now
		return true, nil
	case err != nil:
		return false, fmt.Errorf("queue: read lease %s: %w", l.key, err)
	}
	switch strings.TrimSpace(string(val)) {
	case l.holder:
		// Ours from before a lost answer: keep it.
		l.held, l.rev, l.renewed = true, rev, now
		return true, nil
	case "":
		// Released: take it at once.
		l.seenAt = now.Add(-l.ttl)
		l.seenRev = rev
	}
	if rev != l.seenRev {
		l.seenRev, l.seenAt = rev, now
		return false, nil
	}
	if now.Sub(l.seenAt) < l.ttl {
		return false, nil
	}
	// The holder has not renewed for a whole TTL: take over.
	rev, err = l.kv.Update(ctx, l.key, leaseValue(l.holder), rev)
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("queue: take over lease %s: %w", l.key, err)
	}
	l.held, l.rev, l.renewed = true, rev, now
	return true, nil
}

// Held reports whether this holder had the lease at its last Hold.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Release gives the lease up, so another instance can take it at once.
func (l *Lease) Release(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return
	}
	l.held = false
	_, _ = l.kv.Update(ctx, l.key, []byte{}, l.rev)
}
