package signer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gowebpki/jcs"
)

// ErrLossyNumber reports a JSON number whose value JCS would change. RFC 8785
// writes every number as the IEEE-754 double nearest to it, in its shortest
// form, so 12345678901234567890 would be signed as 12345678901234567000 and
// 0.10000000000000000001 as 0.1. Canonicalize refuses such numbers rather
// than sign a value nobody sent. Numbers that only change their spelling
// (1.0 to 1, 1e3 to 1000, -0 to 0) keep their value and are accepted.
var ErrLossyNumber = errors.New("number does not survive the round trip through an IEEE-754 double")

// checkNumbers returns an ErrLossyNumber error naming the first number in
// doc whose value differs from that of its JCS form, or that lies outside a
// double's range. It reads doc as JSON text without building anything: it
// skips strings and checks every token that starts with '-' or a digit
// outside them. Tokens that are not JSON numbers are left to the parser.
func checkNumbers(doc []byte) error {
	inString := false
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString = true
		case c == '-' || (c >= '0' && c <= '9'):
			j := i + 1
			for j < len(doc) && isNumberByte(doc[j]) {
				j++
			}
			if err := checkNumber(doc[i:j]); err != nil {
				return err
			}
			i = j - 1
		}
	}
	return nil
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// exactDigits is the number of decimal digits that every integer below
// 10^exactDigits has exactly as a double (2^53 > 10^15).
const exactDigits = 15

// checkNumber checks one token. Plain integers of up to 15 digits, the
// common case, are exact doubles and need no parsing.
func checkNumber(tok []byte) error {
	digits := len(tok)
	if tok[0] == '-' {
		digits--
	}
	plain := digits <= exactDigits
	for _, c := range tok {
		if c == '.' || c == 'e' || c == 'E' {
			plain = false
			break
		}
	}
	if plain {
		return nil
	}
	s := string(tok)
	in, ok := parseDecimal(s)
	if !ok {
		return nil // not a JSON number: the parser reports it
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return nil
	}
	canon, err := jcs.NumberToJSON(f) // fails for ±Inf: out of range
	if err != nil {
		return fmt.Errorf("%w: %s is outside the range of a double", ErrLossyNumber, Truncate(s, maxErrText))
	}
	out, _ := parseDecimal(canon)
	if in != out {
		return fmt.Errorf("%w: %s would be signed as %s", ErrLossyNumber, Truncate(s, maxErrText), canon)
	}
	return nil
}

// decimal is the exact value of a JSON number: (-1)^neg × digits × 10^exp,
// with digits free of leading and trailing zeros. Zero has empty digits and
// no sign. huge marks an exponent too large to hold, which no double reaches
// unless the number is zero.
type decimal struct {
	neg    bool
	digits string
	exp    int64
	huge   bool
}

// parseDecimal reads s by the RFC 8259 number grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and returns its value.
func parseDecimal(s string) (decimal, bool) {
	var d decimal
	i, n := 0, len(s)
	if i < n && s[i] == '-' {
		d.neg = true
		i++
	}
	start := i
	for i < n && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[start:i]
	if intPart == "" || (len(intPart) > 1 && intPart[0] == '0') {
		return d, false
	}
	var frac string
	if i < n && s[i] == '.' {
		i++
		start = i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if frac = s[start:i]; frac == "" {
			return d, false
		}
	}
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		i++
		negExp := false
		if i < n && (s[i] == '+' || s[i] == '-') {
			negExp = s[i] == '-'
			i++
		}
		start = i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		e := s[start:i]
		if e == "" {
			return d, false
		}
		if e = strings.TrimLeft(e, "0"); len(e) > 9 {
			d.huge = true
		} else if e != "" {
			d.exp, _ = strconv.ParseInt(e, 10, 64)
			if negExp {
				d.exp = -d.exp
			}
		}
	}
	if i != n {
		return d, false
	}
	mant := strings.TrimLeft(intPart+frac, "0")
	trimmed := strings.TrimRight(mant, "0")
	if trimmed == "" {
		return decimal{}, true // zero, whatever its sign and exponent
	}
	d.digits = trimmed
	d.exp += int64(len(mant)-len(trimmed)) - int64(len(frac))
	return d, true
}
