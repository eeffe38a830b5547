package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/forwarder"
)

// maxRequestBody bounds the JSON bodies of the API.
const maxRequestBody = 64 << 10

func writeJSON(w http.ResponseWriter, status int, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
	return nil
}

// readJSON decodes a request body of at most 64 KiB into v; unknown
// members are errors. An empty body leaves v as it is when optional.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			return invalidf("the body must be application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{errTooLarge, fmt.Sprintf("the body exceeds %d bytes", maxRequestBody)}
		}
		return invalidf("the body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return invalidf("a JSON body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("invalid JSON body: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return invalidf("invalid JSON body: more than one value")
	}
	return nil
}

// queryTime reads an RFC 3339 time parameter; empty is zero.
func queryTime(r *http.Request, name string) (time.Time, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalidf(name + ": not an RFC 3339 time")
	}
	return t, nil
}

// queryLimit reads ?limit=, 1 to max, default def.
func queryLimit(r *http.Request, def, maxN int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxN {
		return 0, invalidf(fmt.Sprintf("limit: 1 to %d", maxN))
	}
	return n, nil
}

// Cursors are opaque to clients: base64url of "<seq>.<skip>".
func encodeCursor(c forwarder.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatUint(c.Seq, 10) + "." + strconv.Itoa(c.Skip)))
}

func decodeCursor(s string) (forwarder.Cursor, error) {
	if s == "" {
		return forwarder.Cursor{}, nil
	}
	bad := invalidf("cursor: not a cursor of this listing")
	if len(s) > 64 {
		return forwarder.Cursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return forwarder.Cursor{}, bad
	}
	seqS, skipS, ok := strings.Cut(string(raw), ".")
	seq, err1 := strconv.ParseUint(seqS, 10, 64)
	skip, err2 := strconv.Atoi(skipS)
	if !ok || err1 != nil || err2 != nil || skip < 0 || skip > 1<<20 {
		return forwarder.Cursor{}, bad
	}
	return forwarder.Cursor{Seq: seq, Skip: skip}, nil
}
