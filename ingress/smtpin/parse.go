package smtpin

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	// Registers every charset it knows (ISO-8859-*, Shift_JIS, GB18030,
	// ...) with go-message, which then decodes bodies and RFC 2047 words
	// to UTF-8.
	_ "github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/sealpost/sealpost/ingress"
)

// Limits bounds the work ParseMessage does on one message. Zero fields take
// the Config defaults.
type Limits struct {
	// MaxHeaderBytes is the largest top-level header block, in bytes.
	MaxHeaderBytes int
	// MaxMIMEDepth is the deepest nesting of multipart bodies.
	MaxMIMEDepth int
	// MaxMIMEParts is the most MIME entities (containers and leaves).
	MaxMIMEParts int
}

func (l Limits) withDefaults() Limits {
	setDefault(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&l.MaxMIMEDepth, DefaultMaxMIMEDepth)
	setDefault(&l.MaxMIMEParts, DefaultMaxMIMEParts)
	return l
}

// mailPayload is the mail payload of a receipt (DESIGN.md, "Mail payload").
// Every member is always present so that payloads of different messages have
// the same shape.
type mailPayload struct {
	MessageID string      `json:"message_id"`
	Date      string      `json:"date"`
	Subject   string      `json:"subject"`
	From      []address   `json:"from"`
	To        []address   `json:"to"`
	Cc        []address   `json:"cc"`
	ReplyTo   []address   `json:"reply_to"`
	Headers   [][2]string `json:"headers"`
	Text      string      `json:"text"`
	HTML      string      `json:"html"`
	// TextRef and HTMLRef point to a body stored apart because the payload
	// would not fit one queue message otherwise; Text or HTML is then empty.
	TextRef     string        `json:"text_ref,omitempty"`
	TextSHA256  string        `json:"text_sha256,omitempty"`
	HTMLRef     string        `json:"html_ref,omitempty"`
	HTMLSHA256  string        `json:"html_sha256,omitempty"`
	Attachments []*attachment `json:"attachments"`
	// Defects lists what could not be parsed as the standards say (a missing
	// boundary, an unknown charset, ...). The message is accepted anyway.
	Defects []string `json:"defects"`
}

