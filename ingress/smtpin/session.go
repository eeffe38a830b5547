package smtpin

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealpost/sealpost/ingress"
)

// backend is the go-smtp backend of one connection.
type backend struct {
	s  *Server
	tc *trackedConn
}

// NewSession starts a session at HELO/EHLO (again after STARTTLS).
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	if b.tc.smtpConn == nil {
		b.tc.smtpConn = c
	}
	b.tc.progress()
	return &session{s: b.s, conn: c, tc: b.tc}, nil
}

// session is one SMTP transaction state on one connection. go-smtp calls
// its methods from the connection's goroutine only.
type session struct {
	s    *Server
	conn *smtp.Conn
	tc   *trackedConn

	from    string
	hasFrom bool
	size    int64
	rcpts   []recipient
}

type recipient struct {
	addr  string
	route *Route
}

// Mail refuses a sender before STARTTLS, and a declared size over the limit.
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.tc.finishing.Load() {
		return ss.reply(errClosing)
	}
	if _, ok := ss.conn.TLSConnectionState(); !ok {
		return ss.reply(errTLSRequired)
	}
	if ss.s.isClosing() {
		return ss.reply(errShuttingDown)
	}
	if opts != nil && opts.Size > ss.s.cfg.MaxMessageBytes {
		return ss.reply(ErrMessageTooLarge)
	}
	ss.from, ss.hasFrom = from, true
	if opts != nil {
		ss.size = opts.Size
	}
	ss.tc.progress()
	return nil
}

// Rcpt accepts a recipient served by a route whose sender restrictions the
// client meets.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.tc.finishing.Load() {
		return ss.reply(errClosing)
	}
	if _, ok := ss.conn.TLSConnectionState(); !ok {
		return ss.reply(errTLSRequired)
	}
	if ss.s.cfg.ReportAddress != "" && normalizeAddr(to) == normalizeAddr(ss.s.cfg.ReportAddress) {
		ss.rcpts = append(ss.rcpts, recipient{addr: to}) // no route: see receiveReport
		ss.tc.progress()
		ss.s.setDataLimit(ss.tc, true)
		return nil
	}
	r, ok := ss.s.route(to)
	if !ok {
		ss.s.log.Info("recipient refused: unknown", "rcpt_domain", addrDomain(to), "remote_ip", ss.remoteIP().String())
		return ss.reply(errUnknownRecipient)
	}
	if !ss.senderAllowed(r) {
		ss.s.log.Info("recipient refused: sender not allowed", "tenant", r.Tenant, "route", r.Name,
			"sender_domain", addrDomain(ss.from), "remote_ip", ss.remoteIP().String())
		return ss.reply(errSenderNotAllowed)
	}
	for _, prev := range ss.rcpts { // one submission per route: the same *Route
		if prev.route != nil && prev.route.Tenant == r.Tenant && prev.route.Name == r.Name {
			r = prev.route
			break
		}
	}
	ss.rcpts = append(ss.rcpts, recipient{addr: to, route: r})
	ss.tc.progress()
	ss.s.setDataLimit(ss.tc, true)
	return nil
}

