package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sealpost/sealpost/keyring/kms"
)

// IngestStream is the work-queue stream every accepted submission goes to.
const IngestStream = "INGEST"

// QuarantineStream keeps INGEST messages that cannot be opened or parsed
// (sealed under another key, altered in the store, missing headers), still
// sealed, instead of deleting them: an operator can fix the key
// configuration and move them back.
const QuarantineStream = "QUARANTINE"

// An INGEST message is a bundle: one or more sealed submissions that were
// accepted at the same moment, as records (see AppendRecord) with the
// fields tenant, id, attempts made and due time (unix milliseconds, 0 for
// now). Headers carry no payload content.
const (
	// hdrFormat names the body format; bundleFormat is the only one.
	hdrFormat    = "Sealpost-Format"
	bundleFormat = "bundle/1"
	// hdrCount is the number of submissions in the bundle.
	hdrCount = "Sealpost-Count"
	// Headers of the single-submission messages of earlier versions, still
	// read so that an upgrade keeps what was queued.
	hdrTenant = "Sealpost-Tenant"
	hdrID     = "Sealpost-Id"
)

// ingestSubject is the subject of bundles.
const ingestSubject = "ingest.bundle"

// maxBundleMembers bounds the submissions one INGEST message holds.
const maxBundleMembers = 1024

// Sealer seals and opens bytes under a tenant-scoped encryption context.
// *kms.Envelope implements it.
type Sealer interface {
	Seal(ctx context.Context, c kms.Context, plaintext []byte) ([]byte, error)
	Open(ctx context.Context, c kms.Context, sealed []byte) ([]byte, error)
}

func (c *Conn) ensureIngest(ctx context.Context) error {
	_, err := c.ensureStream(ctx, jetstream.StreamConfig{
		Name:       IngestStream,
		Subjects:   []string{"ingest.>"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   c.replicas(),
		Duplicates: 2 * time.Minute,
		MaxBytes:   -1,
		Discard:    jetstream.DiscardNew,
	})
	if err != nil {
		return err
	}
	_, err = c.ensureStream(ctx, jetstream.StreamConfig{
		Name:       QuarantineStream,
		Subjects:   []string{"quarantine.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   c.replicas(),
		Duplicates: 2 * time.Minute,
		MaxBytes:   -1,
		DenyDelete: true,
	})
	return err
}

// member is one sealed submission of a bundle with its schedule.
type member struct {
	tenant, id string
	// attempt is the number of delivery attempts made before this message
	// was queued; due is when the next one may be made (zero: at once).
	attempt int
	due     time.Time
	sealed  []byte
}

func (m *member) fields() []string {
	due := "0"
	if !m.due.IsZero() {
		due = strconv.FormatInt(m.due.UnixMilli(), 10)
	}
	return []string{m.tenant, m.id, strconv.Itoa(m.attempt), due}
}

func (m *member) size() int { return RecordSize(m.fields(), len(m.sealed)) }

// bundleMsg builds the INGEST message holding ms.
func bundleMsg(ms []*member) *nats.Msg {
	n := 0
	for _, m := range ms {
		n += m.size()
	}
	data := make([]byte, 0, n)
	for _, m := range ms {
		data = AppendRecord(data, m.fields(), m.sealed)
	}
	msg := nats.NewMsg(ingestSubject)
	msg.Data = data
	msg.Header.Set(hdrFormat, bundleFormat)
	msg.Header.Set(hdrCount, strconv.Itoa(len(ms)))
	return msg
}

// decodeBundle returns the members of an INGEST message.
func decodeBundle(h nats.Header, data []byte) ([]*member, error) {
	if h.Get(hdrFormat) == "" {
		// A single submission of an earlier version.
		tenant, id := h.Get(hdrTenant), h.Get(hdrID)
		if tenant == "" || id == "" {
			return nil, fmt.Errorf("missing headers")
		}
		return []*member{{tenant: tenant, id: id, sealed: data}}, nil
	}
	if f := h.Get(hdrFormat); f != bundleFormat {
		return nil, fmt.Errorf("unknown format %.40q", f)
	}
	var ms []*member
	err := EachRecord(data, func(f []string, blob []byte) error {
		if len(f) != 4 || f[0] == "" || f[1] == "" {
			return fmt.Errorf("%w: member fields", ErrBadRecords)
		}
		if len(ms) >= maxBundleMembers {
			return fmt.Errorf("%w: more than %d members", ErrBadRecords, maxBundleMembers)
		}
		attempt, err1 := strconv.Atoi(f[2])
		due, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || attempt < 0 || due < 0 {
			return fmt.Errorf("%w: member schedule", ErrBadRecords)
		}
		m := &member{tenant: f[0], id: f[1], attempt: attempt, sealed: blob}
		if due > 0 {
			m.due = time.UnixMilli(due)
		}
		ms = append(ms, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if want := h.Get(hdrCount); want != strconv.Itoa(len(ms)) {
		return nil, fmt.Errorf("%d members, header says %.20q", len(ms), want)
	}
	return ms, nil
}
