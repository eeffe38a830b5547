package ingress

import (
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Receipt ids are "rcpt_" and a ULID (26 Crockford base32 characters). The
// first 24 characters of the ULID are the id's group; ids minted together
// by one IDs share it, and the last two characters number them within it.
// Receipts and attempts are stored per group, many to a message, so one
// flush to disk covers a group's messages, and an id alone locates them.

// idPrefix starts every receipt id.
const idPrefix = "rcpt_"

// Group sizes: ids share a group for at most groupMaxIDs ids or groupMaxAge.
const (
	groupMaxIDs = 64
	groupMaxAge = 20 * time.Millisecond
	// groupLen is the length of a group key (the ULID without its last two
	// characters).
	groupLen = 24
)

// crockford is the ULID alphabet.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDs mints receipt ids in groups. It is safe for concurrent use; the zero
// value is ready.
type IDs struct {
	mu     sync.Mutex
	group  string
	n      int
	opened time.Time
}

// New returns a new receipt id whose ULID time part is t (or, within a
// group, the group's opening time, at most 20 ms earlier).
func (g *IDs) New(t time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.group == "" || g.n >= groupMaxIDs || t.Sub(g.opened) >= groupMaxAge || t.Before(g.opened) {
		g.group = ulid.MustNew(ulid.Timestamp(t), rand.Reader).String()[:groupLen]
		g.n, g.opened = 0, t
	}
	n := g.n
	g.n++
	return idPrefix + g.group + string(crockford[n>>5]) + string(crockford[n&31])
}

// NewID returns a new receipt id in a group of its own: "rcpt_" and a ULID
// whose time part is t. ULIDs sort by time, which keeps ids roughly
// ordered in listings.
func NewID(t time.Time) string {
	return idPrefix + ulid.MustNew(ulid.Timestamp(t), rand.Reader).String()
}

// IDGroup returns the group key of a receipt id, or "" when id is not a
// receipt id.
func IDGroup(id string) string {
	u, ok := strings.CutPrefix(id, idPrefix)
	if !ok || len(u) != ulid.EncodedSize {
		return ""
	}
	if _, err := ulid.ParseStrict(u); err != nil {
		return ""
	}
	return u[:groupLen]
}