func (ss *session) senderAllowed(r *Route) bool {
	if len(r.AllowedSenderDomains) > 0 {
		d := addrDomain(ss.from)
		ok := false
		for _, a := range r.AllowedSenderDomains {
			if d != "" && strings.EqualFold(strings.TrimSuffix(a, "."), d) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.AllowedNetworks) > 0 {
		ip := ss.remoteIP()
		for _, p := range r.AllowedNetworks {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
	return true
}

func (ss *session) Reset() {
	ss.from, ss.hasFrom, ss.size, ss.rcpts = "", false, 0, nil
	ss.s.setDataLimit(ss.tc, false)
	// Reset follows the answer to DATA; on a closing server this closes the
	// connection (see Shutdown).
	ss.s.setBusy(ss.tc, false)
}

func (ss *session) Logout() error { return nil }

// Data reads the message, checks authentication, parses it and queues one
// submission per route. It answers "250 2.0.0 <receipt ids>" only once every
// submission is durably queued.
func (ss *session) Data(r io.Reader) error {
	s := ss.s
	tc := ss.tc
	if tc.finishing.Load() {
		return ss.reply(errClosing)
	}
	tc.progress()
	s.setBusy(tc, true)
	start := time.Now()
	tc.setDataDeadline(start.Add(s.cfg.DataTimeout))

	// The read deadline covers DATA. With BDAT go-smtp sets a command
	// deadline before every chunk, so the whole transfer is bounded here.
	ids, size, err := ss.receive(&deadlineReader{r: r, deadline: start.Add(s.cfg.DataTimeout)})
	reply := smtpReply(err)
	result := "accepted"
	switch {
	case err == nil:
		s.m.bytes.Observe(float64(size))
	case reply.Code/100 == 4:
		result = "temporary"
	default:
		result = "rejected"
	}
	s.m.messages.WithLabelValues(result).Inc()
	s.m.seconds.WithLabelValues(result).Observe(time.Since(start).Seconds())
	attrs := []any{
		"remote_ip", ss.remoteIP().String(), "sender_domain", addrDomain(ss.from),
		"size", size, "duration", time.Since(start).Round(time.Millisecond),
	}
	if err != nil {
		s.log.Warn("message refused", append(attrs, "code", reply.Code, "error", err.Error())...)
		return reply
	}
	tc.delivered()
	s.log.Info("message accepted", append(attrs, "receipts", strings.Join(ids, " "))...)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: strings.Join(ids, " ")}
}

// receive does the work of Data and returns the receipt ids.
func (ss *session) receive(r io.Reader) (ids []string, size int64, err error) {
	s := ss.s
	if len(ss.rcpts) == 0 {
		return nil, 0, errUnknownRecipient
	}
	h := sha256.New()
	raw, err := readChunks(r, s.cfg.MaxMessageBytes, h)
	size = raw.size
	if err != nil {
		return nil, size, err
	}
	receivedAt := s.cfg.Now().UTC()
	rawSHA := digest(h)

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DataTimeout)
	defer cancel()

	// One submission per route, in the order routes first appear in RCPT TO.
	var order []*Route
	byRoute := make(map[*Route][]string)
	for _, rc := range ss.rcpts {
		if rc.route == nil {
			continue
		}
		if _, ok := byRoute[rc.route]; !ok {
			order = append(order, rc.route)
		}
		byRoute[rc.route] = append(byRoute[rc.route], rc.addr)
	}
	// The receipt ids are claimed while the message is parsed and
	// authenticated: each claim is a durable write, whose wait would
	// otherwise add to every answer. (A message refused below keeps its
	// claim; its sender's retry gets the same ids, as intended.)
	type claims struct {
		ids []string
		err error
	}
	claimed, done := make(chan claims, 1), make(chan struct{})
	from := ss.from
	go func() {
		defer close(done)
		var c claims
		for _, route := range order {
			id, err := s.receiptID(ctx, receivedAt, rawSHA, from, byRoute[route], route)
			if err != nil {
				c.err = err
				break
			}
			c.ids = append(c.ids, id)
		}
		claimed <- c
	}()
	// A refusal below returns before the claims end: they are cancelled and
	// waited for, so nothing of this message runs after its answer.
	defer func() {
		cancel()
		<-done
	}()

	lim := Limits{MaxHeaderBytes: s.cfg.MaxHeaderBytes, MaxMIMEDepth: s.cfg.MaxMIMEDepth, MaxMIMEParts: s.cfg.MaxMIMEParts}
	m, err := parseMail(raw.reader, raw.size, lim)
	if err != nil {
		return nil, size, err
	}

	// Authentication runs on messages that parsed: no DNS work for mail that
	// is refused anyway.
	auth := s.authenticate(ctx, raw, ss.remoteIP(), ss.from, ss.conn.Hostname())
	for _, rc := range ss.rcpts {
		if rc.route != nil && rc.route.RequireDKIM && !auth.dkimAligned {
			return nil, size, errDKIMRequired
		}
	}
	for _, rc := range ss.rcpts {
		if rc.route == nil {
			id, err := ss.receiveReport(ctx, m, auth.results)
			if err != nil {
				return nil, size, err
			}
			ids = append(ids, id)
			break
		}
	}

	tlsInfo := tlsSource{}
	if st, ok := ss.conn.TLSConnectionState(); ok {
		tlsInfo.Version = strings.ReplaceAll(tls.VersionName(st.Version), " ", "")
		tlsInfo.Cipher = tls.CipherSuiteName(st.CipherSuite)
	}

	c := <-claimed
	if c.err != nil {
		return ids, size, c.err
	}
	payloads := make(map[string]json.RawMessage) // by tenant: blob refs are tenant-scoped
	for i, route := range order {
		payload, ok := payloads[route.Tenant]
		if !ok {
			payload, err = s.buildPayload(ctx, m, route.Tenant)
			if err != nil {
				return ids, size, err
			}
			payloads[route.Tenant] = payload
		}
		src, err := marshalJSON(smtpSource{
			MailFrom:   ss.from,
			RcptTo:     byRoute[route],
			Helo:       ss.conn.Hostname(),
			RemoteAddr: ss.conn.Conn().RemoteAddr().String(),
			TLS:        tlsInfo,
			Auth:       auth.results,
		})
		if err != nil {
			return ids, size, err
		}
		sub := &ingress.Submission{
			ID:         c.ids[i],
			Tenant:     route.Tenant,
			Route:      route.Name,
			Channel:    ingress.ChannelSMTP,
			ReceivedAt: receivedAt,
			Source:     src,
			Payload:    payload,
			RawSHA256:  rawSHA,
			RawSize:    size,
		}
		if err := sub.Validate(); err != nil {
			return ids, size, err
		}
		if err := s.cfg.Enqueuer.Enqueue(ctx, sub); err != nil {
			return ids, size, err
		}
		ids = append(ids, sub.ID)
	}
	return ids, size, nil
}

// receiveReport hands the TLS-RPT report of a message to the report
// address to Config.Reports and returns the report's id. The report is the
// attachment of type application/tlsrpt+gzip or application/tlsrpt+json
// (RFC 8460 section 5.3), or else one named *.json.gz or *.json.
func (ss *session) receiveReport(ctx context.Context, m *mailPayload, auth authResults) (string, error) {
	var part *attachment
	var gzipped bool
	for _, a := range m.Attachments {
		ct, name := strings.ToLower(a.ContentType), strings.ToLower(a.Filename)
		switch {
		case ct == "application/tlsrpt+gzip":
			part, gzipped = a, true
		case ct == "application/tlsrpt+json":
			part, gzipped = a, false
		case part == nil && strings.HasSuffix(name, ".json.gz"):
			part, gzipped = a, true
		case part == nil && strings.HasSuffix(name, ".json"):
			part, gzipped = a, false
		default:
			continue
		}
		if strings.HasPrefix(ct, "application/tlsrpt+") {
			break
		}
	}
	if part == nil {
		return "", fmt.Errorf("%w: no report part", ErrReportRefused)
	}
	authJSON, err := marshalJSON(auth)
	if err != nil {
		return "", err
	}
	return ss.s.cfg.Reports.PutMailedReport(ctx, MailedReport{Body: part.data, Gzipped: gzipped,
		RemoteAddr: ss.conn.Conn().RemoteAddr().String(), MailFrom: ss.from, Auth: authJSON})
}

// receiptID returns a new receipt id for the message on route, or, with
// Dedup, the id an earlier delivery of the same bytes from the same sender
// to the same recipients of the route got.
func (s *Server) receiptID(ctx context.Context, at time.Time, rawSHA, from string, rcpts []string, route *Route) (string, error) {
	id := s.cfg.NewID(at)
	if s.cfg.Dedup == nil {
		return id, nil
	}
	h := sha256.New()
	for _, v := range append([]string{rawSHA, from, route.Tenant, route.Name}, slices.Sorted(slices.Values(rcpts))...) {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	existing, err := s.cfg.Dedup.Claim(ctx, hex.EncodeToString(h.Sum(nil)), id)
	switch {
	case err != nil:
		return "", ingress.Temporary(fmt.Errorf("dedup: %w", err))
	case existing != "":
		return existing, nil
	}
	return id, nil
}

// buildPayload moves attachments above InlineAttachmentMax to the blob
// store, then the largest remaining ones, then the text and HTML bodies,
// until the payload fits MaxPayloadBytes, and returns the payload JSON. What
// is moved is referenced with its SHA-256, never dropped. m is not modified:
// blob refs are tenant-scoped and one message may serve several tenants.
func (s *Server) buildPayload(ctx context.Context, m *mailPayload, tenant string) (json.RawMessage, error) {
	p := *m
	p.Attachments = make([]*attachment, len(m.Attachments))
	for i, a := range m.Attachments {
		c := *a
		p.Attachments[i] = &c
	}
	put := func(data []byte) (ref, sum string, err error) {
		sum = sha256Digest(data)
		ref, err = s.cfg.Blobs.PutBlob(ctx, tenant, sum, data)
		return ref, sum, err
	}
	store := func(a *attachment) error {
		ref, _, err := put(a.data)
		if err != nil {
			return err
		}
		a.Content, a.Ref = nil, ref
		return nil
	}
	for _, a := range p.Attachments {
		if a.Size <= s.cfg.InlineAttachmentMax {
			a.inline()
		} else if err := store(a); err != nil {
			return nil, err
		}
	}
	storeText := func() (err error) {
		p.TextRef, p.TextSHA256, err = put([]byte(p.Text))
		p.Text = ""
		return err
	}
	storeHTML := func() (err error) {
		p.HTMLRef, p.HTMLSHA256, err = put([]byte(p.HTML))
		p.HTML = ""
		return err
	}
	// A body that alone exceeds the payload is stored before anything is
	// encoded: encoding it first would only cost memory.
	if len(p.Text) > s.cfg.MaxPayloadBytes {
		if err := storeText(); err != nil {
			return nil, err
		}
	}
	if len(p.HTML) > s.cfg.MaxPayloadBytes {
		if err := storeHTML(); err != nil {
			return nil, err
		}
	}
	for {
		b, err := marshalJSON(&p)
		if err != nil {
			return nil, err
		}
		if len(b) <= s.cfg.MaxPayloadBytes {
			return b, nil
		}
		// Store the largest parts until what they free covers the excess,
		// then encode again: a few encodings, however many parts there are.
		for excess := len(b) - s.cfg.MaxPayloadBytes; excess > 0; {
			var largest *attachment
			for _, a := range p.Attachments {
				if a.Content != nil && (largest == nil || a.Size > largest.Size) {
					largest = a
				}
			}
			switch {
			case largest != nil:
				excess -= len(*largest.Content)
				err = store(largest)
			case p.Text != "" && len(p.Text) >= len(p.HTML):
				excess -= len(p.Text)
				err = storeText()
			case p.HTML != "":
				excess -= len(p.HTML)
				err = storeHTML()
			default:
				return nil, errPayloadTooLarge
			}
			if err != nil {
				return nil, err
			}
		}
	}
}

func (ss *session) remoteIP() netip.Addr {
	return remoteIP(ss.conn.Conn().RemoteAddr())
}

// reply classifies err through smtpReply. go-smtp needs the *smtp.SMTPError
// itself, never a wrapped one.
func (ss *session) reply(err error) error {
	return smtpReply(err)
}

// smtpSource is receipt.source for the SMTP channel.
type smtpSource struct {
	MailFrom   string      `json:"mail_from"`
	RcptTo     []string    `json:"rcpt_to"`
	Helo       string      `json:"helo"`
	RemoteAddr string      `json:"remote_addr"`
	TLS        tlsSource   `json:"tls"`
	Auth       authResults `json:"auth"`
}

type tlsSource struct {
	Version string `json:"version"`
	Cipher  string `json:"cipher"`
}

var _ net.Conn = (*trackedConn)(nil)

// deadlineReader fails reads once deadline has passed.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
}

// errDataTimeout is a message transfer that took longer than DataTimeout.
var errDataTimeout = &net.OpError{Op: "read", Net: "smtp", Err: os.ErrDeadlineExceeded}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, errDataTimeout
	}
	return d.r.Read(p)
}
