package smtpin

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/emersion/go-message/textproto"
)

// strayLine is a line of the header block that is no header field: it has
// no colon, its name has characters RFC 5322 does not allow, or it is a
// continuation line with no field before it.
type strayLine struct {
	// after is how many fields come before the line.
	after int
	// line is its text, without the line break.
	line string
	// n is its line number in the header block, from 1.
	n int
}

// readHeader reads the header block up to and including the empty line
// that ends it (or to the end of input), like textproto.ReadHeader, except
// that a stray line is set aside and returned rather than making the whole
// header unreadable. The message bytes themselves are not changed: the
// payload records stray lines as defects and raw_sha256 still covers them.
func readHeader(br *bufio.Reader) (textproto.Header, []strayLine, error) {
	var clean bytes.Buffer
	var stray []strayLine
	fields, lineNo := 0, 0
	inStray := false // continuation lines of a stray line are stray too
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the reader's buffer: take the rest of it.
			rest, rerr := br.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), rerr
		}
		if len(line) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return textproto.Header{}, stray, err
		}
		lineNo++
		text := bytes.TrimRight(line, "\r\n")
		if len(text) == 0 {
			break // the empty line that ends the header
		}
		switch {
		case text[0] == ' ' || text[0] == '\t':
			if fields == 0 || inStray {
				stray = append(stray, strayLine{after: fields, line: string(text), n: lineNo})
				inStray = true
				continue
			}
		case !isField(text):
			stray = append(stray, strayLine{after: fields, line: string(text), n: lineNo})
			inStray = true
			continue
		default:
			fields++
			inStray = false
		}
		clean.Write(text)
		clean.WriteString("\r\n")
		if err != nil {
			break
		}
	}
	clean.WriteString("\r\n")
	h, err := textproto.ReadHeader(bufio.NewReader(&clean))
	return h, stray, err
}

// isField reports whether a line starts a header field: a name of printable
// ASCII characters other than ':' (RFC 5322 section 2.2), then a colon.
// Spaces before the colon occur in the wild and are tolerated.
func isField(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}