type address struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	ContentID   string `json:"content_id,omitempty"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	// Content is the standard base64 of the attachment when it is inline.
	Content *string `json:"content,omitempty"`
	// Ref points to the sealed object when the attachment is stored apart.
	Ref string `json:"ref,omitempty"`

	data []byte
}

// ParseMessage turns a raw RFC 5322 message into the mail payload of a
// receipt, keeping every attachment inline. It never fails on malformed MIME
// structure (such problems are listed in the payload's "defects"); it fails
// with ErrHeaderTooLarge, ErrMIMETooDeep, ErrTooManyParts or ErrMalformed
// when a limit is exceeded or the header cannot be read at all.
func ParseMessage(raw []byte, lim Limits) (json.RawMessage, error) {
	open := func() io.Reader { return bytes.NewReader(raw) }
	m, err := parseMail(open, int64(len(raw)), lim.withDefaults())
	if err != nil {
		return nil, err
	}
	for _, a := range m.Attachments {
		a.inline()
	}
	return marshalJSON(m)
}

// marshalJSON is ingress.EncodeJSON without the final newline.
func marshalJSON(v any) (json.RawMessage, error) {
	b, err := ingress.EncodeJSON(v)
	return bytes.TrimSuffix(b, []byte("\n")), err
}

// inline moves the attachment data into Content.
func (a *attachment) inline() {
	s := base64.StdEncoding.EncodeToString(a.data)
	a.Content = &s
	a.Ref = ""
}

// parser holds the state of one parse.
type parser struct {
	lim     Limits
	maxBody int64
	parts   int
	// keepBody is set when the top-level multipart body has no parts.
	keepBody bool
	m        *mailPayload
	text     []string
	html     []string

	// open reads the message again from its first byte.
	open func() io.Reader
	// rawPart, when not zero, makes walk stop at that part and keep its
	// body as sent, transfer encoding and all, in raw (see undecoded).
	rawPart int
	raw     *chunks
}

// errFoundPart ends the walk of undecoded at the part it looks for.
var errFoundPart = errors.New("smtpin: part found")

func (p *parser) defect(format string, args ...any) {
	if len(p.m.Defects) < 50 {
		p.m.Defects = append(p.m.Defects, fmt.Sprintf(format, args...))
	}
}

// parseMail parses a message of size bytes; open returns a reader over
// the message from its first byte and may be called twice.
func parseMail(open func() io.Reader, size int64, lim Limits) (*mailPayload, error) {
	p := &parser{
		lim: lim,
		// A decoded body is never larger than its encoded form, except for
		// charset conversion to UTF-8, which at most triples it.
		maxBody: 3*size + 1024,
		m: &mailPayload{
			From: []address{}, To: []address{}, Cc: []address{}, ReplyTo: []address{},
			Headers: [][2]string{}, Attachments: []*attachment{}, Defects: []string{},
		},
	}
	p.open = open
	br, h, stray, err := p.readTop()
	if err != nil {
		return nil, err
	}
	mh := message.Header{Header: h}
	p.topHeader(attachmentHeader(mh), stray)

	if err := p.walk(mh, br, 0); err != nil {
		return nil, err
	}
	if p.keepBody {
		// The top-level multipart body had no parts: keep it as text rather
		// than lose it.
		if ent, err := message.Read(open()); ent != nil {
			_ = err // already recorded above
			if c, err := readChunks(ent.Body, p.maxBody, nil); err == nil {
				p.text = append(p.text, validUTF8(string(c.bytes())))
				p.defect("undecodable multipart body kept as text")
			}
		}
	}
	p.m.Text = strings.Join(p.text, "\n")
	p.m.HTML = strings.Join(p.html, "\n")
	return p.m, nil
}

// readTop reads the top-level header block and returns the reader
// positioned at the body.
func (p *parser) readTop() (*bufio.Reader, textproto.Header, []strayLine, error) {
	hr := &headerLimitReader{r: p.open(), limit: p.lim.MaxHeaderBytes, lineStart: true}
	br := bufio.NewReader(hr)
	h, stray, err := readHeader(br)
	if hr.exceeded {
		return nil, h, nil, ErrHeaderTooLarge
	}
	if err != nil {
		// The cause quotes message content: it stays out of the error, which
		// gets logged.
		return nil, h, nil, ErrMalformed
	}
	return br, h, stray, nil
}

// topHeader fills the header members of the payload. Stray lines of the
// header block are kept in headers, in their place, with an empty name.
func (p *parser) topHeader(h message.Header, stray []strayLine) {
	fields := h.Fields()
	for i := 0; ; i++ {
		for len(stray) > 0 && stray[0].after == i {
			p.m.Headers = append(p.m.Headers, [2]string{"", validUTF8(stray[0].line)})
			p.defect("header line %d is not a header field; kept in headers with an empty name", stray[0].n)
			stray = stray[1:]
		}
		if !fields.Next() {
			break
		}
		name := fields.Key()
		if raw, err := fields.Raw(); err == nil {
			if i := bytes.IndexByte(raw, ':'); i > 0 {
				name = string(bytes.TrimSpace(raw[:i]))
			}
		}
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		p.m.Headers = append(p.m.Headers, [2]string{validUTF8(name), validUTF8(v)})
	}

	mh := mail.Header{Header: h}
	if h.Has("Message-Id") {
		id, err := mh.MessageID()
		if err != nil || id == "" {
			p.defect("message-id: unparseable")
			id = strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
		}
		p.m.MessageID = validUTF8(id)
	}
	if h.Has("Date") {
		if t, err := mh.Date(); err == nil {
			p.m.Date = t.UTC().Format(time.RFC3339)
		} else {
			p.defect("date: unparseable")
		}
	}
	if s, err := mh.Subject(); err == nil {
		p.m.Subject = validUTF8(s)
	} else {
		p.m.Subject = validUTF8(h.Get("Subject"))
		p.defect("subject: %v", err)
	}
	if n := len(h.Values("From")); n > 1 {
		// RFC 5322 allows one From field; authentication ignores such mail
		// (RFC 7489 section 6.6.1) and the payload keeps the first.
		p.defect("from: %d header fields", n)
	}
	p.m.From = p.addresses(mh, "From")
	p.m.To = p.addresses(mh, "To")
	p.m.Cc = p.addresses(mh, "Cc")
	p.m.ReplyTo = p.addresses(mh, "Reply-To")
}

func (p *parser) addresses(mh mail.Header, key string) []address {
	out := []address{}
	if !mh.Has(key) {
		return out
	}
	list, err := mh.AddressList(key)
	if err != nil {
		p.defect("%s: unparseable address list", strings.ToLower(key))
		return out
	}
	for _, a := range list {
		out = append(out, address{Name: validUTF8(a.Name), Address: validUTF8(a.Address)})
	}
	return out
}

// walk visits an entity and its parts, depth counting multipart levels.
func (p *parser) walk(h message.Header, body io.Reader, depth int) error {
	p.parts++
	if p.parts > p.lim.MaxMIMEParts {
		return ErrTooManyParts
	}
	if p.parts == p.rawPart {
		c, err := readChunks(body, p.maxBody, nil)
		if err == nil {
			p.raw = c
		}
		return errFoundPart
	}
	ent, err := newEntity(h, body)
	if err != nil {
		if p.parts == 1 {
			p.defect("%v", err)
		} else {
			p.defect("part %d: %v", p.parts, err)
		}
	}
	mediaType, params, err := ent.Header.ContentType()
	if err != nil && ent.Header.Has("Content-Type") {
		p.defect("part %d: content-type: %v", p.parts, err)
		mediaType = strings.ToLower(strings.TrimSpace(strings.SplitN(ent.Header.Get("Content-Type"), ";", 2)[0]))
	}
	if mediaType == "" {
		mediaType = "text/plain"
	}

	if strings.HasPrefix(mediaType, "multipart/") {
		if depth+1 > p.lim.MaxMIMEDepth {
			return ErrMIMETooDeep
		}
		mr := textproto.NewMultipartReader(ent.Body, params["boundary"])
		n := 0
		for {
			raw, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				p.defect("part %d: %s: %v", p.parts, mediaType, err)
				break
			}
			n++
			if err := p.walk(message.Header{Header: raw.Header}, raw, depth+1); err != nil {
				return err
			}
		}
		if n == 0 {
			p.keepBody = depth == 0
			p.defect("part %d: %s without parts (boundary %q not found)", p.parts, mediaType, params["boundary"])
		}
		return nil
	}
	if p.rawPart != 0 {
		return nil // looking for another part: leave this body unread
	}

	filename, isBody := bodyPart(ent.Header, mediaType)
	if isBody {
		return p.readText(ent, mediaType)
	}
	return p.readAttachment(ent, mediaType, filename)
}

// undecoded returns the body of part n as sent, before its transfer
// encoding is decoded, or nil. It parses the message again up to that
// part: only mail with a broken encoding pays for it.
func (p *parser) undecoded(n int) *chunks {
	q := &parser{lim: p.lim, maxBody: p.maxBody, open: p.open, rawPart: n, m: &mailPayload{}}
	br, h, _, err := q.readTop()
	if err != nil {
		return nil
	}
	if err := q.walk(message.Header{Header: h}, br, 0); !errors.Is(err, errFoundPart) {
		return nil
	}
	return q.raw
}

// keepUndecoded handles a body whose transfer encoding (base64 or
// quoted-printable) could not be decoded: rather than keep what decoded
// before the error, or nothing, it returns the part's body as sent and
// records a defect. It returns nil for any other read error.
func (p *parser) keepUndecoded(ent *message.Entity, readErr error, what string) *chunks {
	cte := strings.ToLower(strings.TrimSpace(ent.Header.Get("Content-Transfer-Encoding")))
	if (cte != "base64" && cte != "quoted-printable") || errors.Is(readErr, ErrMessageTooLarge) {
		return nil
	}
	raw := p.undecoded(p.parts)
	if raw == nil {
		return nil
	}
	p.defect("part %d: %s: %s: %v; kept as sent, still %s-encoded", p.parts, what, cte, readErr, cte)
	return raw
}

// bodyPart tells a text or HTML body from an attachment, whose file name
// it returns.
func bodyPart(h message.Header, mediaType string) (filename string, body bool) {
	disp, _, _ := h.ContentDisposition()
	ah := mail.AttachmentHeader{Header: h}
	filename, _ = ah.Filename()
	isText := mediaType == "text/plain" || mediaType == "text/html"
	return filename, isText && filename == "" && !strings.EqualFold(disp, "attachment")
}

// newEntity is message.New, except that attachments keep their bytes:
// go-message converts every text/* entity to UTF-8, which would change an
// attachment's size and SHA-256 from what the sender attached. Only the
// transfer encoding is decoded for them.
func newEntity(h message.Header, body io.Reader) (*message.Entity, error) {
	return message.New(attachmentHeader(h), body)
}

// attachmentHeader is h without the charset parameter when h is the header
// of a text attachment (see newEntity), else h itself.
func attachmentHeader(h message.Header) message.Header {
	mediaType, params, err := h.ContentType()
	if err == nil && strings.HasPrefix(mediaType, "text/") && params["charset"] != "" {
		if _, isBody := bodyPart(h, mediaType); !isBody {
			h = h.Copy()
			delete(params, "charset")
			h.SetContentType(mediaType, params)
		}
	}
	return h
}

func (p *parser) readText(ent *message.Entity, mediaType string) error {
	c, err := readChunks(ent.Body, p.maxBody, nil)
	if err != nil {
		if raw := p.keepUndecoded(ent, err, mediaType+" body"); raw != nil {
			c = raw
		} else {
			p.defect("part %d: %s body: %v", p.parts, mediaType, err)
		}
	}
	s := c.string()
	if !utf8.ValidString(s) {
		p.defect("part %d: %s body is not valid UTF-8", p.parts, mediaType)
		s = validUTF8(s)
	}
	if mediaType == "text/html" {
		p.html = append(p.html, s)
	} else {
		p.text = append(p.text, s)
	}
	return nil
}

func (p *parser) readAttachment(ent *message.Entity, mediaType, filename string) error {
	h := sha256.New()
	c, err := readChunks(ent.Body, p.maxBody, h)
	if err != nil {
		if raw := p.keepUndecoded(ent, err, "attachment body"); raw != nil {
			c = raw
			h.Reset()
			for _, b := range raw.bufs {
				h.Write(b)
			}
		} else {
			p.defect("part %d: attachment body: %v", p.parts, err)
		}
	}
	a := &attachment{
		Filename:    validUTF8(filename),
		ContentType: validUTF8(mediaType),
		ContentID:   validUTF8(strings.Trim(strings.TrimSpace(ent.Header.Get("Content-Id")), "<>")),
		Size:        c.size,
		SHA256:      digest(h),
		data:        c.bytes(),
	}
	p.m.Attachments = append(p.m.Attachments, a)
	return nil
}

// validUTF8 replaces invalid UTF-8 sequences, so that the payload is valid
// JSON text that canonicalizes the same everywhere.
func validUTF8(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

// headerLimitReader passes bytes through and fails once more than limit
// bytes were read before the blank line that ends the header block.
type headerLimitReader struct {
	r         io.Reader
	limit     int
	n         int
	done      bool
	lineStart bool
	exceeded  bool
}

func (h *headerLimitReader) Read(b []byte) (int, error) {
	if h.exceeded {
		return 0, ErrHeaderTooLarge
	}
	n, err := h.r.Read(b)
	if h.done {
		return n, err
	}
	for i := 0; i < n; i++ {
		c := b[i]
		h.n++
		switch {
		case c == '\n' && h.lineStart:
			h.done = true
			return n, err
		case c == '\n':
			h.lineStart = true
		case c == '\r':
		default:
			h.lineStart = false
		}
		if h.n > h.limit {
			h.exceeded = true
			return 0, ErrHeaderTooLarge
		}
	}
	return n, err
}
