package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Receipts and attempt records are stored many to a message: the records
// of one tenant's receipt ids of one id group (see ingress.IDs) that were
// handled together share a message on "receipt.<tenant>.<group>" and
// "attempts.<tenant>.<group>". With every write flushed to disk, a message
// of N records costs one flush instead of N, and the id alone still finds
// its records: the group's subject holds a handful of messages, read
// through the stream's subject index.
//
// A receipt id may get more than one signed receipt when two instances
// handle the same submission at once (a redelivery while the first is
// still busy, or a sender's retry of a submission whose first copy was
// queued after all). The first one stored wins everywhere: a worker
// stores with a compare-and-set on the newest sequence it knows of the
// group's subject, so what it stores unopposed is first; when another
// writer came between, it reads what was stored since and sends the
// receipt stored first (groups.go).

// Storage declarations. cmd/sealpost declares these on its queue.Conn and
// passes them in Config.
var (
	// ReceiptsStream holds sealed receipt envelopes on
	// "receipt.<tenant>.<group>".
	//
	// Receipts, attempt records and dead letters expire by their tenant's
	// and route's retention (Config.Retention): each message carries its
	// own time to live (queue.HeaderTTL), so the store removes it without
	// a sweeper and without another write.
	ReceiptsStream = queue.StreamConfig{Name: "RECEIPTS", Subjects: []string{"receipt.>"}, AllowMsgTTL: true}
	// AttemptsStream records every attempt, sealed, on
	// "attempts.<tenant>.<group>". Records older than 90 days are dropped.
	AttemptsStream = queue.StreamConfig{Name: "ATTEMPTS", Subjects: []string{"attempts.>"}, MaxAge: 90 * 24 * time.Hour, AllowMsgTTL: true}
	// OpEventsQueue holds sealed operational events until their webhook
	// took them or every try failed, on "opevents.<tenant>.<event id>", for
	// at most a day.
	OpEventsQueue = queue.WorkQueueConfig{Name: "OPEVENTS", Subjects: []string{"opevents.>"}, MaxAge: 24 * time.Hour,
		MaxBytes: 256 << 20, Workers: 8}
	// EndpointStateBucket holds disabled-endpoint markers and sealed
	// endpoint secrets.
	EndpointStateBucket = queue.KVConfig{Bucket: "ENDPOINTS", History: 5}
	// DeadLetterStream holds sealed dead letters and the markers of their
	// redelivery, on "dlq.<tenant>.<route>.<id>", for 90 days.
	DeadLetterStream = queue.StreamConfig{Name: "DLQ", Subjects: []string{"dlq.>"}, DenyDelete: true, MaxAge: 90 * 24 * time.Hour, AllowMsgTTL: true}
)

// Body formats, in the Sealpost-Format header.
const (
	hdrFormat      = "Sealpost-Format"
	receiptsFormat = "receipts/1"
	attemptsFormat = "attempts/1"
	// hdrRecords is the number of records in a message, so that expiry
	// can be counted from headers alone.
	hdrRecords = "Sealpost-Records"
	// hdrIndex lists a receipts message's records, so that receipts can be
	// listed from headers alone: "<last two characters of the id>=<route>"
	// per record, space-separated, in order (the group is the subject's).
	hdrIndex = "Sealpost-Index"
)

// recordHeadroom is what a message leaves of the server's limit for
// headers and framing.
const recordHeadroom = 4 << 10

func receiptSubject(tenant, group string) string { return "receipt." + tenant + "." + group }
func attemptSubject(tenant, group string) string { return "attempts." + tenant + "." + group }

// groupKey names the records of one tenant's id group.
type groupKey struct{ tenant, group string }

func groupOf(tenant, id string) (groupKey, error) {
	g := ingress.IDGroup(id)
	if g == "" {
		return groupKey{}, fmt.Errorf("%w: %q is not a receipt id", ErrInvalidInput, signer.Truncate(id, 64))
	}
	return groupKey{tenant: tenant, group: g}, nil
}

// record is one record to store: its fields and sealed blob, and how long
// it is kept (0: no time to live of its own).
type record struct {
	fields []string
	blob   []byte
	ttl    time.Duration
	// index is the record's entry in the message's index header; empty
	// for records of unindexed formats.
	index string
}

// receiptIndex is a receipt record's index entry.
func receiptIndex(id, route string) string {
	if len(id) < 2 {
		return ""
	}
	return id[len(id)-2:] + "=" + route
}

// storeRecords writes recs on subject, as few messages as the message
// limit allows, and returns the sequence of the message holding each record
// stored. Records of different retention go to different messages, each
// with its time to live (records of one route share one). With expect set,
// each message is stored only if the newest message on the subject is
// *expect (0: the subject is empty), and then *expect moves to it: the
// records are stored while nobody else writes on the subject. When somebody
// did, storeRecords stops with queue.ErrConflict, having stored the records
// it returned sequences for.
func (w *Worker) storeRecords(ctx context.Context, s *queue.Stream, subject, format string, recs []record, expect *uint64) ([]uint64, error) {
	limit := w.cfg.MaxMessageBytes - recordHeadroom
	seqs := make([]uint64, 0, len(recs))
	var data []byte
	var ttl time.Duration
	var index []string
	count := 0
	flush := func() error {
		if len(data) == 0 {
			return nil
		}
		hdr := map[string]string{hdrFormat: format, hdrRecords: strconv.Itoa(count)}
		if len(index) > 0 {
			hdr[hdrIndex] = strings.Join(index, " ")
		}
		if ttl > 0 {
			hdr[queue.HeaderTTL] = queue.TTLValue(ttl)
		}
		if expect != nil {
			hdr[queue.HdrExpectLastSubjectSeq] = strconv.FormatUint(*expect, 10)
		}
		seq, err := s.Append(ctx, subject, "", hdr, data)
		if err != nil {
			return err
		}
		if expect != nil {
			*expect = seq
		}
		for range count {
			seqs = append(seqs, seq)
		}
		data, count, index = nil, 0, nil
		return nil
	}
	for _, r := range recs {
		size := queue.RecordSize(r.fields, len(r.blob))
		if size > limit {
			return seqs, fmt.Errorf("forwarder: a record of %d bytes over the %d-byte message limit", size, limit)
		}
		if len(data)+size > limit || (len(data) > 0 && r.ttl != ttl) {
			if err := flush(); err != nil {
				return seqs, err
			}
		}
		ttl = r.ttl
		data = queue.AppendRecord(data, r.fields, r.blob)
		if r.index != "" {
			index = append(index, r.index)
		}
		count++
	}
	return seqs, flush()
}

// errStop ends a read early.
var errStop = errors.New("stop")

// eachRecord calls fn for every record stored on subject, in stream order,
// with the sequence of the message holding it.
func eachRecord(ctx context.Context, s *queue.Stream, subject, format string, fn func(seq uint64, fields []string, blob []byte) error) error {
	return eachRecordFrom(ctx, s, subject, format, 1, fn)
}

// eachRecordFrom is eachRecord from the message at sequence from on.
func eachRecordFrom(ctx context.Context, s *queue.Stream, subject, format string, from uint64, fn func(seq uint64, fields []string, blob []byte) error) error {
	err := s.EachFrom(ctx, subject, from, func(m *queue.Msg) error {
		if m.Header[hdrFormat] != format {
			return fmt.Errorf("forwarder: %s seq %d: format %q, want %q", s.Name(), m.Seq, signer.Truncate(m.Header[hdrFormat], 40), format)
		}
		return queue.EachRecord(m.Data, func(fields []string, blob []byte) error {
			return fn(m.Seq, fields, blob)
		})
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}
