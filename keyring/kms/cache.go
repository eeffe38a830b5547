package kms

import (
	"container/list"
	"context"
	"crypto/cipher"
	"crypto/sha256"
	"sync"
	"time"
)

// maxSealSlots bounds the number of (tenant, purpose) pairs with a cached
// sealing key. Beyond it, expired and then least recently created keys are
// dropped; dropping one only costs a provider call later.
const maxSealSlots = 10_000

// sealKey is a data key in use for sealing. The plaintext key bytes are
// zeroed as soon as the AEAD is built; only the AES key schedule inside the
// AEAD remains, which Go gives no way to clear and the garbage collector
// releases once the key leaves the cache.
type sealKey struct {
	aead    cipher.AEAD
	header  []byte // sealed header with the wrapped key, shared by all objects
	created time.Time
	uses    int // objects sealed; guarded by the slot's mu
}

// sealSlot holds the current sealing key of one (tenant, purpose).
type sealSlot struct {
	mu  sync.Mutex
	key *sealKey
	// refresh is a one-token semaphore held by the caller that generates
	// the next key, so that an expired key costs one provider call, not
	// one per waiting caller.
	refresh chan struct{}
	// failed and failErr remember the last failed generation, so that
	// while a provider is down each slot calls it at most once per
	// retryAfterFailure instead of once per queued caller.
	failed  time.Time
	failErr error
}

// retryAfterFailure is how long a failed data-key generation is reported to
// further callers without calling the provider again.
const retryAfterFailure = time.Second

type slotKey struct{ tenant, purpose string }

// sealCache maps (tenant, purpose) to the data key that seals its objects.
type sealCache struct {
	maxAge  time.Duration
	maxUses int

	mu    sync.Mutex
	slots map[slotKey]*sealSlot
}

func newSealCache(maxAge time.Duration, maxUses int) *sealCache {
	return &sealCache{maxAge: maxAge, maxUses: maxUses, slots: make(map[slotKey]*sealSlot)}
}

// usable reports whether k may seal one more object at now.
func (c *sealCache) usable(k *sealKey, now time.Time) bool {
	if k == nil || k.uses >= c.maxUses {
		return false
	}
	age := now.Sub(k.created)
	return age >= 0 && age < c.maxAge
}

// take reserves one use of the slot's key if it is still usable.
func (c *sealCache) take(s *sealSlot, now time.Time) *sealKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.usable(s.key, now) {
		return nil
	}
	s.key.uses++
	return s.key
}

func (c *sealCache) slot(tenant, purpose string, now time.Time) *sealSlot {
	k := slotKey{tenant, purpose}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.slots[k]; ok {
		return s
	}
	if len(c.slots) >= maxSealSlots {
		c.evictLocked(now)
	}
	s := &sealSlot{refresh: make(chan struct{}, 1)}
	c.slots[k] = s
	return s
}

// evictLocked drops slots without a usable key, and if none was dropped, the
// slot with the oldest key. A caller still holding a dropped slot finishes
// its seal normally.
func (c *sealCache) evictLocked(now time.Time) {
	var oldest slotKey
	var oldestAt time.Time
	dropped := false
	for k, s := range c.slots {
		s.mu.Lock()
		usable := c.usable(s.key, now)
		var created time.Time
		if s.key != nil {
			created = s.key.created
		}
		s.mu.Unlock()
		if !usable {
			delete(c.slots, k)
			dropped = true
			continue
		}
		if oldestAt.IsZero() || created.Before(oldestAt) {
			oldest, oldestAt = k, created
		}
	}
	if !dropped && !oldestAt.IsZero() {
		delete(c.slots, oldest)
	}
}

// get returns a key with one use reserved for tenant and purpose, calling
// generate when there is no usable key. hit reports whether the key came
// from the cache.
func (c *sealCache) get(ctx context.Context, tenant, purpose string, now func() time.Time,
	generate func(context.Context) (*sealKey, error)) (k *sealKey, hit bool, err error) {
	s := c.slot(tenant, purpose, now())
	if k := c.take(s, now()); k != nil {
		return k, true, nil
	}
	select {
	case s.refresh <- struct{}{}:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	defer func() { <-s.refresh }()
	// Another caller may have installed a fresh key while we waited.
	if k := c.take(s, now()); k != nil {
		return k, true, nil
	}
	s.mu.Lock()
	failErr := s.failErr
	if t := now(); failErr != nil && !t.Before(s.failed) && t.Sub(s.failed) < retryAfterFailure {
		s.mu.Unlock()
		return nil, false, failErr
	}
	s.mu.Unlock()
	k, err = generate(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil { // not this caller giving up
			s.failed, s.failErr = now(), err
		}
		return nil, false, err
	}
	s.failErr = nil
	k.uses = 1
	s.key = k
	return k, false, nil
}

// openID identifies an unwrapped data key in the open cache: the provider,
// the wrapped key and the KMS context it was unwrapped under. Including the
// context means a cache hit never skips the provider's context check.
type openID [sha256.Size]byte

func newOpenID(provider string, wrapped []byte, ec map[string]string) openID {
	h := sha256.New()
	b := make([]byte, 0, 8+len(provider)+len(wrapped)+128)
	b = appendCanonicalEC(b, map[string]string{"provider": provider})
	b = appendCanonicalEC(b, ec)
	h.Write(b)
	h.Write(wrapped)
	var id openID
	h.Sum(id[:0])
	return id
}

type openEntry struct {
	id      openID
	aead    cipher.AEAD
	created time.Time
}

// openCall is an unwrap in flight; callers for the same key wait for it.
type openCall struct {
	done chan struct{}
	aead cipher.AEAD
	err  error
}

// openCache is a bounded LRU of unwrapped data keys, each valid for maxAge
// after it was unwrapped.
type openCache struct {
	max    int
	maxAge time.Duration

	mu       sync.Mutex
	ll       *list.List // front is most recently used
	entries  map[openID]*list.Element
	inflight map[openID]*openCall
}

func newOpenCache(max int, maxAge time.Duration) *openCache {
	return &openCache{
		max: max, maxAge: maxAge,
		ll:       list.New(),
		entries:  make(map[openID]*list.Element),
		inflight: make(map[openID]*openCall),
	}
}

// lookupLocked returns the cached AEAD for id, dropping it when expired.
func (c *openCache) lookupLocked(id openID, now time.Time) cipher.AEAD {
	el, ok := c.entries[id]
	if !ok {
		return nil
	}
	e := el.Value.(*openEntry)
	if age := now.Sub(e.created); age < 0 || age >= c.maxAge {
		c.ll.Remove(el)
		delete(c.entries, id)
		return nil
	}
	c.ll.MoveToFront(el)
	return e.aead
}

func (c *openCache) put(id openID, aead cipher.AEAD, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(id, aead, now)
}

func (c *openCache) putLocked(id openID, aead cipher.AEAD, now time.Time) {
	if el, ok := c.entries[id]; ok {
		el.Value = &openEntry{id: id, aead: aead, created: now}
		c.ll.MoveToFront(el)
		return
	}
	c.entries[id] = c.ll.PushFront(&openEntry{id: id, aead: aead, created: now})
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.entries, last.Value.(*openEntry).id)
	}
}

// len returns the number of cached keys, expired ones included.
func (c *openCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// get returns the AEAD for id from the cache or from unwrap, making at most
// one unwrap call per id at a time. hit reports whether no call was made for
// this caller.
func (c *openCache) get(ctx context.Context, id openID, now func() time.Time,
	unwrap func(context.Context) (cipher.AEAD, error)) (aead cipher.AEAD, hit bool, err error) {
	c.mu.Lock()
	if a := c.lookupLocked(id, now()); a != nil {
		c.mu.Unlock()
		return a, true, nil
	}
	if call, ok := c.inflight[id]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.aead, call.err == nil, call.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	call := &openCall{done: make(chan struct{})}
	c.inflight[id] = call
	c.mu.Unlock()

	call.aead, call.err = unwrap(ctx)

	c.mu.Lock()
	delete(c.inflight, id)
	if call.err == nil {
		c.putLocked(id, call.aead, now())
	}
	c.mu.Unlock()
	close(call.done)
	return call.aead, false, call.err
}

// forgetTenant drops the sealing keys of tenant.
func (c *sealCache) forgetTenant(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.slots {
		if k.tenant == tenant {
			delete(c.slots, k)
		}
	}
}

// clear drops every cached key. Entries do not record their tenant, so
// forgetting one tenant's keys forgets all; later opens unwrap again.
func (c *openCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.entries)
}
